"""Compare evaluations side by side, like Table 1 of the COCONUT paper: one row per coconut-eval
output folder (method, accuracy, tokens, forward passes, legibility), and accuracy against the
tokens spent per answer as a plot.

    python scripts/compare.py outputs/eval/runs/<a> outputs/eval/runs/<b> ... [--out DIR]
    python scripts/compare.py outputs/eval/multiruns/<time>/*          # a sweep's jobs
    python scripts/compare.py <suite a> <suite b> ...     # coconut-eval benchmarks=[...] / suite=math folders

Writes compare.md, compare.json and accuracy_vs_tokens.png into --out (default
outputs/compare/<time>/) and the table and plot to TensorBoard there; prints the table. Runs that
differ only in their seed (folders named `<name>-seed<k>` with the same method, projection and
stage, as scripts/compare_methods.sh writes them) are also summarised as mean ± std over seeds in
seeds.md, and the plot shows their means with error bars. Folders that
hold a summary.json (several benchmarks, one checkpoint) give one row per checkpoint and one column
per benchmark instead: the accuracy over every question (skipped ones count as wrong), with the
tokens per answer.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from datetime import datetime
from pathlib import Path

from coconut.eval.suite import lookup  # a dotted key of a nested report


def projection(report: dict) -> str | None:
    """The trained model's thought projection, with its parameters (`sparse_vocab k=4 softmax T=1.0`)."""
    config = lookup(report, "config.train.model.thought_projection")
    if config is None:
        return None
    if isinstance(config, str):
        return config
    if config.get("name") not in ("sparse_vocab", "sparse_readout"):
        return config.get("name")
    return f"{config['name']} k={config.get('k')} {config.get('mode')} T={config.get('temperature')}"


COLUMNS = [  # header, report key (dotted) or a function of the report, format
    ("method", "method", "{}"),
    ("thought projection", projection, "{}"),
    ("data", "dataset", "{}"),
    ("stage", "stage", "{}"),
    ("thoughts", "tokens.thoughts_mean", "{:.1f}"),
    ("accuracy", "accuracy", "{:.3f}"),
    ("tokens", "tokens.generated_mean", "{:.1f}"),
    ("forward passes", "tokens.forward_passes_mean", "{:.1f}"),
    ("decode top-1 (chance)", "legibility.decode_top1", "{:.2f}"),
    ("decode top-5 (chance)", "legibility.decode_top5", "{:.2f}"),
    ("probe (majority)", "legibility.probe", "{:.2f}"),
    ("written steps correct", "legibility.text_steps_correct", "{:.2f}"),
    ("legibility loss", "legibility.loss", "{:.2f}"),
    ("frontier top-k (chance)", "legibility.frontier_topk", "{:.2f}"),
    ("frontier top-k, best place in the hop (chance)", "legibility.frontier_topk_best_position", "{:.2f}"),
    ("frontier mass (chance)", "legibility.frontier_mass", "{:.2f}"),
    ("off the root's tree (chance)", "legibility.frontier_off_tree", "{:.2f}"),
    ("drop w/ other thoughts", "legibility.ablation_drop.other", "{:+.3f}"),
    ("causal legibility (baseline)", "legibility.causal", "{:.2f}"),
]
BASELINES = {
    "legibility.decode_top1": "legibility.decode_top1_chance",
    "legibility.decode_top5": "legibility.decode_top5_chance",
    "legibility.probe": "legibility.probe_majority",
    "legibility.frontier_topk": "legibility.frontier_topk_chance",
    "legibility.frontier_topk_best_position": "legibility.frontier_topk_best_position_chance",
    "legibility.frontier_mass": "legibility.frontier_mass_chance",
    "legibility.frontier_off_tree": "legibility.frontier_off_tree_chance",
    "legibility.causal": "legibility.causal_baseline",
}


