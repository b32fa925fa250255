"""The legibility frontier: accuracy against legibility over a sweep of legibility.weight (lambda) x
thought projection x seed (scripts/legibility_frontier.sh runs it), one point per (projection,
lambda), mean over the seeds with their sample standard deviation as error bars on both axes.

    python scripts/legibility_frontier.py outputs/frontier/eval/* [--out DIR]

Legibility is what a reader recovers from the thoughts: `legibility.decode_top1` (the replaced
steps' results decoded top-1 through the LM head) on arithmetic, `legibility.frontier_topk` (the
frontier recall: share of a thought's top-|F| tokens naming frontier nodes) on graph questions,
chosen per report by which it has. Writes legibility_frontier.png, frontier.md and frontier.json
into --out (default outputs/frontier/<time>/), the figure and the table to TensorBoard there, and
prints the table; the table also holds the causal legibility (`legibility.causal`, coconut-eval's
interventions) and the swap-ablation drop.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import datetime
from pathlib import Path

from coconut.eval.suite import lookup  # a dotted key of a nested report

# (axis label, report key): the first one a report has is its legibility.
LEGIBILITY = (
    ("frontier recall (top-|F|)", "legibility.frontier_topk"),
    ("decode top-1", "legibility.decode_top1"),
)
COLUMNS = (  # also in the table: name, report key
    ("causal legibility", "legibility.causal"),
    ("drop w/ other thoughts", "legibility.ablation_drop.other"),
)


def point_of(report: dict) -> dict | None:
    """(projection, lambda, seed, accuracy, legibility and its name, the other columns) of one
    evaluation of a coconut-train run; None when it has no legibility to plot (no thoughts)."""
    train = lookup(report, "config.train") or {}
    projection = lookup(train, "model.thought_projection")
    projection = projection.get("name") if isinstance(projection, dict) else projection or "identity"
    if lookup(report, "legibility.read") == "readout":  # coconut-eval legibility.read=readout: its own point
        projection += " (read by its readout)"
    measured = [(label, lookup(report, key)) for label, key in LEGIBILITY if lookup(report, key) is not None]
    if not measured:
        return None
    label, legibility = measured[0]
    return {
        "projection": projection,
        "weight": float(lookup(train, "legibility.weight") or 0.0),
        "seed": train.get("seed"),
        "accuracy": report["accuracy"],
        "legibility": legibility,
        "legibility_name": label,
        **{name: lookup(report, key) for name, key in COLUMNS},
    }


def _mean_std(values: list[float | None]) -> tuple[float | None, float]:
    values = [v for v in values if v is not None]
    if not values:
        return None, 0.0
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def frontier(points: list[dict]) -> list[dict]:
    """One row per (projection, lambda): the seeds' mean and sample std of each measure."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for point in points:
        groups.setdefault((point["projection"], point["weight"]), []).append(point)
    rows = []
    for (projection, weight), group in sorted(groups.items()):
        row = {"projection": projection, "weight": weight, "seeds": len(group)}
        row["legibility_name"] = group[0]["legibility_name"]
        for name in ("accuracy", "legibility", *(n for n, _ in COLUMNS)):
            row[name], row[name + "_std"] = _mean_std([p[name] for p in group])
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    def cell(row: dict, name: str) -> str:
        return "-" if row[name] is None else f"{row[name]:.3f} ± {row[name + '_std']:.3f}"

    names = ("accuracy", "legibility", *(n for n, _ in COLUMNS))
    legibility = rows[0]["legibility_name"] if rows else "legibility"
    lines = [
        "| projection | legibility.weight | seeds | accuracy | "
        + legibility
        + " | "
        + " | ".join(n for n, _ in COLUMNS)
        + " |",
        "|" + "---|" * (3 + len(names)),
    ]
    for row in rows:
        cells = " | ".join(cell(row, name) for name in names)
        lines.append(f"| {row['projection']} | {row['weight']:g} | {row['seeds']} | {cells} |")
    return "\n".join(lines)


def plot(rows: list[dict]):
    import matplotlib  # noqa: PLC0415 (plotting only here)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes = plt.subplots(figsize=(6, 4.5))
    for projection in dict.fromkeys(r["projection"] for r in rows):
        line = [r for r in rows if r["projection"] == projection]
        axes.errorbar(
            [r["legibility"] for r in line],
            [r["accuracy"] for r in line],
            xerr=[r["legibility_std"] for r in line],
            yerr=[r["accuracy_std"] for r in line],
            marker="o",
            capsize=3,
            label=projection,
        )
        for r in line:
            axes.annotate(
                f"λ={r['weight']:g}", (r["legibility"], r["accuracy"]), textcoords="offset points", xytext=(4, 4)
            )
    axes.set_xlabel(rows[0]["legibility_name"] if rows else "legibility")
    axes.set_ylabel("accuracy")
    axes.set_title("the legibility frontier (mean ± std over seeds)")
    axes.grid(alpha=0.3)
    axes.legend(title="thought projection")
    figure.tight_layout()
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="coconut-eval output folders, one per run")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    points = []
    for folder in args.folders:
        path = folder / "report.json"
        if not path.is_file():
            sys.exit(f"{folder}: no report.json; give folders written by coconut-eval")
        point = point_of(json.loads(path.read_text()))
        if point is None:
            print(f"{folder}: no legibility measured (no thoughts at its stage): left out", file=sys.stderr)
            continue
        points.append({**point, "folder": str(folder)})
    if not points:
        sys.exit("no evaluation with a legibility to plot")
    out = args.out or Path("outputs") / "frontier" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    out.mkdir(parents=True, exist_ok=True)
    rows = frontier(points)
    markdown = table(rows)
    (out / "frontier.md").write_text(markdown + "\n")
    (out / "frontier.json").write_text(json.dumps({"rows": rows, "points": points}, indent=2) + "\n")
    figure = plot(rows)
    figure.savefig(out / "legibility_frontier.png", dpi=120)

    from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415

    with SummaryWriter(str(out / "tensorboard")) as writer:
        writer.add_text("frontier/table", markdown, 0)
        writer.add_figure("frontier/accuracy_vs_legibility", figure, 0)
    print(markdown)
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
