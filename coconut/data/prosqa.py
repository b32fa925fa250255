"""ProsQA (Hao et al. 2024, "Training Large Language Models to Reason in a Continuous Latent Space",
section 4.1 and appendix A): records generated offline with the published distribution, and a
lossless compact encoding of any ProsQA record for models trained from scratch.

**The generator** rebuilds the paper's construction (its Algorithm 1). Nodes 0 and 1 are two people.
Each new node takes Poisson(1.5) parents, drawn with weight 1.5 x depth + 1 (deeper nodes first, so
that reasoning chains grow long) from one of three pools: the nodes only node 0 reaches, the nodes
only node 1 reaches, or every node. A node that draws no parent is a new person; one that no later
node takes as a parent is left out. The question's root is the person whose exclusive part of the
graph is deeper, the answer a deepest node only the root reaches (3 to 6 hops), the other candidate
a leaf only the other person reaches; the steps are a shortest path. The constants that the paper
does not print (the pools' odds 0.35 / 0.47 / 0.18, 28 nodes before the childless people are left
out) were fitted to the published records: `scripts/prosqa_stats.py` prints both side by side and
tests/test_prosqa.py holds them together.

    {"question": "Every shumpus is a rempus. ... Tom is a terpus. ... Is Tom a lempus or scrompus?",
     "steps": ["Tom is a terpus.", "Every terpus is a brimpus.", "Every brimpus is a lempus."],
     "answer": "Tom is a lempus.",
     "idx_to_symbol": ["Davis", "Tom", ...], "edges": [[0, 2], ...], "root": 1, "target": 16, "neg_target": 13}

**The compact encoding** renames every concept and person of a question to a single letter and
writes each sentence as its two names, in the question's own order, as the built-in graph task does
(`coconut.data.graph.question_text`):

    question  "Every shumpus is a rempus. ... Is Tom a lempus or scrompus?"
          ->  " q R , ... . From T , which is reachable : L or s ?"
    steps     " T t", " t B", " B L"
    answer    "L"

Names carry nothing in ProsQA (the sentences are shuffled and the names drawn at random per
question), so the encoding loses nothing: `decode_answer` maps an answer back to the statement the
paper scores ("Tom is a lempus."). The letters are a permutation seeded by the question's text, so a
question always encodes the same way.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from coconut.data.graph import NODE_NAMES, Graph, question_text
from coconut.data.records import DataError, Record

# The names of the published files (ProntoQA's fictional concepts, and first names).
PEOPLE = ("Alex Bob Carol Davis Eva Fae Gabriel Jack Max Oliver Polly Rex Sally Sam Stella Tom Wren").split()
CONCEPTS = (
    "bompus boompus brimpus chorpus dumpus felpus fompus gerpus gorpus grimpus gwompus hilpus impus jelpus "
    "jompus kerpus lempus lorpus numpus quimpus rempus rompus rorpus scrompus shumpus sterpus storpus terpus "
    "timpus tumpus vumpus worpus wumpus yerpus yimpus yumpus zhorpus zumpus"
).split()

# The construction's constants (module docstring).
NODES_BEFORE_PRUNING = 28
PARENTS_MEAN = 1.5
DEPTH_WEIGHT = 1.5
# Where a new node's parents come from: nodes only person 0 reaches, only person 1 reaches, any node.
POOL_ODDS = (0.35, 0.47, 0.18)
ANSWER_DEPTHS = (3, 6)

_SENTENCE = re.compile(r"(Every )?(\w+) is an? (\w+)\.")
_QUESTION = re.compile(r"Is (\w+) an? (\w+) or an? (\w+)\?|Is (\w+) a (\w+) or (\w+)\?")


# -- the generator ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Dag:
    edges: list[tuple[int, int]]  # (parent, child), children numbered after their parents
    n: int


def generate_prosqa(n: int, *, seed: int = 0) -> list[dict]:
    """`n` ProsQA records in the published JSON format (module docstring), seeded."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    records = []
    while len(records) < n:
        record = _problem(rng, _dag(rng))
        if record is not None:
            records.append(record)
    return records