def cell(report: dict, key, fmt: str) -> str:
    value = key(report) if callable(key) else lookup(report, key)
    if value is None:
        return "-"
    text = fmt.format(value)
    baseline = lookup(report, BASELINES[key]) if key in BASELINES else None
    return f"{text} ({fmt.format(baseline)})" if baseline is not None else text


def load_reports(folders: list[Path]) -> list[tuple[Path, dict]]:
    reports = []
    for folder in folders:
        path = folder / "report.json"
        if not path.is_file():
            sys.exit(f"{folder}: no report.json; give folders written by coconut-eval")
        reports.append((folder, json.loads(path.read_text())))
    return reports


def table(reports: list[tuple[Path, dict]]) -> str:
    header = "| run | " + " | ".join(h for h, _, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    for folder, report in reports:
        lines.append(f"| {folder.name} | " + " | ".join(cell(report, k, f) for _, k, f in COLUMNS) + " |")
    return "\n".join(lines)


SEED_SUFFIX = re.compile(r"-seed\d+$")
SEED_COLUMNS = [  # header, report key, format of mean and std
    ("accuracy", "accuracy", "{:.3f}"),
    ("tokens", "tokens.generated_mean", "{:.1f}"),
    ("forward passes", "tokens.forward_passes_mean", "{:.1f}"),
    ("decode top-1", "legibility.decode_top1", "{:.2f}"),
    ("frontier top-k", "legibility.frontier_topk", "{:.2f}"),
    ("frontier top-k, best place in the hop", "legibility.frontier_topk_best_position", "{:.2f}"),
    ("frontier mass", "legibility.frontier_mass", "{:.2f}"),
    ("off the root's tree", "legibility.frontier_off_tree", "{:.2f}"),
    ("drop w/ other thoughts", "legibility.ablation_drop.other", "{:+.3f}"),
    ("causal legibility", "legibility.causal", "{:.2f}"),
]


def seed_groups(reports: list[tuple[Path, dict]]) -> dict[tuple, list[dict]]:
    """Reports grouped by everything but the seed: (name without -seed<k>, method, projection, stage)."""
    groups: dict[tuple, list[dict]] = {}
    for folder, report in reports:
        key = (SEED_SUFFIX.sub("", folder.name), report.get("method"), projection(report), report.get("stage"))
        groups.setdefault(key, []).append(report)
    return groups


def mean_std(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(spread).lstrip('+')}"


def seeds_table(groups: dict[tuple, list[dict]]) -> str:
    """Mean ± std (sample std) over the seeds of each group; a column's chance level, where it has
    one, as the mean in brackets."""
    header = "| run | method | thought projection | stage | seeds | " + " | ".join(h for h, _, _ in SEED_COLUMNS) + " |"
    lines = [header, "|" + "---|" * (5 + len(SEED_COLUMNS))]
    for (name, method, thought_projection, stage), reports in groups.items():
        cells = []
        for _, key, fmt in SEED_COLUMNS:
            values = [v for v in (lookup(r, key) for r in reports) if v is not None]
            text = mean_std(values, fmt)
            chances = [v for v in (lookup(r, BASELINES.get(key, "")) for r in reports) if v is not None]
            cells.append(f"{text} ({fmt.format(statistics.mean(chances)).lstrip('+')})" if chances and values else text)
        about = [name, method, thought_projection, stage, len(reports)]
        lines.append("| " + " | ".join("-" if v is None else str(v) for v in about) + " | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(reports: list[tuple[Path, dict]]):
    import matplotlib  # noqa: PLC0415 (plotting only here)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes = plt.subplots(figsize=(6, 4))
    groups = seed_groups(reports)
    methods = [method for _, method, _, _ in groups]
    for (name, method, _, stage), group in groups.items():
        tokens = [lookup(r, "tokens.generated_mean") or 0.0 for r in group]
        accuracy = [r["accuracy"] for r in group]
        spread = statistics.stdev(accuracy) if len(group) > 1 else 0.0
        x, y = statistics.mean(tokens), statistics.mean(accuracy)
        seeds = f", {len(group)} seeds" if len(group) > 1 else ""
        # The run's name where two runs share a method (COCONUT with and without an objective).
        label = name if not method or methods.count(method) > 1 else method
        # A legend, not labels beside the points: methods at chance sit on top of each other.
        axes.errorbar(x, y, yerr=spread, fmt="o", capsize=3, label=f"{label} (stage {stage}{seeds})")
    axes.legend(fontsize="small", loc="best")
    axes.set_xlabel("generated tokens per answer")
    axes.set_ylabel("accuracy")
    axes.set_title("accuracy vs tokens")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def load_summaries(folders: list[Path]) -> list[tuple[Path, dict]] | None:
    """(folder, summary.json) for folders written by `coconut-eval benchmarks=[...]`; None when none
    is such a folder; an exit when only some are."""
    found = [(folder, folder / "summary.json") for folder in folders]
    if not any(path.is_file() for _, path in found):
        return None
    lacking = [str(folder) for folder, path in found if not path.is_file()]
    if lacking:
        sys.exit(
            f"{', '.join(lacking)}: no summary.json, while the other folders hold one; give only folders "
            "written by coconut-eval benchmarks=[...] (or only single evaluations)"
        )
    return [(folder, json.loads(path.read_text())) for folder, path in found]


def benchmark_cell(row: dict | None) -> str:
    if row is None:
        return "-"
    tokens = f", {row['tokens']:.1f} tok" if row.get("tokens") is not None else ""
    return f"{row['accuracy']:.3f} (n={row['n_total']}{tokens})"


def benchmark_table(summaries: list[tuple[Path, dict]]) -> str:
    """Methods x benchmarks: accuracy over every question (n), and generated tokens per answer."""
    benchmarks = list(dict.fromkeys(name for _, s in summaries for name in s["benchmarks"]))
    header = "| run | method | stage | thoughts | " + " | ".join(benchmarks) + " |"
    lines = [header, "|" + "---|" * (4 + len(benchmarks))]
    for folder, summary in summaries:
        cells = [benchmark_cell(summary["benchmarks"].get(name)) for name in benchmarks]
        about = [summary.get("method"), summary.get("stage"), summary.get("thoughts_per_question")]
        lines.append(
            f"| {folder.name} | "
            + " | ".join("-" if v is None else str(v) for v in about)
            + " | "
            + " | ".join(cells)
            + " |"
        )
    lines += [
        "",
        "accuracy over every question of each benchmark (a skipped one counts as wrong); "
        "tok: generated tokens per answer",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="coconut-eval output folders")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path("outputs") / "compare" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    summaries = load_summaries(args.folders)
    if summaries is not None:
        out.mkdir(parents=True, exist_ok=True)
        markdown = benchmark_table(summaries)
        (out / "compare.md").write_text(markdown + "\n")
        (out / "compare.json").write_text(json.dumps({str(f): s for f, s in summaries}, indent=2) + "\n")
        print(markdown)
        print(f"\nwritten to {out}")
        return
    reports = load_reports(args.folders)
    out.mkdir(parents=True, exist_ok=True)
    markdown = table(reports)
    (out / "compare.md").write_text(markdown + "\n")
    groups = seed_groups(reports)
    if any(len(group) > 1 for group in groups.values()):
        over_seeds = seeds_table(groups)
        (out / "seeds.md").write_text(over_seeds + "\n")
        markdown += "\n\nmean ± std over seeds (chance in brackets):\n\n" + over_seeds
    (out / "compare.json").write_text(json.dumps({str(f): r for f, r in reports}, indent=2) + "\n")
    figure = plot(reports)
    figure.savefig(out / "accuracy_vs_tokens.png", dpi=120)

    from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415

    with SummaryWriter(str(out / "tensorboard")) as writer:
        writer.add_text("compare/table", markdown, 0)
        writer.add_figure("compare/accuracy_vs_tokens", figure, 0)
    print(markdown)
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
