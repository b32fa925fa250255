"""An evaluation's results, typed, and on disk: report.json (everything), report.md (the same as a
table), samples.jsonl (one line per question), and in TensorBoard the metrics as scalars (`eval/...`)
and the configuration as one hparams summary (HPARAMS tab), which coconut-train writes for its runs too.

Each pass of coconut/eval/evaluator.py returns one result below; `Report` holds them and writes the
report.json that scripts, the per-stage curve and the suite summary read:

    GenerationResult    accuracy, n, skipped, stage, tokens, latency        (always)
    LegibilityResult    decode, probe, reasoning, loss                      legibility.*
    FrontierResult      frontier legibility of graph questions              legibility.frontier_*
    AblationResult      accuracy with the thoughts replaced                 legibility.ablation*
    InterventionResult  causal legibility (edited thoughts)                 legibility.causal*
    SamplingResult      majority vote and pass@k                            sampling.*
    About               what was evaluated: checkpoint, method, data, configs
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass
class Tokens:
    generated_mean: float  # text tokens generated per answer, eos included
    thoughts_mean: float  # latent or pause positions per prompt
    forward_passes_mean: float


@dataclass
class Latency:
    seconds: float  # batched greedy generation only
    questions_per_second: float | None


@dataclass
class GenerationResult:
    """The generation pass: how many answers were right, and what they cost."""

    accuracy: float  # over every question of the split: a skipped one counts as wrong
    accuracy_answered: float  # over the n answered
    n_total: int
    n: int
    n_skipped: int
    skipped: dict[str, int]  # reason -> count
    stage: int
    tokens: Tokens
    latency: Latency


PER_QUESTION = {"per_question": True}  # a field's metadata: per-question data, kept out of report.json


@dataclass
class LegibilityResult:
    """The legibility pass (coconut/eval/legibility.py); None where a metric has no data."""

    decode_top1: float | None
    decode_top5: float | None
    decode_top1_chance: float | None
    decode_top5_chance: float | None
    probe: float | None
    probe_majority: float | None
    text_steps_correct: float | None
    reasoning: float | None
    loss: float | None
    loss_reference: str  # cot_model | reference_steps
    read: str  # lm_head | readout
    # Per question, for samples.jsonl and the later passes (not in report.json):
    questions: list = field(default_factory=list, repr=False, metadata=PER_QUESTION)  # QuestionReasoning
    thought_tokens: list = field(default_factory=list, repr=False, metadata=PER_QUESTION)  # top-k per thought
    per_question: list = field(default_factory=list, repr=False, metadata=PER_QUESTION)  # reasoning legibility

    def metrics(self) -> dict[str, Any]:
        """The report.json fields, in order."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.metadata.get("per_question")}


@dataclass
class FrontierResult:
    """The frontier pass (coconut/eval/frontier.py): `metrics` holds the `frontier_*` keys that the
    questions allowed (per depth, per position) and `text_hops_valid`; empty without graph questions."""

    metrics: dict[str, Any]
    rows: list[list] = field(default_factory=list, repr=False)  # per question, its ThoughtFrontier scores


@dataclass
class AblationResult:
    """The ablation pass: accuracy over the answered questions with the thoughts replaced."""

    accuracy: dict[str, float]  # ablation (zeros, mean, other) -> accuracy
    drop: dict[str, float]  # ablation -> accuracy_answered minus it


@dataclass
class InterventionResult:
    """The intervention pass (coconut/eval/intervention.py), None without any edit."""

    causal: float | None
    causal_baseline: float | None
    causal_changed: float | None
    causal_edits: int


@dataclass
class SamplingResult:
    """Sampled answers beside the greedy one (coconut/eval/sampling.py)."""

    temperature: float
    top_p: float
    num_samples: int
    majority_accuracy: float
    pass_at_k: dict[str, float]  # k (as text) -> pass@k
    tokens_per_question: float
    forward_passes_per_question: float
    samples_per_second: float | None


@dataclass
class About:
    """What was evaluated and how (set by coconut-eval, not by the passes)."""

    checkpoint: str
    checkpoint_kind: str
    method: str
    dataset: str
    split: str
    n_thoughts: int | None
    thoughts_per_question: int
    thoughts_from: str
    config: dict  # {"eval": ..., "train": ... or None}


