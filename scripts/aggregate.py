"""Gathers a multirun folder (`coconut-train -m ...`) into one markdown table.

    python scripts/aggregate.py outputs/train/multiruns/<time> [--metrics val/acc test/acc]

One row per setting of the config keys that vary across the sweep; runs differing only in `seed`
are one row, reported as mean ± std (sample std) over the seeds. Columns: those keys, the number of
seeds, the final metrics of each run and the best val/acc within each curriculum stage.

Each job folder is one with `.hydra/overrides.yaml`; its metrics come from the `metrics.json` that
coconut-train writes at the end, or, for a run that stopped before, from its TensorBoard events.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import yaml

DEFAULT_METRICS = ("val/acc", "val/loss", "test/acc", "test/tokens_per_answer")
SEED_KEYS = ("seed",)


def job_dirs(root: Path) -> list[Path]:
    return sorted((p.parent.parent for p in root.rglob(".hydra/overrides.yaml")), key=lambda p: str(p))


def overrides(job: Path) -> dict[str, str]:
    """The job's command-line overrides as key -> value (`hydra.*` and `+`/`~` prefixes dropped)."""
    items = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
    pairs = (item.split("=", 1) for item in items if "=" in item)
    return {k.lstrip("+~"): v for k, v in pairs if not k.lstrip("+~").startswith("hydra.")}


def metrics(job: Path) -> dict[str, float] | None:
    """Flat metrics: the final ones, plus `best val/acc stage{k}`; None when the job logged nothing."""
    path = job / "metrics.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        best = saved.get("best_per_stage", {})
    else:
        saved, best = _from_tensorboard(job)
        if saved is None:
            return None
    flat = dict(saved["final"])
    for name, stages in best.items():
        flat.update({f"best {name} {stage}": value for stage, value in stages.items()})
    return flat


def _from_tensorboard(job: Path) -> tuple[dict | None, dict]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folders = sorted({p.parent for p in job.rglob("events.out.tfevents.*")})
    if not folders:
        return None, {}
    events = EventAccumulator(str(folders[0]))
    events.Reload()
    scalars = {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}
    final = {tag: values[-1].value for tag, values in scalars.items() if values}
    best: dict[str, float] = {}
    stages = [(e.step, int(e.value)) for e in scalars.get("curriculum/stage", [])]
    for event in scalars.get("val/acc", []):
        # The stage of a validation is the last stage logged at or before its step.
        stage = next((s for step, s in reversed(stages) if step <= event.step), stages[0][1] if stages else 0)
        key = f"stage{stage}"
        best[key] = max(best.get(key, float("-inf")), event.value)
    return {"final": final}, {"val/acc": best}


def aggregate(root: Path, wanted: tuple[str, ...] | None = None) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the table; see the module docstring."""
    runs = []
    for job in job_dirs(root):
        found = metrics(job)
        if found is None:
            print(f"skipped {job}: no metrics.json and no TensorBoard events", file=sys.stderr)
            continue
        runs.append((overrides(job), found))
    if not runs:
        raise SystemExit(f"{root}: no finished job (a folder with .hydra/overrides.yaml and metrics)")
    keys = sorted({k for o, _ in runs for k in o})
    varying = [k for k in keys if k not in SEED_KEYS and len({o.get(k) for o, _ in runs}) > 1]
    names = list(wanted) if wanted else [m for m in DEFAULT_METRICS if any(m in r for _, r in runs)]
    names += sorted({m for _, r in runs for m in r if m.startswith("best ")}, key=_stage_order)
    groups: dict[tuple, list[dict[str, float]]] = {}
    for over, found in runs:
        groups.setdefault(tuple(over.get(k, "") for k in varying), []).append(found)
    header = [*varying, "seeds", *names]
    rows = [
        [*setting, str(len(group)), *(_mean_std([r[m] for r in group if m in r]) for m in names)]
        for setting, group in sorted(groups.items())
    ]
    return header, rows


def _stage_order(name: str) -> tuple[str, int]:
    prefix, _, stage = name.rpartition("stage")
    return prefix, int(stage) if stage.isdigit() else -1


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a multirun folder (hydra.sweep.dir)")
    parser.add_argument("--metrics", nargs="+", help=f"final metrics to show (default: {', '.join(DEFAULT_METRICS)})")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        raise SystemExit(f"{args.folder}: no such folder")
    print(markdown(*aggregate(args.folder, tuple(args.metrics) if args.metrics else None)))


if __name__ == "__main__":
    main()
