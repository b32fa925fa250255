"""Graph reachability in the shape of ProsQA (Hao et al. 2024, "Training Large Language Models to
Reason in a Continuous Latent Space", section 4), generated offline from a seed.

A question gives a directed acyclic graph as an edge list, a root, and two candidate nodes; exactly
one candidate is reachable from the root. The reasoning steps are the hops of the path from the
root to it, one edge per step; the answer names it:

    question  " A F , Q D , F K , A C , C J , D M , ... . From A , which is reachable : M or K ?"
    steps     " A F", " F K"
    answer    "K"

Every graph is two trees of the same shape. The root's tree holds the path to the answer plus
`distractor_branches` dead-end chains that leave the path and run to the answer's depth, so that
no child of a path node can be told from another without looking `depth` hops ahead: a model that
writes the path must plan it, one that keeps every frontier node at once (a breadth-first search in
superposition, Zhu et al. 2025, arXiv:2505.12514) need not. The decoy tree is a copy rooted at
another source, with the other candidate at the same depth: in- and out-degrees, depths and node
names say nothing about which candidate is reachable; only the edges from the root do.

Node names are single letters written after a space (" A"), so the byte-level tokenizer keeps each
as one token; names are drawn at random per question. The frontier at depth i (every node exactly
i hops from the root) is the key content of thought i-1 in `coconut.eval.frontier`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from coconut.core.errors import ConfigError
from coconut.data.records import Record

NODE_NAMES = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# ProsQA's own sentences (Hao et al. 2024): "Every wumpus is a yumpus." / "Tom is a wumpus." and
# the question "Is Tom a lempus or scrompus?".
_PROSQA_EDGE = re.compile(r"(?:Every (\w+)|(\w+)) is an? (\w+)\.")
_PROSQA_QUESTION = re.compile(r"Is (\w+) an? (\w+) or an? (\w+)\?|Is (\w+) a (\w+) or (\w+)\?")
_QUESTION = re.compile(r"^(?P<edges>.*) \. From (?P<root>\w) , which is reachable : (?P<a>\w) or (?P<b>\w) \?$")
_EDGE = re.compile(r"(\w) (\w)(?= ,|$)")


@dataclass(frozen=True)
class Graph:
    edges: tuple[tuple[str, str], ...]
    root: str
    candidates: tuple[str, str]

    @property
    def nodes(self) -> list[str]:
        """Every node named in the question, in order of first mention."""
        seen = dict.fromkeys(n for edge in self.edges for n in edge)
        return list(dict.fromkeys([*seen, self.root, *self.candidates]))

    def frontiers(self, depth: int) -> list[set[str]]:
        """frontiers[i]: the nodes exactly i hops from the root (shortest path), for i = 0..depth."""
        children: dict[str, list[str]] = {}
        for parent, child in self.edges:
            children.setdefault(parent, []).append(child)
        layers, seen = [{self.root}], {self.root}
        for _ in range(depth):
            layer = {c for n in layers[-1] for c in children.get(n, []) if c not in seen}
            seen |= layer
            layers.append(layer)
        return layers

    @property
    def unreachable(self) -> set[str]:
        """The nodes of the graph that no path from the root reaches (the decoy tree, on built-in graphs)."""
        reached = set().union(*self.frontiers(len(self.nodes)))
        return set(self.nodes) - reached


def question_text(graph: Graph) -> str:
    # An edge is its two nodes side by side (" A F"), as in Zhu et al.'s graphs, and a hop is written
    # the same way (`_graph_problem`): the child is the token right after its parent, so looking up
    # "the edge that leaves X" is the plain induction pattern (find X, copy the next token) that a
    # 2-layer model forms from scratch (docs/results.md, the graph section).
    edges = " , ".join(f"{a} {b}" for a, b in graph.edges)
    first, second = graph.candidates
    return f" {edges} . From {graph.root} , which is reachable : {first} or {second} ?"


def parse_graph(question: str) -> Graph | None:
    """The graph of a question written by `question_text`, or of a ProsQA question; None for any
    other question."""
    match = _QUESTION.match(question.strip())
    if match:
        edges = tuple(_EDGE.findall(match["edges"]))
        return Graph(edges=edges, root=match["root"], candidates=(match["a"], match["b"]))
    asked = _PROSQA_QUESTION.search(question)
    if not asked:
        return None
    root, first, second = [g for g in asked.groups() if g is not None]
    edges = tuple((every or name, child) for every, name, child in _PROSQA_EDGE.findall(question))
    return Graph(edges=edges, root=root, candidates=(first, second)) if edges else None


def nodes_needed(depth: int, distractor_branches: int, out_degree: int) -> int:
    """Nodes of the largest graph the knobs can make: two trees, each the path (depth + 1 nodes)
    and its dead-end chains at their longest (a chain from path node j has depth - j nodes)."""
    lengths = sorted((depth - j for j in range(depth) for _ in range(out_degree - 1)), reverse=True)
    return 2 * (depth + 1 + sum(lengths[:distractor_branches]))


def generate_graph(
    n: int,
    *,
    depth: int = 3,
    out_degree: int = 2,
    distractor_branches: int | Sequence[int] = 2,
    nodes: int = 26,
    seed: int = 0,
) -> list[Record]:
    """`n` reachability questions whose answer is `depth` hops from the root.

    depth                 hops from the root to the reachable candidate: the steps per question
    out_degree            most children of a path node (the path's own child and the chains leaving there)
    distractor_branches   dead-end chains leaving the root's path (and the decoy's), each from a path node
                          with a free child slot, running down to the answer's depth; a list draws each
                          question's count from it (graphs of mixed size, e.g. [0, 1])
    nodes                 node names to draw from (the first `nodes` of A-Z, a-z); a graph uses a random subset
    """
    problems = []
    if n < 0 or depth < 1 or out_degree < 1:
        problems.append(f"need n >= 0, depth >= 1, out_degree >= 1; got {n=}, {depth=}, {out_degree=}")
    counts = [distractor_branches] if isinstance(distractor_branches, int) else list(distractor_branches)
    if not counts or any(not isinstance(c, int) or c < 0 or c > depth * (out_degree - 1) for c in counts):
        problems.append(
            f"distractor_branches={distractor_branches} must be in 0..depth * (out_degree - 1) = "
            f"{depth * max(out_degree - 1, 0)} (each of the {depth} path nodes above the answer has "
            "out_degree - 1 free child slots), or a non-empty list of such counts"
        )
    if problems:
        raise ConfigError(f"data.generator (generate_graph): {'; '.join(problems)}")
    needed = nodes_needed(depth, max(counts), out_degree)
    if not needed <= nodes <= len(NODE_NAMES):
        raise ConfigError(
            f"data.generator (generate_graph): nodes={nodes} must be in {needed}..{len(NODE_NAMES)}: two trees of "
            f"depth {depth} with {max(counts)} dead-end chains need up to {needed} distinct single-letter names"
        )
    rng = random.Random(seed)
    # One count draws nothing, so a plain int gives the same questions as before lists were allowed.
    return [
        _graph_problem(rng, depth, out_degree, rng.choice(counts) if len(counts) > 1 else counts[0], nodes)
        for _ in range(n)
    ]


def _tree_shape(rng: random.Random, depth: int, out_degree: int, branches: int) -> list[int]:
    """The path nodes (0..depth-1) where each dead-end chain leaves, at most out_degree - 1 each."""
    slots = [j for j in range(depth) for _ in range(out_degree - 1)]
    return sorted(rng.sample(slots, branches))


def _tree(names: list[str], depth: int, starts: list[int]) -> tuple[list[str], list[tuple[str, str]]]:
    """A path of depth + 1 nodes, then for each start j a chain from path node j down to depth
    `depth`; takes node names from the end of `names`. Returns (path, edges)."""
    path = [names.pop() for _ in range(depth + 1)]
    edges = list(zip(path, path[1:]))
    for j in starts:
        parent = path[j]
        for _ in range(depth - j):
            child = names.pop()
            edges.append((parent, child))
            parent = child
    return path, edges


def _graph_problem(rng: random.Random, depth: int, out_degree: int, branches: int, nodes: int) -> Record:
    names = rng.sample(NODE_NAMES[:nodes], nodes)
    starts = _tree_shape(rng, depth, out_degree, branches)
    path, edges = _tree(names, depth, starts)
    decoy_path, decoy_edges = _tree(names, depth, starts)
    all_edges = edges + decoy_edges
    rng.shuffle(all_edges)
    candidates = [path[-1], decoy_path[-1]]
    rng.shuffle(candidates)
    graph = Graph(edges=tuple(all_edges), root=path[0], candidates=(candidates[0], candidates[1]))
    # A hop is written as its edge is in the question, " A F", with the leading space: the node a step
    # starts from is then the same token as in the edge list (" A", not "A" after the newline), and
    # the node it reaches is predicted right after it, so the lookup is the plain induction pattern
    # (find the token just written, copy the one after it). Written " A > F", the prediction came one
    # token later, the lookup needed a previous-token head on both sides, and a 2-layer Llama had not
    # learnt it after 7,500 updates; as " A F" it learns it in ~1,500 (docs/results.md, the graph section).
    steps = tuple(f" {a} {b}" for a, b in zip(path, path[1:]))
    return Record(question=question_text(graph), steps=steps, answer=path[-1])
