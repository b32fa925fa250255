"""A warm-up task for models trained from scratch on graph questions: copy a list of names.

A graph question's chain of thought looks an edge up at every hop: find the node just written in the
edge list and copy the node after it. A model pretrained on text (the paper's GPT-2) has the
induction heads that do this; a 2-layer model from scratch forms them abruptly, after 500 or more
than 10,000 updates depending on the seed and on how many names there are (docs/results.md). In this
task every token of the answer can only be predicted by that lookup, so the heads form in a few
hundred updates, whatever the seed:

    question  " q R T t B L ."                (distinct names in random order)
    steps     " q R T t B L"                  (the list again)
    answer    "L"

The names are those of the graph questions (`coconut.data.graph.NODE_NAMES`), so the tokenizer and
the heads carry over to `data=graph` and ProsQA's compact encoding.
"""

from __future__ import annotations

import random

from coconut.core.errors import ConfigError
from coconut.data.graph import NODE_NAMES, generate_graph
from coconut.data.records import Record


def generate_copy(n: int, *, length: tuple[int, int] = (6, 30), nodes: int = 52, seed: int = 0) -> list[Record]:
    """`n` copy questions of `length` (min, max) names each, drawn from the first `nodes` of A-Z,
    a-z without repeats within a question."""
    low, high = length
    if n < 0 or not 1 <= low <= high <= nodes <= len(NODE_NAMES):
        raise ConfigError(
            f"data.generator (generate_copy): need n >= 0 and 1 <= length[0] <= length[1] <= nodes <= "
            f"{len(NODE_NAMES)}; got {n=}, {length=}, {nodes=}"
        )
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        names = " " + " ".join(rng.sample(NODE_NAMES[:nodes], rng.randint(low, high)))
        records.append(Record(question=names + " .", steps=(names,), answer=names[-1]))
    return records


def generate_warmup(
    n: int,
    *,
    copy_share: float = 0.5,
    length: tuple[int, int] = (6, 30),
    nodes: int = 52,
    depth: int = 3,
    distractor_branches: int = 0,
    seed: int = 0,
) -> list[Record]:
    """`n` questions, `copy_share` of them copy questions and the rest built-in graph questions
    (`coconut.data.graph.generate_graph`, branch-free by default), in a seeded random order: the
    heads form on the copies and are put to use on the graphs, and the tokenizer learns both."""
    if not 0 <= copy_share <= 1:
        raise ConfigError(f"data.generator.copy_share must be in [0, 1], got {copy_share}")
    copies = round(n * copy_share)
    records = generate_copy(copies, length=length, nodes=nodes, seed=seed) + generate_graph(
        n - copies, depth=depth, distractor_branches=distractor_branches, nodes=nodes, seed=seed
    )
    random.Random(seed).shuffle(records)
    return records
