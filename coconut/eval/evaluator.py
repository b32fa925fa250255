"""Answers -> metrics: accuracy, token efficiency and legibility of one model on one set of prompts.

`answer_batch` is one batch of batched greedy generation through thoughts (shared with validation
in the LightningModule). `evaluate` runs the passes over a split:

    generation_pass    every question answered, its thoughts recorded   -> GenerationRecord
    generation_result  accuracy, tokens, speed                          -> GenerationResult
    legibility_pass    the recorded thoughts read and probed            -> LegibilityResult
    frontier_pass      graph questions: the thoughts against the frontier -> FrontierResult
    ablation_pass      the prompts rerun with the thoughts replaced     -> AblationResult
    intervention_pass  single steps' thoughts edited (coconut/eval/intervention.py) -> InterventionResult

and returns a `Report` (coconut/eval/report.py) and one row per question. A method whose thoughts
stand for no particular step (CODI's fixed thoughts, `Method.thoughts_follow_steps`) gets no
step-wise metric, frontier or intervention: the report names them under `not_applicable` with why;
its ablations and decoded thoughts are measured as any method's. A pass that generates
calls an `Answerer`: a loop over the prompt batches here, or Lightning over several devices
(coconut/training/predict.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from coconut.core.colar import latent_counts
from coconut.core.curriculum import Curriculum
from coconut.core.generation import generate
from coconut.core.legibility_objective import check_read
from coconut.core.methods import Method
from coconut.core.model import ContinuousThoughtLM, ThoughtHook
from coconut.data.collate import collate_prompts
from coconut.data.graph import parse_graph
from coconut.data.prosqa import decode_answer
from coconut.data.records import Record
from coconut.data.sequences import stage_plan
from coconut.eval import legibility as leg
from coconut.eval.answers import answers_match, extract_answer
from coconut.eval.frontier import ThoughtFrontier, frontier_legibility, hops_valid
from coconut.eval.intervention import causal_block, plan_edits
from coconut.eval.report import (
    AblationResult,
    Evaluation,
    FrontierResult,
    GenerationResult,
    InterventionResult,
    Latency,
    LegibilityResult,
    Report,
    Tokens,
)
from coconut.eval.steps import step_key, written_steps
from coconut.eval.thought_hooks import ThoughtEdit, ThoughtRecorder, ThoughtReplacement

ABLATIONS = ("zeros", "mean", "other")
# The legibility metrics that read thought j against replaced step j // c.
STEP_METRICS = (
    "decode_top1", "decode_top5", "decode_top1_chance", "decode_top5_chance", "probe", "probe_majority",
    "reasoning", "loss",
)  # fmt: skip


def no_step_alignment(method: Method) -> str:
    """Why the step-wise metrics do not apply to `method`'s thoughts."""
    if method.colar:
        return (
            f"method={method.name}: each latent compresses c consecutive tokens of the chain of thought "
            "(CoLaR), wherever the steps break, and their number is the model's choice: no latent stands "
            "for step j // c"
        )
    return (
        f"method={method.name} writes a fixed {method.num_latent} thoughts with no curriculum that makes thought j "
        "stand for step j // c: there is no step for a thought to be read against"
    )


@dataclass
class Answer:
    index: int  # into the evaluated records
    text: str
    prediction: str
    correct: bool
    emitted: int  # text tokens generated, eos included
    forward_passes: int
    thought_positions: int  # latent or pause positions in the prompt
    thoughts: torch.Tensor  # (n, D) the continuous thoughts fed, float32 on CPU (empty if not recorded)
    # (n, D) the hidden states they were projected from, as `thoughts` (what legibility read=readout reads)
    sources: torch.Tensor = field(default_factory=lambda: torch.empty(0))


