"""Frontier legibility: whether a continuous thought holds the breadth-first search frontier of a
graph question at once (the superposition of Hao et al. 2024, Figure on ProsQA, and of Zhu et al.
2025, "Reasoning by Superposition", arXiv:2505.12514).

For a set-valued step, a hop of a graph search, the key content is a set: the frontier F_{i+1}, the
nodes exactly i + 1 hops from the root, for the thought(s) standing for step i. Each thought is
read through the LM head (logit lens) and scored against the nodes of its own question's graph:

  frontier_topk          share of its top-k tokens (k = |F_{i+1}|) that name frontier nodes
  frontier_topk_within   the same share counting every node within <= i + 1 hops (root included)
  frontier_mass          probability on frontier nodes / probability on all nodes of the graph
  frontier_off_tree      share of thoughts whose top-1 token names a node the root cannot reach at
                         all: a search started from the wrong place (on the built-in graphs, the
                         decoy tree that holds the other candidate), which the shares above only
                         count as a miss

each with its chance level: a node of the graph drawn at random is in the frontier (within the
hops, off the root's tree) with probability |F| / |N| (|W| / |N|, |U| / |N|), which is also the mass
a uniform thought puts on it.
With several thoughts per hop (curriculum.c_thought = c) every thought of a hop is scored against
that hop's frontier, but the hop's content need not sit in all of them: without markers, the c
thoughts replace the tokens of a written hop (" D U\n"), and a model can keep the parent in the
first and the frontier in the second. So the scores are also given by the thought's place in its hop
(frontier_by_position), and frontier_topk_best_position is the top-k share of the place that holds
the frontier best.
A node is written by the first token of " X" or of "X" (line start); both count. ProsQA questions
are read too (`coconut.data.graph.parse_graph`), their multi-token names by their first token
(`coconut.data.step_keys.node_tokens`, the rule training's legibility objective uses too).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from coconut.data.graph import Graph
from coconut.data.step_keys import node_tokens

FRONTIER_METRICS = ("frontier_topk", "frontier_topk_within", "frontier_mass", "frontier_off_tree")


def hops_valid(graph: Graph, written: Sequence[str], start: str | None = None) -> list[bool]:
    """Per written hop (" A F"), whether it is an edge of the graph that leaves where the search
    stands: the root (or `start`, the last node the thoughts reached) for the first hop, the
    previous hop's node after that. A chain of thought that looks every edge up scores 1 whether or
    not it chose the branch that reaches the answer; one that writes nodes at random scores near 0."""
    edges = set(graph.edges)
    at, checks = start or graph.root, []
    for hop in written:
        nodes = hop.split()
        valid = len(nodes) == 2 and nodes[0] == at and (nodes[0], nodes[1]) in edges
        checks.append(valid)
        at = nodes[-1] if nodes else at
    return checks


@dataclass(frozen=True)
class ThoughtFrontier:
    depth: int  # the frontier it is scored against: i + 1 for a thought of step i
    topk: float
    topk_within: float
    mass: float
    topk_chance: float
    within_chance: float
    off_tree: float  # 1.0 when the top-1 token names a node unreachable from the root
    off_tree_chance: float
    position: int = 1  # its place among its hop's thoughts, 1..c


def score_thought(
    logits: torch.Tensor,
    frontier: set[str],
    within: set[str],
    unreachable: set[str],
    graph_nodes: Sequence[str],
    ids: dict[int, str],
    depth: int,
) -> ThoughtFrontier | None:
    """One thought's logits (V,) against its frontier; None when the frontier is empty."""
    if not frontier or not graph_nodes:
        return None
    top = logits.topk(len(frontier)).indices.tolist()
    named = [ids.get(token) for token in top]
    probs = logits.double().softmax(-1)
    on_graph = [(token, node) for token, node in ids.items() if node in graph_nodes]
    total = sum(float(probs[t]) for t, _ in on_graph)
    on_frontier = sum(float(probs[t]) for t, node in on_graph if node in frontier)
    n = len(set(graph_nodes))
    return ThoughtFrontier(
        depth=depth,
        topk=sum(node in frontier for node in named) / len(top),
        topk_within=sum(node in within for node in named) / len(top),
        mass=on_frontier / total if total > 0 else 0.0,
        topk_chance=len(frontier) / n,
        within_chance=len(within & set(graph_nodes)) / n,
        off_tree=float(named[0] in unreachable),
        off_tree_chance=len(unreachable) / n,
    )


