"""What a set of ProsQA records looks like, read from their text alone: graph sizes, answer depths,
degrees, where the two candidates sit, sentence forms. `scripts/prosqa_stats.py` prints these for
generated and published records side by side; tests/test_prosqa.py holds the generator to the
published validation file with them (`compare`).

Everything is read from question, steps and answer, so any file in the published format (or the
contract format `coconut-data` writes) can be described, with or without its `edges` metadata.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass

from coconut.data.prosqa import read_question
from coconut.data.records import Record

# Degrees above this are pooled into one bin.
DEGREE_CAP = 6


@dataclass(frozen=True)
class Measure:
    """One statistic: `kind` "mean" (a number per record: mean and sd) or "shares" (a category per
    record or per node: the share of each)."""

    name: str
    kind: str
    values: tuple


def _distances(children: dict[str, list[str]], start: str) -> dict[str, int]:
    found, queue = {start: 0}, deque([start])
    while queue:
        node = queue.popleft()
        for child in children.get(node, ()):
            if child not in found:
                found[child] = found[node] + 1
                queue.append(child)
    return found


def _path_count(children: dict[str, list[str]], depth: dict[str, int], root: str, target: str) -> int:
    counts = {root: 1}
    for node in sorted(depth, key=depth.get):
        for child in children.get(node, ()):
            if depth.get(child) == depth[node] + 1:
                counts[child] = counts.get(child, 0) + counts[node]
    return counts.get(target, 0)


def measures(records: Sequence[Record]) -> list[Measure]:
    """The statistics of `records` (ProsQA questions only; others are counted as `not ProsQA`)."""
    per: dict[str, list] = {}

    def add(name: str, value) -> None:
        per.setdefault(name, []).append(value)

    for record in records:
        parsed = read_question(record.question)
        answer = record.answer.strip().rstrip(".").split()[-1] if record.answer.strip() else ""
        add("ProsQA question form", parsed is not None and answer in (parsed.candidates if parsed else ()))
        if parsed is None or answer not in parsed.candidates:
            continue
        target = answer
        negative = parsed.candidates[1] if parsed.candidates[0] == target else parsed.candidates[0]
        children: dict[str, list[str]] = {}
        parents: dict[str, list[str]] = {}
        for a, b in parsed.edges:
            children.setdefault(a, []).append(b)
            parents.setdefault(b, []).append(a)
        nodes = set(children) | set(parents)
        people = {n for n in nodes if n not in parents}
        from_root = _distances(children, parsed.root)
        reaching_negative = {p: _distances(children, p) for p in people if negative in _distances(children, p)}
        negative_depth = min(d[negative] for d in reaching_negative.values()) if reaching_negative else -1
        others = set().union(*(d.keys() for p, d in reaching_negative.items() if p != parsed.root))

        add("nodes", len(nodes))
        add("sentences (edges)", len(parsed.edges))
        add("people (nodes without a parent)", len(people))
        add("steps", len(record.steps))
        add("answer depth (hops root -> answer)", from_root.get(target, -1))
        add("answer depth - negative's depth", from_root.get(target, -1) - negative_depth)
        add("nodes the root reaches", len(from_root) - 1)
        add("nodes reached by root and by the negative's person", len((set(from_root) - {parsed.root}) & others))
        add("shortest paths root -> answer", min(_path_count(children, from_root, parsed.root, target), 3))
        add("both candidates are leaves", target not in children and negative not in children)
        add("the root reaches the negative", negative in from_root)
        add("the candidates share an ancestor", bool(_ancestors(parents, target) & _ancestors(parents, negative)))
        add("answer named first", parsed.candidates[0] == target)
        add("steps follow a shortest path", _steps_are_shortest(record.steps, from_root, parsed.root, target))
        for node in nodes:
            add("out-degree", min(len(children.get(node, ())), DEGREE_CAP))
            if node in parents:
                add("in-degree (not people)", min(len(parents[node]), DEGREE_CAP))
        for a, _ in parsed.edges:
            add("sentence form 'Every X is a Y.' (not a person)", a not in people)

    kinds = {
        "nodes": "mean",
        "sentences (edges)": "mean",
        "people (nodes without a parent)": "mean",
        "nodes the root reaches": "mean",
        "nodes reached by root and by the negative's person": "mean",
    }
    return [Measure(name, kinds.get(name, "shares"), tuple(values)) for name, values in per.items()]


def _ancestors(parents: dict[str, list[str]], node: str) -> set[str]:
    seen, stack = set(), [node]
    while stack:
        for parent in parents.get(stack.pop(), ()):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def _steps_are_shortest(steps: Sequence[str], depth: dict[str, int], root: str, target: str) -> bool:
    named = [root] + [s.strip().rstrip(".").split()[-1] for s in steps]
    return named[-1] == target and all(depth.get(n) == i for i, n in enumerate(named))


def summary(measure: Measure) -> dict:
    """mean and sd, or each category's share."""
    if measure.kind == "mean":
        values = [float(v) for v in measure.values]
        return {"mean": statistics.fmean(values), "sd": statistics.pstdev(values), "n": len(values)}
    counts = Counter(measure.values)
    return {"shares": {k: counts[k] / len(measure.values) for k in sorted(counts)}, "n": len(measure.values)}


@dataclass(frozen=True)
class Difference:
    name: str
    generated: str
    published: str
    distance: float  # |mean difference| in standard errors of the published mean, or total variation
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.distance <= self.tolerance


# A mean may sit this many standard errors of the published mean away (about 1 in 300 by chance).
MEAN_TOLERANCE_SE = 3.0
# A distribution may differ by this total variation distance; 300 published records alone put
# about 0.02-0.05 of sampling noise between two draws of these distributions.
SHARE_TOLERANCE_TV = 0.08


def compare(generated: Sequence[Record], published: Sequence[Record]) -> list[Difference]:
    """Each statistic of `generated` against `published`, with its tolerance."""
    mine = {m.name: m for m in measures(generated)}
    differences = []
    for theirs in measures(published):
        ours = mine.get(theirs.name)
        a, b = summary(ours) if ours else None, summary(theirs)
        if theirs.kind == "mean":
            se = b["sd"] / math.sqrt(b["n"]) or 1e-9
            distance = abs(a["mean"] - b["mean"]) / se if a else math.inf
            differences.append(Difference(theirs.name, _show(a), _show(b), distance, MEAN_TOLERANCE_SE))
        else:
            keys = set(b["shares"]) | set(a["shares"] if a else ())
            tv = 0.5 * sum(abs((a["shares"].get(k, 0) if a else 0) - b["shares"].get(k, 0)) for k in keys)
            differences.append(Difference(theirs.name, _show(a), _show(b), tv, SHARE_TOLERANCE_TV))
    return differences


def _show(s: dict | None) -> str:
    if s is None:
        return "-"
    if "mean" in s:
        return f"{s['mean']:.2f} ± {s['sd']:.2f}"
    return " ".join(f"{_key(k)}:{v:.3f}" for k, v in s["shares"].items())


def _key(k) -> str:
    return {True: "yes", False: "no"}.get(k, str(k)) if isinstance(k, bool) else str(k)