@torch.no_grad()
def with_colar_latents(model: ContinuousThoughtLM, batch: dict) -> dict:
    """A CoLaR prompt batch (question, speed, <|start-latent|>) with each row's latents, as many as
    the model chooses (coconut/core/colar.py `latent_counts`), and <|end-latent|> appended: generating
    from it feeds the same latents (the head's mean, one after another) and reads the answer after them,
    so that recording, ablations and the forward-pass count work as for COCONUT's thoughts."""
    counts = latent_counts(model, batch, batch["colar_end"], batch["colar_max"])
    rows = [row[mask.bool()].tolist() for row, mask in zip(batch["input_ids"], batch["attention_mask"])]
    prompts = [row + [model.latent_token_id] * n + [batch["colar_end"]] for row, n in zip(rows, counts)]
    grown = collate_prompts(prompts, batch["colar_end"])  # the pad id is masked: any non-thought token will do
    grown = {k: v.to(batch["input_ids"].device) for k, v in grown.items()}
    return {**{k: v for k, v in batch.items() if k not in ("colar_end", "colar_max")}, **grown}


def prepared(model: ContinuousThoughtLM, batch: dict) -> dict:
    """A prompt batch as thought hooks and generation read it: a CoLaR batch with its latents grown
    (once, so that a hook made for the batch sees the columns generation feeds); others as they are."""
    return with_colar_latents(model, batch) if "colar_end" in batch else batch


def answer_batch(
    model: ContinuousThoughtLM,
    tokenizer: PreTrainedTokenizerBase,
    batch: dict,
    records: Sequence[Record],
    *,
    answer_kind: str,
    max_new_tokens: int,
    thought_ids: Sequence[int],
    thought_hook: ThoughtHook | None = None,
    record_thoughts: bool = True,
) -> list[Answer]:
    """Generates answers for one prompt batch; without `thought_hook` and with `record_thoughts`,
    records the thoughts fed (what legibility and the ablations read)."""
    batch = prepared(model, batch)  # CoLaR: the latents the model chooses, then the prompt as COCONUT's
    recorder = None
    if thought_hook is None and record_thoughts:
        recorder = ThoughtRecorder(batch["input_ids"], model.latent_token_id, projection=model.thought_projection)
    try:
        out = generate(
            model,
            batch["input_ids"],
            batch["attention_mask"],
            batch["position_ids"],
            eos_token_id=tokenizer.eos_token_id,
            max_new_tokens=max_new_tokens,
            thought_hook=recorder or thought_hook,
        )
    finally:
        if recorder:
            recorder.close()
    thoughts = recorder.per_row() if recorder else [torch.empty(0)] * len(out.tokens)
    sources = recorder.sources_per_row() if recorder else [torch.empty(0)] * len(out.tokens)
    thought_id_tensor = torch.tensor(list(thought_ids), device=batch["input_ids"].device)
    positions = torch.isin(batch["input_ids"], thought_id_tensor).sum(1).tolist()
    answers = []
    for row, index in enumerate(batch["index"]):
        text = tokenizer.decode(out.tokens[row], skip_special_tokens=True)
        prediction = extract_answer(text)
        answers.append(
            Answer(
                index=index,
                text=text,
                prediction=prediction,
                correct=answers_match(prediction, records[index].answer, answer_kind),
                emitted=out.emitted[row],
                forward_passes=out.forward_passes[row],
                thought_positions=positions[row],
                thoughts=thoughts[row],
                sources=sources[row],
            )
        )
    return answers


def answer_all(
    model: ContinuousThoughtLM,
    tokenizer: PreTrainedTokenizerBase,
    loader: DataLoader,
    records: Sequence[Record],
    make_hook: Callable[[dict], ThoughtHook] | None = None,
    **kwargs,
) -> tuple[list[Answer], float]:
    """Every prompt of `loader` answered, and the seconds generation took."""
    device = next(model.parameters()).device
    answers, seconds = [], 0.0
    for batch in loader:
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        start = time.perf_counter()
        batch = prepared(model, batch)  # CoLaR's latent count is part of generating (timed)
        grown = time.perf_counter() - start
        hook = make_hook(batch) if make_hook else None
        start = time.perf_counter()
        answers += answer_batch(model, tokenizer, batch, records, thought_hook=hook, **kwargs)
        seconds += time.perf_counter() - start + grown
    return answers, seconds


