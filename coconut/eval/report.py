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


# The accuracy a model must lose when its thoughts are swapped for another question's before its
# thoughts are said to carry the answer (the target of the quickstart's recipe).
CARRIED_DROP = 0.2


def thoughts_verdict(report: dict) -> str:
    """One line: did the thoughts carry the answer? Read from the ablation with another question's
    thoughts (the strictest: the thoughts stay thought-shaped, only their content changes)."""
    thoughts = report.get("tokens", {}).get("thoughts_mean") or 0
    drops = report.get("legibility", {}).get("ablation_drop") or {}
    if not thoughts:
        return "thoughts carried the answer: no thoughts at this stage (nothing to carry it)"
    if report.get("legibility", {}).get("measured") is False:
        return "thoughts carried the answer: not measured (legibility.measure=false; true measures it)"
    if "other" not in drops:
        return "thoughts carried the answer: not measured (run with legibility.ablations including other)"
    drop = drops["other"]
    before = report.get("accuracy_answered", report["accuracy"])  # the ablations run on the answered questions
    verdict = "yes" if drop >= CARRIED_DROP else "no"
    return (
        f"thoughts carried the answer: {verdict}: accuracy {before:.3f} -> {before - drop:.3f} (drop {drop:+.3f}) "
        f"with another question's thoughts; {CARRIED_DROP} or more counts as carrying it"
    )


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
    meta = ("method", "dataset", "split", "stage", "n_thoughts", "thoughts_per_question", "thoughts_from")
    lines += [f"- {k}: {cell(report.get(k))}" for k in meta if k in report]
    if "n_total" in report:
        lines.append(
            f"- questions: {report['n_total']}, answered {report['n']}, skipped {report['n_skipped']}; "
            "`accuracy` counts a skipped question as wrong, `accuracy_answered` leaves it out"
        )
        lines += [f"  - skipped {count}: {reason}" for reason, count in report.get("skipped", {}).items()]
    lines += ["", "| metric | value |", "|---|---|"]
    hidden = ("config", "stage", "n_thoughts", "thoughts_per_question", "skipped")
    for key, value in flatten({k: v for k, v in report.items() if k not in hidden}).items():
        lines.append(f"| {key} | {cell(value)} |")
    if report.get("legibility", {}).get("measured") is False:
        lines += ["", "legibility: not measured (legibility.measure=false, the default in a suite)"]
    missing = [k for k, v in report.get("legibility", {}).items() if v is None]
    if missing:
        names = ", ".join("legibility." + m for m in missing)
        lines += ["", f"n/a (nothing to measure for this model and data): {names}"]
    return "\n".join(lines) + "\n"


def _frontier_text(row: dict) -> str:
    """Graph questions: each thought's frontier scores beside its decoded tokens."""
    if not row.get("frontier"):
        return ""
    scores = ", ".join(
        f"depth {f['depth']}: top-k {f['topk']:.2f}, mass {f['mass']:.2f}"
        + (" (off the root's tree)" if f.get("off_tree") else "")
        for f in row["frontier"]
    )
    return f"  \n**frontier (per thought):** {scores}"


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
    # `skipped` counts questions by reason (its keys are reasons, not metrics).
    described = ("config", "stage", "n_thoughts", "checkpoint", "method", "dataset", "split", "skipped")
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
                f"{r['decoded_thoughts']}" + _frontier_text(r)
                for r in shown
            ),
            0,
        )
    report = evaluation.report
    params = flat_params({k: report.get(k) for k in described if k != "config"})
    params.update(flat_params(report.get("config", {})))  # eval.* and train.*
    write_hparams(folder / "tensorboard", params, list(metrics))
