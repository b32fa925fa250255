"""Causal legibility: does the answer follow what a thought says? Readable thoughts (decode_top1,
frontier) may still be bypassed; the ablations say whether thoughts matter at all. Here a thought is
*edited* to say something else, and the answer should change to the one the edited reasoning implies.

For each question and each replaced step i that has a key content, the thoughts standing for step i
(i*c .. (i+1)*c - 1) are replaced by the embedding of a different key content, the later thoughts
are computed by the model from there, and the question is answered again:

  arithmetic (`<<a*b=c>>` steps)  another result r': the same step's result in another question
                                  (a fixed shuffle), written as one token so that the edited thought
                                  names all of it. Implied answer: the reference chain recomputed
                                  with step i's result set to r' (a later step's first operand
                                  equal to an earlier result is read as that result: annotations
                                  carry no references).
  graph (data=graph, ProsQA)      the frontier at the same depth of the tree that holds the other
                                  candidate (rooted at a source node from which the other candidate
                                  is as many hops away as the answer is from the root). Implied
                                  answer: the other candidate.

A key content's embedding is its token's input embedding (one result) or the mean of its nodes'
token embeddings (a frontier: the thought that frontier.py scores 1); tokens as in
`coconut.data.step_keys`. Reported in `legibility`:

  causal            edits whose answer is the implied one ("causal legibility")
  causal_baseline   edits whose unedited answer already was the implied one: what no effect gives
  causal_changed    edits whose answer differs from the unedited answer at all
  causal_edits      edits made (None for the three above when there is none)

One generation pass per replaced step index.
"""

from __future__ import annotations

import ast
import operator
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from coconut.data.graph import Graph, parse_graph
from coconut.data.records import Record
from coconut.data.step_keys import node_tokens, normalise_number, step_key

_CALCULATION = re.compile(r"<<([^<>=]*)=\s*([^<>]+?)\s*>>")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


@dataclass(frozen=True)
class Edit:
    index: int  # the question (into the evaluated records)
    step: int  # the replaced step whose thoughts are edited
    vector: torch.Tensor  # (D,) fed in place of each of its thoughts
    implied: str  # the answer the edited reasoning implies


def _evaluate(expression: str) -> float | None:
    """The value of a calculator expression (numbers, + - * /, parentheses), None for anything else."""

    def value(node):
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        raise ValueError(node)

    try:
        return value(ast.parse(expression.replace(",", ""), mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError):
        return None


def implied_answer(steps: Sequence[str], answer: str, step: int, result: str) -> str | None:
    """The answer of the calculation chain `steps` with step `step`'s result set to `result`; None
    when a step is no calculation or the chain's last result is not `answer`."""
    calculations = [_CALCULATION.search(s) for s in steps]
    if not calculations or any(c is None for c in calculations):
        return None
    original = [normalise_number(c[2]) for c in calculations]
    if original[-1] != normalise_number(answer):
        return None
    current = list(original)
    current[step] = normalise_number(result)
    for j in range(step + 1, len(steps)):
        used: set[str] = set()

        def operand(match: re.Match, j=j, used=used) -> str:
            number = normalise_number(match[0])
            earlier = [k for k in range(j) if original[k] == number]  # the latest result it could be
            if not earlier or number in used:  # "<<2*2=4>>" after a result 2: its first 2 is the result
                return match[0]
            used.add(number)
            return current[earlier[-1]]

        value = _evaluate(_NUMBER.sub(operand, calculations[j][1]))
        if value is None:
            return None
        current[j] = normalise_number(repr(float(value)))
    return current[-1]


def _decoy_frontier(graph: Graph, answer: str, hops: int, depth: int) -> tuple[str, set[str]] | None:
    """(the other candidate, the frontier at `depth` of a source node from which it is `hops` away)."""
    others = [c for c in graph.candidates if c != answer]
    if len(others) != 1:
        return None
    other = others[0]
    children = {child for _, child in graph.edges}
    for source in graph.nodes:
        if source in children or source == graph.root:
            continue
        layers = Graph(graph.edges, source, graph.candidates).frontiers(hops)
        if other in layers[hops]:
            return other, layers[depth]
    return None


def plan_edits(
    records: Sequence[Record],
    indices: Sequence[int],
    steps_replaced: Sequence[int],
    tokenizer,
    embed: Callable[[list[int]], torch.Tensor],
    *,
    seed: int = 0,
) -> list[Edit]:
    """Every edit of the questions `indices` (into `records`), each with its `steps_replaced`.
    `embed(token ids)` -> (n, D) input embeddings."""
    edits = []
    order = list(indices)
    random.Random(seed).shuffle(order)
    for index, replaced in zip(indices, steps_replaced):
        record = records[index]
        graph = parse_graph(record.question)
        for i in range(replaced):
            edit = _graph_edit(record, graph, i, tokenizer, embed) if graph else None
            if graph is None:
                edit = _arithmetic_edit(record, index, i, [records[j] for j in order if j != index], tokenizer, embed)
            if edit is not None:
                edits.append(Edit(index, i, *edit))
    return edits


def _arithmetic_edit(record, index, step, others, tokenizer, embed) -> tuple[torch.Tensor, str] | None:
    key = step_key(record.steps[step])
    if key is None:
        return None
    for other in others:
        if step >= len(other.steps):
            continue
        new = step_key(other.steps[step])
        if new is None or new == key:
            continue
        tokens = tokenizer.encode(new, add_special_tokens=False)
        implied = implied_answer(record.steps, record.answer, step, new)
        if len(tokens) == 1 and implied is not None and implied != normalise_number(record.answer):
            return embed(tokens)[0], implied
    return None


def _graph_edit(record, graph: Graph, step, tokenizer, embed) -> tuple[torch.Tensor, str] | None:
    hops = len(record.steps)
    decoy = _decoy_frontier(graph, record.answer, hops, step + 1)
    if decoy is None:
        return None
    other, frontier = decoy
    tokens = [token for token, node in node_tokens(tokenizer, graph.nodes).items() if node in frontier]
    if not tokens or frontier == graph.frontiers(step + 1)[step + 1]:
        return None
    return embed(tokens).mean(0), other


def causal_block(
    edits: Sequence[Edit],
    answers_with: Callable[[int, dict[int, torch.Tensor]], dict[int, str]],
    unedited: dict[int, str],
    matches: Callable[[str, str], bool],
) -> dict:
    """The `causal*` metrics. `answers_with(step, {index: vector})` answers the questions with step
    `step`'s thoughts replaced (index -> prediction); `unedited`: index -> the prediction without edits."""
    if not edits:
        return {"causal": None, "causal_baseline": None, "causal_changed": None, "causal_edits": 0}
    followed = baseline = changed = 0
    for step in sorted({e.step for e in edits}):
        at_step = [e for e in edits if e.step == step]
        predicted = answers_with(step, {e.index: e.vector for e in at_step})
        for edit in at_step:
            followed += matches(predicted[edit.index], edit.implied)
            baseline += matches(unedited[edit.index], edit.implied)
            changed += predicted[edit.index] != unedited[edit.index]
    n = len(edits)
    return {"causal": followed / n, "causal_baseline": baseline / n, "causal_changed": changed / n, "causal_edits": n}