class Answerer(Protocol):
    """One generation pass over every question: `make_hook(batch)` edits the thoughts (None: as the
    model computes them), `record_thoughts` keeps them. Returns the answers in index order and the
    seconds generation took. `loader_answerer` runs it in this process; coconut/training/predict.py
    splits it over devices with Lightning."""

    def __call__(
        self, make_hook: Callable[[dict], ThoughtHook] | None = None, record_thoughts: bool = False
    ) -> tuple[list[Answer], float]: ...


def loader_answerer(
    model: ContinuousThoughtLM,
    tokenizer: PreTrainedTokenizerBase,
    loader: DataLoader,
    records: Sequence[Record],
    **options,
) -> Answerer:
    """Every batch of `loader` in this process (`options`: answer_batch's answer_kind, max_new_tokens, thought_ids)."""

    def answer(make_hook=None, record_thoughts=False):
        return answer_all(model, tokenizer, loader, records, make_hook, record_thoughts=record_thoughts, **options)

    return answer


def thought_reading(model: ContinuousThoughtLM, read: str = "lm_head") -> tuple[Callable, Callable]:
    """How a thought is read, as (the vectors of an Answer to read, vectors (n, D) -> logits (n, V)).

    `lm_head`: the LM head on the thought fed (the logit lens). `readout`: the `sparse_readout`
    projection's readout R on the hidden state the thought was projected from, the distribution its
    top-k tokens are drawn from, so a thought reads as exactly the tokens it is a mixture of (the
    logit lens of a mixture of input embeddings reads them back only where the LM head is tied to
    them; the Llama presets' is not) and as `legibility.read=readout` trained it."""
    check_read(read, model.thought_projection)
    weight = next(model.parameters())

    def on_model(vectors: torch.Tensor) -> torch.Tensor:
        return vectors.to(device=weight.device, dtype=weight.dtype)

    if read == "readout":
        return (lambda a: a.sources), lambda h: model.thought_projection.readout_logits(on_model(h))
    return (lambda a: a.thoughts), lambda t: model.logits(on_model(t))


@torch.no_grad()
def read_thoughts(
    model: ContinuousThoughtLM,
    tokenizer: PreTrainedTokenizerBase,
    answer: Answer,
    k: int = leg.TOP_K,
    read: str = "lm_head",
) -> list[list[str]]:
    """The top-k tokens of each of `answer`'s thoughts as `read` reads them (`thought_reading`),
    decoded and stripped."""
    vectors_of, logits_of = thought_reading(model, read)
    vectors = vectors_of(answer)
    if vectors.numel() == 0:
        return []
    top = logits_of(vectors).topk(k, dim=-1).indices  # (n, k)
    return [[tokenizer.decode([i]).strip() for i in row] for row in top.tolist()]


def reasoning_of(
    answers: Sequence[Answer],
    records: Sequence[Record],
    thought_tokens: Sequence[list[list[str]]],
    *,
    method: Method,
    curriculum: Curriculum,
    stage: int,
) -> list[leg.QuestionReasoning]:
    questions = []
    for answer, tokens in zip(answers, thought_tokens):
        steps = records[answer.index].steps
        questions.append(
            leg.QuestionReasoning(
                reference_steps=list(steps),
                # The final stage drops "all steps" (a sentinel larger than any chain).
                steps_replaced=min(stage_plan(method, curriculum, stage, len(steps)).steps_dropped, len(steps)),
                latents_per_step=curriculum.c_thought,
                thought_tokens=tokens,
                written=written_steps(answer.text),
            )
        )
    return questions