def question_frontiers(
    logits: torch.Tensor,
    graph: Graph,
    *,
    steps_replaced: int,
    latents_per_step: int,
    ids: dict[int, str],
) -> list[ThoughtFrontier]:
    """Scores of every thought of one question (logits (n_thoughts, V)) that stands for a replaced
    step: thought t stands for step t // latents_per_step, scored against frontier depth step + 1."""
    n_steps = min(steps_replaced, logits.shape[0] // latents_per_step)
    readable = set(ids.values())
    # Nodes no token names unambiguously cannot be read from a thought: they are scored on neither side.
    frontiers = [layer & readable for layer in graph.frontiers(n_steps)]
    nodes = [n for n in graph.nodes if n in readable]
    unreachable = graph.unreachable & readable
    scores = []
    for t in range(n_steps * latents_per_step):
        depth = t // latents_per_step + 1
        within = set().union(*frontiers[: depth + 1])
        score = score_thought(logits[t], frontiers[depth], within, unreachable, nodes, ids, depth)
        if score is not None:
            scores.append(replace(score, position=t % latents_per_step + 1))
    return scores


def frontier_block(scores: Sequence[ThoughtFrontier]) -> dict:
    """Means over thoughts, with chance levels and a per-depth breakdown; {} without any thought."""
    if not scores:
        return {}

    def mean(values) -> float:
        values = list(values)
        return sum(values) / len(values)

    block = {
        "frontier_topk": mean(s.topk for s in scores),
        "frontier_topk_chance": mean(s.topk_chance for s in scores),
        "frontier_topk_within": mean(s.topk_within for s in scores),
        "frontier_topk_within_chance": mean(s.within_chance for s in scores),
        "frontier_mass": mean(s.mass for s in scores),
        "frontier_mass_chance": mean(s.topk_chance for s in scores),
        "frontier_off_tree": mean(s.off_tree for s in scores),
        "frontier_off_tree_chance": mean(s.off_tree_chance for s in scores),
        "frontier_thoughts": len(scores),
    }

    def breakdown(group: Sequence[ThoughtFrontier]) -> dict:
        return {
            "topk": mean(s.topk for s in group),
            "mass": mean(s.mass for s in group),
            "off_tree": mean(s.off_tree for s in group),
            "chance": mean(s.topk_chance for s in group),
        }

    block["frontier_by_depth"] = {
        str(depth): breakdown([s for s in scores if s.depth == depth]) for depth in sorted({s.depth for s in scores})
    }
    positions = sorted({s.position for s in scores})
    if len(positions) > 1:  # several thoughts per hop
        by_position = {str(p): breakdown([s for s in scores if s.position == p]) for p in positions}
        best = max(by_position.values(), key=lambda scored: scored["topk"])
        block["frontier_by_position"] = by_position
        block["frontier_topk_best_position"] = best["topk"]
        block["frontier_topk_best_position_chance"] = best["chance"]
    return block


def frontier_legibility(
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    thoughts: Sequence[torch.Tensor],
    graphs: Sequence[Graph | None],
    steps_replaced: Sequence[int],
    *,
    latents_per_step: int,
    tokenizer,
) -> tuple[dict, list[list[ThoughtFrontier]]]:
    """The frontier block over questions (thoughts (n_i, D) each; a None graph is not a graph
    question and is skipped), and each question's scores."""
    per_question: list[list[ThoughtFrontier]] = []
    for recorded, graph, replaced in zip(thoughts, graphs, steps_replaced):
        if graph is None or recorded.numel() == 0:
            per_question.append([])
            continue
        ids = node_tokens(tokenizer, graph.nodes)
        with torch.no_grad():
            logits = logits_of(recorded).float()  # (n_thoughts, V)
        per_question.append(
            question_frontiers(logits, graph, steps_replaced=replaced, latents_per_step=latents_per_step, ids=ids)
        )
    return frontier_block([s for q in per_question for s in q]), per_question
