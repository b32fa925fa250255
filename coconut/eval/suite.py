"""One checkpoint on several benchmarks: the summary (markdown, CSV, JSON) of its per-benchmark
reports, and the thought count its prompts used.

    summary.md / summary.csv / summary.json    one row per benchmark: accuracy over every question
                                               (skipped ones count as wrong), n, tokens, forward
                                               passes, questions/second
    <benchmark>/report.json ...                each benchmark's full coconut-eval report

`scripts/compare.py` reads several summary.json files and prints methods x benchmarks.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from coconut.core.curriculum import Curriculum
from coconut.core.methods import Method
from coconut.data.sequences import prompt_thoughts

# (column, report key (dotted), markdown format): the summary's row for one benchmark.
COLUMNS = (
    ("benchmark", "dataset", "{}"),
    ("split", "split", "{}"),
    ("accuracy", "accuracy", "{:.3f}"),
    ("n_total", "n_total", "{}"),
    ("n_answered", "n", "{}"),
    ("n_skipped", "n_skipped", "{}"),
    ("accuracy_answered", "accuracy_answered", "{:.3f}"),
    ("thoughts", "tokens.thoughts_mean", "{:.1f}"),
    ("tokens", "tokens.generated_mean", "{:.1f}"),
    ("forward_passes", "tokens.forward_passes_mean", "{:.1f}"),
    ("questions_per_second", "latency.questions_per_second", "{:.1f}"),
)
SUMMARY_FILES = ("summary.md", "summary.csv", "summary.json")


def thoughts_used(method: Method, curriculum: Curriculum, stage: int, n_thoughts: int | None) -> dict:
    """The thought count every prompt of an evaluation holds, and where it comes from (for reports)."""
    if n_thoughts is not None:
        return {"thoughts_per_question": n_thoughts, "thoughts_from": "n_thoughts (set at evaluation)"}
    count = prompt_thoughts(method, curriculum, stage)
    if method.stage == "tokens" or method.thought == "none":
        origin = f"method {method.name} writes no thoughts"
    else:
        origin = (
            f"stage {method.stage_for(stage, curriculum.final_stage)}: min(stage, max_latent_stage="
            f"{curriculum.max_latent_stage}) x c={curriculum.c_thought}, the same for every question "
            "(never the reference steps)"
        )
    return {"thoughts_per_question": count, "thoughts_from": origin}


def lookup(report: dict, dotted: str):
    value = report
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def summary_row(report: dict) -> dict:
    row = {column: lookup(report, key) for column, key, _ in COLUMNS}
    row["skipped"] = report.get("skipped", {})
    return row


def summarize(reports: dict[str, dict]) -> dict:
    """benchmark -> report  ->  the summary: what was evaluated, and one row per benchmark."""
    first = next(iter(reports.values()))
    about = ("checkpoint", "method", "stage", "n_thoughts", "thoughts_per_question", "thoughts_from")
    return {
        **{key: first.get(key) for key in about},
        "accuracy_counts_skipped_as_wrong": True,
        "benchmarks": {name: summary_row(report) for name, report in reports.items()},
    }


def _cell(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def summary_markdown(summary: dict) -> str:
    lines = [
        f"# Benchmarks: {summary.get('checkpoint')}",
        "",
        f"- method {summary.get('method')}, stage {summary.get('stage')}, {summary.get('thoughts_per_question')} "
        f"thoughts per question ({summary.get('thoughts_from')})",
        "- accuracy: over every question of the split, a skipped one counted as wrong; accuracy_answered: over "
        "those answered",
        "",
        "| " + " | ".join(column for column, _, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in summary["benchmarks"].values():
        lines.append("| " + " | ".join(_cell(row[column], fmt) for column, _, fmt in COLUMNS) + " |")
    skips = [
        f"- {name}: {count} skipped: {reason}"
        for name, row in summary["benchmarks"].items()
        for reason, count in row["skipped"].items()
    ]
    if skips:
        lines += ["", "Skipped questions (counted as wrong in accuracy):", *skips]
    return "\n".join(lines) + "\n"


def write_summary(folder: Path, summary: dict) -> None:
    """summary.json (everything), summary.md (the table) and summary.csv (one row per benchmark)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (folder / "summary.md").write_text(summary_markdown(summary))
    with open(folder / "summary.csv", "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["checkpoint", "method", "stage", "thoughts_per_question", *(c for c, _, _ in COLUMNS)])
        head = [summary.get(k) for k in ("checkpoint", "method", "stage", "thoughts_per_question")]
        for row in summary["benchmarks"].values():
            writer.writerow([*head, *(row[c] for c, _, _ in COLUMNS)])