def generate_records(n: int, *, seed: int = 0) -> list[Record]:
    """`generate_prosqa` as training records (the `data.generator` of conf/data/prosqa_generated.yaml;
    `data.encoding` then encodes them as it does the published files)."""
    return [Record(r["question"], tuple(r["steps"]), r["answer"]) for r in generate_prosqa(n, seed=seed)]


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def _dag(rng: random.Random) -> _Dag:
    reach = [1, 2]  # bit 1: person 0 reaches the node, bit 2: person 1 does
    depth = [0, 0]
    edges: list[tuple[int, int]] = []
    for node in range(2, NODES_BEFORE_PRUNING):
        wanted = _poisson(rng, PARENTS_MEAN)
        pool = rng.choices((1, 2, None), weights=POOL_ODDS)[0]
        candidates = [c for c in range(node) if pool is None or reach[c] == pool]
        weights = [DEPTH_WEIGHT * depth[c] + 1 for c in candidates]
        parents = []
        for _ in range(min(wanted, len(candidates))):
            pick = rng.choices(range(len(candidates)), weights=weights)[0]
            parents.append(candidates.pop(pick))
            weights.pop(pick)
        reach.append(0)
        for parent in parents:
            reach[-1] |= reach[parent]
            edges.append((parent, node))
        depth.append(min((depth[p] for p in parents), default=-1) + 1)
    # A node with no parent that no later node took as one is a person with no sentence: left out.
    kept = sorted({0, 1} | {a for a, _ in edges} | {b for _, b in edges})
    index = {old: new for new, old in enumerate(kept)}
    return _Dag([(index[a], index[b]) for a, b in edges], len(kept))


def _distances(children: list[list[int]], start: int) -> dict[int, int]:
    found, queue = {start: 0}, deque([start])
    while queue:
        node = queue.popleft()
        for child in children[node]:
            if child not in found:
                found[child] = found[node] + 1
                queue.append(child)
    return found


def _problem(rng: random.Random, dag: _Dag) -> dict | None:
    children: list[list[int]] = [[] for _ in range(dag.n)]
    for parent, child in dag.edges:
        children[parent].append(child)
    reached = [_distances(children, 0), _distances(children, 1)]

    def exclusive_leaves(person: int) -> list[int]:
        return [v for v in reached[person] if v not in reached[1 - person] and not children[v]]

    leaves = [exclusive_leaves(0), exclusive_leaves(1)]
    if not leaves[0] or not leaves[1]:
        return None
    deepest = [max(reached[p][v] for v in leaves[p]) for p in (0, 1)]
    root = 0 if deepest[0] > deepest[1] else 1 if deepest[1] > deepest[0] else rng.randint(0, 1)
    if not ANSWER_DEPTHS[0] <= deepest[root] <= ANSWER_DEPTHS[1]:
        return None
    target = rng.choice([v for v in leaves[root] if reached[root][v] == deepest[root]])
    negative = rng.choice(leaves[1 - root])
    path = _shortest_path(rng, children, reached[root], root, target)

    is_person = [True] * dag.n
    for _, child in dag.edges:
        is_person[child] = False
    people = iter(rng.sample(PEOPLE, sum(is_person)))
    concepts = iter(rng.sample(CONCEPTS, dag.n - sum(is_person)))
    names = [next(people) if person else next(concepts) for person in is_person]

    def sentence(parent: int, child: int) -> str:
        return (
            f"{names[parent]} is a {names[child]}."
            if is_person[parent]
            else f"Every {names[parent]} is a {names[child]}."
        )

    sentences = [sentence(a, b) for a, b in dag.edges]
    rng.shuffle(sentences)
    first, second = (target, negative) if rng.random() < 0.5 else (negative, target)
    question = " ".join(sentences) + f" Is {names[root]} a {names[first]} or {names[second]}?"
    return {
        "question": question,
        "answer": f"{names[root]} is a {names[target]}.",
        "steps": [sentence(a, b) for a, b in zip(path, path[1:])],
        "idx_to_symbol": names,
        "edges": [list(e) for e in dag.edges],
        "root": root,
        "target": target,
        "neg_target": negative,
    }


def _shortest_path(rng: random.Random, children: list[list[int]], depth: dict[int, int], root: int, target: int):
    """One shortest path root -> target, drawn uniformly (the published steps are one at random)."""
    # paths[v]: how many shortest paths run from v to the target; walk down weighting by them.
    paths: dict[int, int] = {target: 1}
    for node in sorted(depth, key=depth.get, reverse=True):
        if node != target:
            paths[node] = sum(paths.get(c, 0) for c in children[node] if depth.get(c) == depth[node] + 1)
    path = [root]
    while path[-1] != target:
        here = path[-1]
        options = [c for c in children[here] if depth.get(c) == depth[here] + 1 and paths.get(c, 0)]
        path.append(rng.choices(options, weights=[paths[c] for c in options])[0])
    return path