def legibility_block(
    questions: Sequence[leg.QuestionReasoning],
    answers: Sequence[Answer],
    key_tokens: leg.KeyTokens,
    *,
    probe_folds: int = 5,
    reference: Sequence[float | None] | None = None,
) -> dict:
    """The `legibility` metrics (see coconut.eval.legibility), None where a metric has no data."""
    per_question = [leg.reasoning_legibility(q, key_tokens) for q in questions]
    # With no CoT evaluation to compare with, the reference is the reference chain itself: all legible.
    reference = reference if reference is not None else [1.0 if s is not None else None for s in per_question]
    vectors, labels, groups = [], [], []
    for g, (q, a) in enumerate(zip(questions, answers)):
        for i in q.decodable_steps:
            for thought in a.thoughts[i * q.latents_per_step : (i + 1) * q.latents_per_step]:
                vectors.append(thought)
                labels.append(step_key(q.reference_steps[i]))
                groups.append(g)
    probe, majority = (
        leg.probe_accuracy(torch.stack(vectors), labels, groups, folds=probe_folds) if vectors else (None, None)
    )
    scored = [s for s in per_question if s is not None]
    return {
        "decode_top1": leg.decode_accuracy(questions, key_tokens, 1),
        "decode_top5": leg.decode_accuracy(questions, key_tokens, 5),
        "decode_top1_chance": leg.decode_chance(questions, key_tokens, 1),
        "decode_top5_chance": leg.decode_chance(questions, key_tokens, 5),
        "probe": probe,
        "probe_majority": majority,
        "text_steps_correct": leg.text_steps_correct(questions),
        "reasoning": sum(scored) / len(scored) if scored else None,
        "loss": leg.legibility_loss(per_question, reference),
    }, per_question


def graph_frontiers(
    model: ContinuousThoughtLM,
    tokenizer: PreTrainedTokenizerBase,
    answers: Sequence[Answer],
    records: Sequence[Record],
    questions: Sequence[leg.QuestionReasoning],
    read: str = "lm_head",
) -> tuple[dict, list[list[ThoughtFrontier]]]:
    """Frontier legibility (coconut.eval.frontier) of the graph questions among `records`, each
    thought read as `read` says (`thought_reading`); ({}, []) when none is a graph question."""
    graphs = [parse_graph(records[a.index].question) for a in answers]
    if not any(graphs) or not questions:
        return {}, [[] for _ in answers]
    vectors_of, logits_of = thought_reading(model, read)
    block, rows = frontier_legibility(
        logits_of,
        [vectors_of(a) for a in answers],
        graphs,
        [q.steps_replaced for q in questions],
        latents_per_step=questions[0].latents_per_step,
        tokenizer=tokenizer,
    )
    # Written hops after the thoughts continue from the last replaced step's node (the reference's).
    checks = [
        valid
        for graph, q in zip(graphs, questions)
        if graph is not None
        for valid in hops_valid(graph, q.written, start=_reached(q))
    ]
    if checks:
        block["text_hops_valid"] = sum(checks) / len(checks)
    return block, rows


def _reached(q: leg.QuestionReasoning) -> str | None:
    """The node the replaced steps reached, from the reference (None: no step replaced, the root)."""
    if not q.steps_replaced or q.steps_replaced > len(q.reference_steps):
        return None
    nodes = q.reference_steps[q.steps_replaced - 1].split()
    return nodes[-1] if nodes else None


def ablation_hooks(
    answers: Sequence[Answer], latent_id: int, seed: int = 0
) -> dict[str, Callable[[dict], ThoughtHook]]:
    """Per ablation, a factory of hooks that replace each question's thoughts: with zeros, with the
    mean thought of the evaluated set, or with another question's thoughts (a fixed derangement)."""
    recorded = {a.index: a.thoughts for a in answers}
    everything = [t for t in recorded.values() if t.numel()]
    if not everything:
        return {}
    mean = torch.cat(everything).mean(0)  # (D,)
    order = sorted(recorded)
    shuffled = [order[i] for i in torch.randperm(len(order), generator=torch.Generator().manual_seed(seed)).tolist()]
    partner = {shuffled[j]: shuffled[(j + 1) % len(shuffled)] for j in range(len(shuffled))}

    def factory(source: Callable[[int], torch.Tensor]) -> Callable[[dict], ThoughtHook]:
        def make(batch: dict) -> ThoughtHook:
            device = batch["input_ids"].device
            rows = [source(i).to(device) for i in batch["index"]]
            return ThoughtReplacement(batch["input_ids"], latent_id, rows, mean.to(device))

        return make

    return {
        "zeros": factory(lambda i: torch.zeros(len(recorded[i]), mean.shape[0])),
        "mean": factory(lambda i: mean.expand(len(recorded[i]), -1)),
        "other": factory(lambda i: recorded[partner[i]]),
    }