@dataclass
class Report:
    """Every pass's result; a pass that did not run is None and named in `passes_skipped`."""

    generation: GenerationResult
    legibility: LegibilityResult | None = None
    frontier: FrontierResult | None = None
    ablation: AblationResult | None = None
    intervention: InterventionResult | None = None
    sampling: SamplingResult | None = None
    about: About | None = None
    passes_skipped: dict[str, str] = field(default_factory=dict)  # pass -> why it did not run
    # metric or pass -> why it does not apply to this method (CODI's thoughts follow no step)
    not_applicable: dict[str, str] = field(default_factory=dict)

    @property
    def legibility_measured(self) -> bool:
        return self.legibility is not None

    def to_dict(self) -> dict:
        """The report.json layout (keys and order as every reader of it expects)."""
        report = asdict(self.generation)
        block: dict[str, Any] = self.legibility.metrics() if self.legibility else {}
        block.update(self.frontier.metrics if self.frontier else {})
        block["measured"] = self.legibility_measured
        block["ablation"] = dict(self.ablation.accuracy) if self.ablation else {}
        block["ablation_drop"] = dict(self.ablation.drop) if self.ablation else {}
        block.update(asdict(self.intervention) if self.intervention else {})
        if self.not_applicable:
            block["not_applicable"] = dict(self.not_applicable)
        report["legibility"] = block
        if self.sampling:
            report["sampling"] = asdict(self.sampling)
        if self.about:
            report.update(asdict(self.about))
        return report

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_markdown(self) -> str:
        text = markdown(self.to_dict())
        if self.passes_skipped:
            text += "\npasses not run:\n" + "".join(f"- {p}: {why}\n" for p, why in self.passes_skipped.items())
        return text

    def scalars(self) -> dict[str, float]:
        """The metrics as TensorBoard tags (`eval/a/b`); what was evaluated goes to hparams instead."""
        report = self.to_dict()
        return {
            "eval/" + key.replace(".", "/"): value
            for key, value in flatten({k: v for k, v in report.items() if k not in DESCRIBED}).items()
        }

    def to_tensorboard(self, writer, step: int = 0) -> None:
        """The metrics as scalars through a SummaryWriter (`add_scalar`) or a Lightning logger (`log_metrics`)."""
        if hasattr(writer, "add_scalar"):
            for tag, value in self.scalars().items():
                writer.add_scalar(tag, value, step)
        else:
            writer.log_metrics(self.scalars(), step)


# What was evaluated and how (the checkpoint, stage, thoughts, both configs): hparams in
# TensorBoard, not scalars. `skipped` counts questions by reason (its keys are reasons, not metrics).
DESCRIBED = ("config", "stage", "n_thoughts", "checkpoint", "method", "dataset", "split", "skipped")


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
    not_applicable = report.get("legibility", {}).get("not_applicable", {})
    for why in dict.fromkeys(not_applicable.values()):
        names = ", ".join(k for k, w in not_applicable.items() if w == why)
        lines += ["", f"does not apply: {names}: {why}"]
    legibility = report.get("legibility", {})
    missing = [k for k, v in legibility.items() if v is None and f"legibility.{k}" not in not_applicable]
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


@dataclass
class Evaluation:
    report: Report
    rows: list[dict]  # one per question, for samples.jsonl


def write_evaluation(folder: Path, evaluation: Evaluation, samples_to_tensorboard: int = 8) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(evaluation.report.to_json())
    (folder / "report.md").write_text(evaluation.report.to_markdown())
    with open(folder / "samples.jsonl", "w") as out:
        for row in evaluation.rows:
            out.write(json.dumps(row) + "\n")
    from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 (slow import, only here)

    with SummaryWriter(str(folder / "tensorboard")) as writer:
        evaluation.report.to_tensorboard(writer)
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
    report = evaluation.report.to_dict()
    params = flat_params({k: report.get(k) for k in DESCRIBED if k != "config"})
    params.update(flat_params(report.get("config", {})))  # eval.* and train.*
    write_hparams(folder / "tensorboard", params, list(evaluation.report.scalars()))
