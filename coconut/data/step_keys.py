"""The key content of a reasoning step, and the tokens that name it: what a reader must recover from
a thought (or a written step) to follow the reasoning. Training's legibility objective
(`coconut.core.legibility_objective`) and evaluation's legibility metrics (`coconut.eval.legibility`,
`coconut.eval.frontier`) both read it from here, so they agree on what "readable" means.

One rule per task family (`step_key`):

  GSM8K / GSM8K-Aug / built-in arithmetic   "<<4-2=2>>"                       -> "2"  (the intermediate result)
  iCoT multiplication (digits reversed)      "0 0 6 4 9 0 ( 5 5 1 1 1 1 )"     -> "551111" (the running sum
                                             in brackets; the first partial product has none: its digits)
  ProsQA / ProntoQA                          "Every terpus is a brimpus."      -> "brimpus" (the entity the
                                             step reaches: its last word)
  built-in graph reachability (data=graph)   "A F" (or "A > F")                -> "F" (the node the hop reaches,
                                             case kept: node names are letters of both cases)

A graph question's hop also has a set-valued key content, the search frontier (`step_targets`): the
nodes exactly i + 1 hops from the root for step i (`coconut.data.graph.Graph.frontiers`).

Tokens: a single key content is named by the first token of "key" and of " key" (a key written at
a line start or after a space), leaving out a token that is only whitespace (a digit-split tokenizer
writes " 12" as " ", "1", "2"); a node of a graph the same way, leaving out a token that starts two
nodes' names (ProsQA's multi-token names).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from coconut.data.graph import parse_graph
from coconut.data.records import Record

_CALCULATION = re.compile(r"<<[^<>]*?=\s*([^<>]+?)\s*>>")
_DIGITS_STEP = re.compile(r"^[\d\s+()]+$")
_BRACKETED = re.compile(r"\(([\d\s]+)\)")
_HOP = re.compile(r"^([A-Za-z]) (?:> )?([A-Za-z])$")  # node names are letters; "0 6" is digits
_WORD = re.compile(r"[A-Za-z0-9]+(?:[.,][0-9]+)*")


def step_key(step: str) -> str | None:
    """The key content of `step`, or None when it has none (an empty or unreadable step)."""
    calculations = _CALCULATION.findall(step)
    if calculations:
        return normalise_number(calculations[-1])
    stripped = step.strip()
    hop = _HOP.match(stripped)
    if hop:
        return hop[2]
    if stripped and _DIGITS_STEP.match(stripped):
        bracketed = _BRACKETED.findall(stripped)
        digits = bracketed[-1] if bracketed else stripped.split("+")[-1]
        return re.sub(r"\D", "", digits) or None
    words = _WORD.findall(stripped)
    return words[-1].lower() if words else None


def normalise_number(text: str) -> str:
    """`"1,200"` -> `"1200"`, `"12.0"` -> `"12"`, `"2.50"` -> `"2.5"`; anything else as it is."""
    cleaned = text.replace(",", "").strip()
    try:
        value = float(cleaned)
    except ValueError:
        return cleaned
    return str(int(value)) if value.is_integer() else repr(value).rstrip("0")


def first_token_ids(tokenizer, key: str) -> list[int]:
    """The ids that name `key`: the first token of "key" and of " key", whitespace-only ones left out."""
    ids = []
    for text in (key, " " + key):
        first = tokenizer.encode(text, add_special_tokens=False)[:1]
        if first and tokenizer.decode(first).strip() and first[0] not in ids:
            ids.append(first[0])
    return ids


def node_tokens(tokenizer, nodes: Sequence[str]) -> dict[int, str]:
    """token id -> node: the first token of " X" and of "X" for every node (one token each for the
    built-in graphs; ProsQA's names, "shumpus", span several). A token that starts the names of two
    nodes of the graph names neither, and is left out."""
    owners: dict[int, set[str]] = {}
    for node in nodes:
        for text in (" " + node, node):
            encoded = tokenizer.encode(text, add_special_tokens=False)
            if encoded:
                owners.setdefault(encoded[0], set()).add(node)
    return {token: next(iter(named)) for token, named in owners.items() if len(named) == 1}


def step_targets(records: Sequence[Record], tokenizer) -> list[tuple[tuple[int, ...], ...]]:
    """Per record, per reference step, the token ids a thought standing for that step should put its
    probability on (empty: the step has no key content). A graph question's step i: the tokens of
    the frontier at depth i + 1 (nodes no token names unambiguously left out); any other step: the
    tokens of its `step_key` (`first_token_ids`)."""
    named: dict[str, tuple[int, ...]] = {}  # key -> its tokens: one tokenizer call per distinct key

    def tokens_of(key: str | None) -> tuple[int, ...]:
        if key is None:
            return ()
        if key not in named:
            named[key] = tuple(first_token_ids(tokenizer, key))
        return named[key]

    targets = []
    for record in records:
        graph = parse_graph(record.question)
        if graph is None:
            targets.append(tuple(tokens_of(step_key(step)) for step in record.steps))
            continue
        owner = node_tokens(tokenizer, graph.nodes)
        frontiers = graph.frontiers(len(record.steps))
        targets.append(
            tuple(
                tuple(sorted(token for token, node in owner.items() if node in frontiers[i + 1]))
                for i in range(len(record.steps))
            )
        )
    return targets