# -- the compact encoding -----------------------------------------------------------------------------
ENCODINGS = ("text", "compact")


@dataclass(frozen=True)
class ProsqaQuestion:
    """A ProsQA question read from its text: the sentences as (subject, object) pairs in order, the
    person asked about and the two candidates in the order asked."""

    edges: tuple[tuple[str, str], ...]
    root: str
    candidates: tuple[str, str]

    def letters(self) -> dict[str, str]:
        """name -> its letter: a permutation of A-Z, a-z seeded by the question, so the same
        question always encodes the same way."""
        names = list(dict.fromkeys([n for edge in self.edges for n in edge] + [self.root, *self.candidates]))
        if len(names) > len(NODE_NAMES):
            raise ValueError(f"{len(names)} names, more than the {len(NODE_NAMES)} letters of the encoding")
        asked = f"{self.root}?{self.candidates[0]}|{self.candidates[1]}"
        digest = hashlib.sha256((" ".join(f"{a}>{b}" for a, b in self.edges) + asked).encode()).digest()
        letters = random.Random(int.from_bytes(digest[:8], "big")).sample(NODE_NAMES, len(names))
        return dict(zip(names, letters))


def read_question(question: str) -> ProsqaQuestion | None:
    """The graph of a ProsQA question text, or None when it is not one."""
    asked = _QUESTION.search(question)
    if not asked:
        return None
    root, first, second = [g for g in asked.groups() if g is not None]
    edges = tuple((subject, obj) for _, subject, obj in _SENTENCE.findall(question[: asked.start()]))
    return ProsqaQuestion(edges, root, (first, second)) if edges else None


def compact_record(record: Record, *, source: str = "records", index: int = 0) -> Record:
    """A ProsQA record in the compact encoding (module docstring). A record that is not ProsQA (its
    question, a step or the answer not in ProsQA's sentence forms) is a DataError naming it."""

    def fail(problem: str, field: str) -> DataError:
        return DataError.at(
            source,
            problem,
            'give ProsQA records ("Every X is a Y." sentences, "Is Tom a X or Y?"), or set data.encoding=text',
            index=index,
            field=field,
        )

    parsed = read_question(record.question)
    if parsed is None:
        raise fail("is not a ProsQA question (sentences 'Every X is a Y.' then 'Is Tom a X or Y?')", "question")
    try:
        letter = parsed.letters()
    except ValueError as error:
        raise fail(str(error), "question") from None
    steps = []
    for i, step in enumerate(record.steps):
        hop = _SENTENCE.fullmatch(step.strip())
        if hop is None or hop[2] not in letter or hop[3] not in letter:
            raise fail(f"step {step!r} is not a sentence about the question's names", f"steps[{i}]")
        steps.append(f" {letter[hop[2]]} {letter[hop[3]]}")
    stated = _SENTENCE.fullmatch(record.answer.strip())
    if stated is None or stated[3] not in parsed.candidates:
        raise fail(f"{record.answer!r} does not name one of the candidates {parsed.candidates}", "answer")
    graph = Graph(
        edges=tuple((letter[a], letter[b]) for a, b in parsed.edges),
        root=letter[parsed.root],
        candidates=(letter[parsed.candidates[0]], letter[parsed.candidates[1]]),
    )
    return Record(question_text(graph), tuple(steps), letter[stated[3]], published=record.question)


def decode_answer(question: str, answer: str) -> str:
    """A compact answer ("L") as the statement the paper scores ("Tom is a lempus."), given the
    record's ProsQA question; the answer as it is when it names no letter of the question."""
    parsed = read_question(question)
    if parsed is None:
        return answer
    name = {letter: name for name, letter in parsed.letters().items()}.get(answer.strip())
    return f"{parsed.root} is a {name}." if name else answer


def encode_records(records: Iterable[Record], encoding: str, *, source: str = "records") -> list[Record]:
    """`records` in `encoding`: `text` as they are, `compact` through `compact_record`."""
    if encoding not in ENCODINGS:
        raise DataError.at(source, f"unknown data.encoding {encoding!r}", f"use one of {', '.join(ENCODINGS)}")
    if encoding == "text":
        return list(records)
    return [compact_record(r, source=source, index=i) for i, r in enumerate(records)]