def causal_legibility(
    model: ContinuousThoughtLM,
    tokenizer: PreTrainedTokenizerBase,
    answer: Answerer,
    records: Sequence[Record],
    answers: Sequence[Answer],
    questions: Sequence[leg.QuestionReasoning],
    *,
    answer_kind: str,
    seed: int = 0,
) -> dict:
    """The `causal*` block (coconut/eval/intervention.py): each replaced step's thoughts edited to
    another key content, one generation pass per step index."""
    c = questions[0].latents_per_step if questions else 1
    # Steps with thoughts: the final stage replaces every step but caps the thoughts.
    replaced = [min(q.steps_replaced, a.thought_positions // c) for q, a in zip(questions, answers)]
    device = next(model.parameters()).device

    def embed(ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return model.embed(torch.tensor(ids, device=device))  # (n, D)

    edits = plan_edits(records, [a.index for a in answers], replaced, tokenizer, embed, seed=seed)

    def answers_with(step: int, vectors: dict[int, torch.Tensor]) -> dict[int, str]:
        def make(batch: dict) -> ThoughtHook:
            rows = {
                row: (range(step * c, (step + 1) * c), vectors[index])
                for row, index in enumerate(batch["index"])
                if index in vectors
            }
            return ThoughtEdit(batch["input_ids"], model.latent_token_id, rows)

        edited, _ = answer(make_hook=make)
        return {a.index: a.prediction for a in edited}

    return causal_block(
        edits,
        answers_with,
        {a.index: a.prediction for a in answers},
        lambda prediction, implied: answers_match(prediction, implied, answer_kind),
    )


# -- the passes: generation first, then each measurement over its GenerationRecord ----------------


@dataclass
class GenerationRecord:
    """What the generation pass leaves for the later passes: the evaluated records and the greedy
    answers in index order, each with the thoughts it was fed (when recorded)."""

    records: Sequence[Record]
    answers: list[Answer]
    seconds: float  # generation time


def not_applicable(report: Report, why: str) -> None:
    """The step-wise legibility metrics, the frontier and the interventions marked as not applying
    (`why`) and left None; the decoded thoughts and the ablations stay."""
    report.legibility = replace(
        report.legibility, **dict.fromkeys(STEP_METRICS), per_question=[None] * len(report.legibility.per_question)
    )
    report.not_applicable = {f"legibility.{name}": why for name in STEP_METRICS}
    report.not_applicable.update(frontier=why, intervention=why)


def generation_pass(answer: Answerer, records: Sequence[Record], *, record_thoughts: bool) -> GenerationRecord:
    """Every question answered greedily, its thoughts recorded for legibility and the ablations."""
    answers, seconds = answer(record_thoughts=record_thoughts)
    if not answers:
        raise ValueError("nothing to evaluate: the split has no records")
    return GenerationRecord(records, answers, seconds)


def generation_result(generated: GenerationRecord, skipped: Mapping[str, int] | None, stage: int) -> GenerationResult:
    """Accuracy, tokens and speed. `skipped` counts, by reason, the split's questions that were not
    answered: `accuracy` counts them as wrong (over `n_total`), `accuracy_answered` leaves them out."""
    answers, n, seconds = generated.answers, len(generated.answers), generated.seconds
    correct = sum(a.correct for a in answers)
    skipped = {reason: count for reason, count in (skipped or {}).items() if count}
    n_skipped = sum(skipped.values())
    return GenerationResult(
        accuracy=correct / (n + n_skipped),
        accuracy_answered=correct / n,
        n_total=n + n_skipped,
        n=n,
        n_skipped=n_skipped,
        skipped=skipped,
        stage=stage,
        tokens=Tokens(
            generated_mean=sum(a.emitted for a in answers) / n,
            thoughts_mean=sum(a.thought_positions for a in answers) / n,
            forward_passes_mean=sum(a.forward_passes for a in answers) / n,
        ),
        latency=Latency(seconds=seconds, questions_per_second=n / seconds if seconds > 0 else None),
    )


def legibility_pass(
    model: ContinuousThoughtLM,
    tokenizer: PreTrainedTokenizerBase,
    generated: GenerationRecord,
    *,
    method: Method,
    curriculum: Curriculum,
    stage: int,
    probe_folds: int = 5,
    reference_legibility: Mapping[str, float] | None = None,
    read: str = "lm_head",
) -> LegibilityResult:
    """Decode, probe, reasoning and loss of the recorded thoughts (`legibility_block`).
    `reference_legibility` maps a question to the legibility of a CoT model's reasoning on it (from
    that model's samples.jsonl), the baseline of `loss`; None: the reference chain."""
    answers, records = generated.answers, generated.records
    thought_tokens = [read_thoughts(model, tokenizer, a, read=read) for a in answers]
    questions = reasoning_of(answers, records, thought_tokens, method=method, curriculum=curriculum, stage=stage)
    reference = None
    if reference_legibility is not None:
        reference = [reference_legibility.get(records[a.index].question) for a in answers]
    block, per_question = legibility_block(
        questions, answers, leg.key_tokens_for(tokenizer), probe_folds=probe_folds, reference=reference
    )
    return LegibilityResult(
        **block,
        loss_reference="cot_model" if reference is not None else "reference_steps",
        read=read,
        questions=questions,
        thought_tokens=thought_tokens,
        per_question=per_question,
    )


def frontier_pass(
    model: ContinuousThoughtLM,
    tokenizer: PreTrainedTokenizerBase,
    generated: GenerationRecord,
    legibility: LegibilityResult,
) -> FrontierResult:
    """Frontier legibility of the graph questions (`graph_frontiers`), read as `legibility.read`."""
    metrics, rows = graph_frontiers(
        model, tokenizer, generated.answers, generated.records, legibility.questions, read=legibility.read
    )
    return FrontierResult(metrics, rows)


def ablation_pass(
    answer: Answerer, generated: GenerationRecord, accuracy_answered: float, ablations: Sequence[str], latent_id: int
) -> AblationResult:
    """Accuracy with the thoughts replaced, one generation pass per ablation (in ABLATIONS order);
    empty when no question has thoughts."""
    result = AblationResult({}, {})
    for name, make_hook in ablation_hooks(generated.answers, latent_id).items():
        if name in ablations:
            ablated, _ = answer(make_hook=make_hook)
            result.accuracy[name] = sum(a.correct for a in ablated) / len(generated.answers)
            result.drop[name] = accuracy_answered - result.accuracy[name]
    return result


def intervention_pass(
    model: ContinuousThoughtLM,
    tokenizer: PreTrainedTokenizerBase,
    answer: Answerer,
    generated: GenerationRecord,
    legibility: LegibilityResult,
    *,
    answer_kind: str,
) -> InterventionResult:
    """Causal legibility (`causal_legibility`): a generation pass per replaced step index."""
    block = causal_legibility(
        model, tokenizer, answer, generated.records, generated.answers, legibility.questions, answer_kind=answer_kind
    )
    return InterventionResult(**block)


def sample_rows(
    generated: GenerationRecord, legibility: LegibilityResult | None, frontier: FrontierResult | None
) -> list[dict]:
    """One row per question for samples.jsonl: the answer, and what the legibility passes read."""
    rows = []
    for i, answer in enumerate(generated.answers):
        record = generated.records[answer.index]
        question = legibility.questions[i] if legibility else None
        rows.append(
            {
                "question": record.question,
                "reference_steps": list(record.steps),
                "reference_answer": record.answer,
                "generated": answer.text,
                "prediction": answer.prediction,
                "correct": answer.correct,
                "steps_replaced": question.steps_replaced if question else None,
                "written_steps": question.written if question else None,
                "decoded_thoughts": legibility.thought_tokens[i] if legibility else None,
                "legibility": legibility.per_question[i] if legibility else None,
                **({"frontier": [_frontier_row(f) for f in frontier.rows[i]]} if frontier and frontier.metrics else {}),
                **(
                    {  # a re-encoded record (ProsQA's compact encoding): both answers as the published file writes them
                        "prediction_as_published": decode_answer(record.published, answer.prediction),
                        "reference_as_published": decode_answer(record.published, record.answer),
                    }
                    if record.published
                    else {}
                ),
                "tokens_generated": answer.emitted,
                "thoughts": answer.thought_positions,
                "forward_passes": answer.forward_passes,
            }
        )
    return rows


def _frontier_row(score: ThoughtFrontier) -> dict:
    return {key: getattr(score, key) for key in ("depth", "position", "topk", "mass", "off_tree")}


def evaluate(
    model: ContinuousThoughtLM,
    tokenizer: PreTrainedTokenizerBase,
    loader: DataLoader | None,
    records: Sequence[Record],
    *,
    method: Method,
    curriculum: Curriculum,
    stage: int,
    answer_kind: str,
    max_new_tokens: int,
    thought_ids: Sequence[int],
    ablations: Sequence[str] = ABLATIONS,
    probe_folds: int = 5,
    reference_legibility: Mapping[str, float] | None = None,
    skipped: Mapping[str, int] | None = None,
    intervention: bool = True,
    read: str = "lm_head",
    legibility: bool = True,
    answerer: Answerer | None = None,
) -> Evaluation:
    """The passes in order: generation, then (with `legibility`) legibility, frontier, ablations
    (`ablations`) and interventions (`intervention`); a pass not asked for is named in the report's
    `passes_skipped`. `answerer`: how a generation pass runs (default: `loader` in this process).
    The other arguments are the passes' (`legibility_pass`, `generation_result`, ...); `read` is
    checked against the model before anything is generated."""
    check_read(read, model.thought_projection)  # before any generation
    unknown = set(ablations) - set(ABLATIONS)
    if unknown:
        raise ValueError(f"unknown ablations {sorted(unknown)}; choose from {list(ABLATIONS)}")
    model.eval()
    options = {"answer_kind": answer_kind, "max_new_tokens": max_new_tokens, "thought_ids": thought_ids}
    answer = answerer or loader_answerer(model, tokenizer, loader, records, **options)
    generated = generation_pass(answer, records, record_thoughts=legibility)
    report = Report(generation_result(generated, skipped, stage))
    if not legibility:  # legibility.measure=false (a suite's default): accuracy, tokens and time only
        why = "legibility.measure=false"
        report.passes_skipped = dict.fromkeys(("legibility", "frontier", "ablation", "intervention"), why)
        return Evaluation(report, sample_rows(generated, None, None))
    report.legibility = legibility_pass(
        model, tokenizer, generated, method=method, curriculum=curriculum, stage=stage, probe_folds=probe_folds,
        reference_legibility=reference_legibility, read=read,
    )  # fmt: skip
    step_passes(report, model, tokenizer, answer, generated, method, answer_kind, intervention)
    if ablations:
        accuracy = report.generation.accuracy_answered
        report.ablation = ablation_pass(answer, generated, accuracy, ablations, model.latent_token_id)
    else:
        report.passes_skipped["ablation"] = "legibility.ablations=[]"
    return Evaluation(report, sample_rows(generated, report.legibility, report.frontier))


def step_passes(report: Report, model, tokenizer, answer, generated, method, answer_kind, intervention) -> None:
    """The passes that read a thought against the step it stands for (frontier, interventions); for
    a method whose thoughts follow no step (CODI, CoLaR), the report says they do not apply."""
    if not method.thoughts_follow_steps:
        not_applicable(report, no_step_alignment(method))
        if not intervention:
            report.passes_skipped["intervention"] = "legibility.intervention=false"
        return
    report.frontier = frontier_pass(model, tokenizer, generated, report.legibility)
    if not report.frontier.metrics:
        report.passes_skipped["frontier"] = "no graph question with thoughts to read"
    if intervention:
        report.intervention = intervention_pass(
            model, tokenizer, answer, generated, report.legibility, answer_kind=answer_kind
        )
    else:
        report.passes_skipped["intervention"] = "legibility.intervention=false"
