"""An evaluation on disk: report.json (everything), report.md (the same as a table),
samples.jsonl (one line per question), and in TensorBoard the metrics as scalars (`eval/...`) and the
configuration as one hparams summary (HPARAMS tab), which coconut-train writes for its runs too."""

from __future__ import annotations

import json
from pathlib import Path

from coconut.eval.evaluator import Evaluation


def flatten(report: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested report as `a.b.c` keys (None and text left out)."""
    flat = {}
    for key, value in report.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        elif isinstance(value, bool | int | float) and value is not None:
            flat[name] = float(value)
    return flat


def flat_params(config: dict, prefix: str = "") -> dict[str, bool | int | float | str]:
    """A nested config as `a.b.c` keys (the override syntax) with values TensorBoard's hparams
    take: numbers, booleans and strings as they are, anything else (None, lists) as JSON text."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_params(value, name + "."))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=str)
    return flat


def write_hparams(log_dir: Path, params: dict, metric_names: list[str]) -> None:
    """One hparams summary (TensorBoard's HPARAMS tab) in `log_dir`: `params` (flat) and the names
    of scalars already logged there, whose last values the tab shows next to them."""
    from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 (slow import, only here)
    from torch.utils.tensorboard.summary import hparams  # noqa: PLC0415

    experiment, start, end = hparams(params, dict.fromkeys(sorted(metric_names), 0.0))
    with SummaryWriter(str(log_dir)) as writer:
        for summary in (experiment, start, end):
            writer.file_writer.add_summary(summary)


def markdown(report: dict) -> str:
    def cell(value) -> str:
        return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = [f"# Evaluation: {report.get('checkpoint', '')}", ""]
    meta = ("method", "dataset", "split", "stage", "n_thoughts")
    lines += [f"- {k}: {cell(report.get(k))}" for k in meta if k in report]
    lines += ["", "| metric | value |", "|---|---|"]
    for key, value in flatten({k: v for k, v in report.items() if k not in ("config", "stage", "n_thoughts")}).items():
        lines.append(f"| {key} | {cell(value)} |")
    missing = [k for k, v in report.get("legibility", {}).items() if v is None]
    if missing:
        names = ", ".join("legibility." + m for m in missing)
        lines += ["", f"n/a (nothing to measure for this model and data): {names}"]
    return "\n".join(lines) + "\n"


def write_evaluation(folder: Path, evaluation: Evaluation, samples_to_tensorboard: int = 8) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(evaluation.report, indent=2) + "\n")
    (folder / "report.md").write_text(markdown(evaluation.report))
    with open(folder / "samples.jsonl", "w") as out:
        for row in evaluation.rows:
            out.write(json.dumps(row) + "\n")
    from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 (slow import, only here)

    # The metrics as scalars; what was evaluated and how (the checkpoint, stage, thoughts, both
    # configs) as hparams, not as scalars.
    described = ("config", "stage", "n_thoughts", "checkpoint", "method", "dataset", "split")
    metrics = {
        "eval/" + key.replace(".", "/"): value
        for key, value in flatten({k: v for k, v in evaluation.report.items() if k not in described}).items()
    }
    with SummaryWriter(str(folder / "tensorboard")) as writer:
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, 0)
        shown = evaluation.rows[:samples_to_tensorboard]
        writer.add_text(
            "eval/samples",
            "\n\n".join(
                f"**Q:** {r['question']}  \n**generated:** `{r['generated']}`  \n**reference:** "
                f"{r['reference_answer']} ({'correct' if r['correct'] else 'wrong'})  \n**thoughts (top-5):** "
                f"{r['decoded_thoughts']}"
                for r in shown
            ),
            0,
        )
    report = evaluation.report
    params = flat_params({k: report.get(k) for k in described if k != "config"})
    params.update(flat_params(report.get("config", {})))  # eval.* and train.*
    write_hparams(folder / "tensorboard", params, list(metrics))
