"""Tokenized sample -> stage-k token sequence with its label mask (the official COCONUT format).

    question "\n" | <|start-latent|> <|latent|> x n <|end-latent|> | steps[k:] each + "\n" | "### " answer <eos>
    ---------------- label -100 (no loss) ---------------------------   ------------- loss --------------------

Stage 0 of COCONUT keeps the markers with no thoughts between them; methods without markers (cot,
no_cot) drop them. Pause-token methods write `<pause>` where COCONUT writes `<|latent|>`.

Each thought also carries its legibility target (`Sequence.thought_targets`): thoughts
i*c .. (i+1)*c - 1 stand for replaced step i (c = latents per step), and their target is that step's
key-content tokens (`coconut.data.step_keys.step_targets`), as evaluation's legibility metrics read
them; a thought of a step without key content, or beyond the replaced steps, has none.

CODI (`method.self_distillation`, coconut/core/codi.py) trains two sequences per record: the student,
built as above at the final stage with `num_latent` thoughts whatever the stage, and the teacher,
the chain of thought (`teacher_sequence`), each with the column of its distillation token (the
last token of the answer's "### " prefix, the one before the answer's value):

    student  question "\n" | <|start-latent|> <|latent|> x num_latent <|end-latent|> | "###" answer <eos>
    teacher  question "\n" | steps (the last one dropped unless include_last_cot) | "###" answer <eos>
                                                                                    ^ distilled at both

With step supervision (`step_supervision.weight` > 0, coconut/core/step_supervision.py) each
training sequence also carries `step_texts`: per group of c thoughts, the tokens an auxiliary
decoder must write from them (`step_texts` below; SIM-CoT's explain targets).

CoLaR (`method.max_compression_factor`, coconut/core/colar.py) compresses the chain of thought, as
tokens, c at a time into latents (c drawn per training sample), and tells c in the prompt:

    question "\n" (Thinking speed: c) | <|start-latent|> <|latent|> x ceil(n / c) <|end-latent|> | "###" answer <eos>
    label:   -100 ...               -100 | <|start-latent|> one token of each group  <|end-latent|> | "###" answer <eos>

with each latent's c step tokens (`Sequence.groups`); the prompt stops after <|start-latent|>, and
generation decides how many latents follow.

iCoT (`stage: tokens`) counts tokens, not steps: stage n drops the first n tokens of the chain of
thought (the steps' tokens in order), plus a per-sample smoothing offset in training:

    question "\n" | steps' tokens [n + offset:] | "### " answer <eos>       (all dropped: question -> answer)
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain

from transformers import PreTrainedTokenizerBase

from coconut.core.curriculum import Curriculum, StagePlan
from coconut.core.methods import Method
from coconut.core.tokens import SpecialIds
from coconut.data.records import Record
from coconut.data.step_keys import step_targets

IGNORE = -100


@dataclass(frozen=True)
class TokenizedSample:
    question: list[int]
    steps: list[list[int]]
    answer: list[int]  # ends with eos
    # Per step, the token ids naming its key content (coconut.data.step_keys.step_targets); empty
    # unless tokenized with step targets (the legibility objective).
    step_targets: tuple[tuple[int, ...], ...] = ()
    # Tokens of `answer` that spell its "### " prefix (shared with the encoding of "### " alone): the
    # last of them is the token before the answer's value, where CODI distils.
    answer_prefix: int = 1
    # Per step, its text's tokens alone (no "\n"), and the tokens of the "\n" that joins steps; empty
    # unless tokenized with step texts (step supervision).
    step_ids: tuple[tuple[int, ...], ...] = ()
    step_separator: tuple[int, ...] = ()
    # CoLaR: the tokens of "(Thinking speed: c)" for each compression factor c (one mapping shared by
    # the samples of a split); empty for other methods.
    speed: Mapping[int, list[int]] | None = None


SPEED_TEMPLATE = "(Thinking speed: {})"  # CoLaR's prompt suffix (their model_base.py:42)


def tokenize_records(
    records: list[Record],
    tokenizer: PreTrainedTokenizerBase,
    with_step_targets: bool = False,
    with_step_texts: bool = False,
    speeds: tuple[int, ...] = (),
) -> list[TokenizedSample]:
    """Question, each step and the answer encoded separately (as the official code does), so that
    dropping a step never re-tokenizes its neighbours; one tokenizer call per part for all records.
    `with_step_targets`: also each step's key-content tokens, for the legibility objective;
    `with_step_texts`: also each step's text alone, for step supervision; `speeds`: CoLaR's
    compression factors, whose prompt suffixes each sample carries."""

    def encode(texts: list[str], special: bool) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=special)["input_ids"] if texts else []

    questions = encode([r.question + "\n" for r in records], True)
    flat_steps = encode([s + "\n" for r in records for s in r.steps], False)
    answers = encode(["### " + r.answer for r in records], False)
    prefix = encode(["### "], False)[0] if records else []
    targets = step_targets(records, tokenizer) if with_step_targets else [()] * len(records)
    texts = encode([s for r in records for s in r.steps], False) if with_step_texts else []
    separator = tuple(encode(["\n"], False)[0]) if with_step_texts and records else ()
    speed = dict(zip(speeds, encode([SPEED_TEMPLATE.format(c) for c in speeds], False))) if speeds else None
    samples, cursor = [], 0
    for record, question, answer, target in zip(records, questions, answers, targets):
        steps = flat_steps[cursor : cursor + len(record.steps)]
        cursor += len(record.steps)
        shared = next((i for i, (a, b) in enumerate(zip(answer, prefix)) if a != b), min(len(answer), len(prefix)))
        step_ids = tuple(map(tuple, texts[cursor - len(record.steps) : cursor])) if with_step_texts else ()
        samples.append(
            TokenizedSample(
                question, steps, answer + [tokenizer.eos_token_id], target, max(shared, 1), step_ids, separator, speed
            )
        )
    return samples


@dataclass(frozen=True)
class Sequence:
    input_ids: list[int]
    labels: list[int]
    thoughts: int  # thought positions written (latent or pause)
    # Per continuous thought, in order, the token ids its legibility target names (empty: none).
    thought_targets: tuple[tuple[int, ...], ...] = ()
    groups: tuple[tuple[int, ...], ...] = ()  # CoLaR: each latent's step tokens, in order


def stage_plan(method: Method, curriculum: Curriculum, stage: int, n_steps: int) -> StagePlan:
    if method.stage == "tokens":  # whole steps stay; build_sequence drops tokens
        return StagePlan(steps_dropped=0, thoughts=0)
    plan = curriculum.plan(method.stage_for(stage, curriculum.final_stage), n_steps)
    if method.thought == "none":
        return StagePlan(plan.steps_dropped, 0)
    return plan if method.num_latent is None else StagePlan(plan.steps_dropped, method.num_latent)


def thought_span(method: Method, ids: SpecialIds, thoughts: int) -> list[int]:
    filler = ids.latent if method.thought == "continuous" else ids.pause
    span = [filler] * thoughts
    return [ids.start_latent, *span, ids.end_latent] if method.markers else span


def build_sequence(
    sample: TokenizedSample,
    stage: int,
    method: Method,
    curriculum: Curriculum,
    ids: SpecialIds,
    removal_offset: int = 0,
) -> Sequence:
    """The training sequence of `sample` at `stage` (before any per-sample stage mixing);
    `removal_offset`: iCoT's extra tokens removed from this sample (removal smoothing). CoLaR's is
    `colar_sequence`'s at the smallest factor trained (the longest)."""
    if method.colar:
        return colar_sequence(sample, min(method.compression_factors), ids)
    if method.stage == "tokens":
        cot = list(chain.from_iterable(sample.steps))
        removed = len(cot) if method.removes_all(stage) else min(stage + removal_offset, len(cot))
        text = cot[removed:] + sample.answer
        return Sequence(sample.question + text, [IGNORE] * len(sample.question) + text, 0)
    plan = stage_plan(method, curriculum, stage, len(sample.steps))
    prompt = sample.question + thought_span(method, ids, plan.thoughts)
    text = list(chain.from_iterable(sample.steps[plan.steps_dropped :])) + sample.answer
    targets = thought_targets(sample, plan, curriculum.c_thought) if method.thought == "continuous" else ()
    return Sequence(prompt + text, [IGNORE] * len(prompt) + text, plan.thoughts, targets)


def colar_sequence(sample: TokenizedSample, c: int, ids: SpecialIds, rng: random.Random | None = None) -> Sequence:
    """CoLaR's training sequence of `sample` at compression factor `c`: the chain of thought's tokens
    in groups of c (the last one may be short), one latent each, labelled with one token of its
    group drawn by `rng` (uniformly, as their utils.py:12-22; without `rng`, the group's first)."""
    cot = list(chain.from_iterable(sample.steps))
    groups = tuple(tuple(cot[i : i + c]) for i in range(0, len(cot), c))
    labels = [g[rng.randrange(len(g))] if rng is not None else g[0] for g in groups]
    prompt = sample.question + sample.speed[c]
    body = [ids.start_latent, *[ids.latent] * len(groups), ids.end_latent]
    label_body = [ids.start_latent, *labels, ids.end_latent]
    return Sequence(
        prompt + body + sample.answer, [IGNORE] * len(prompt) + label_body + sample.answer, len(groups), (), groups
    )


def thought_targets(sample: TokenizedSample, plan: StagePlan, latents_per_step: int) -> tuple[tuple[int, ...], ...]:
    """The legibility target of each of the plan's thoughts: thought j stands for step j // c when
    that step was replaced (the final stage replaces every step but caps the thoughts)."""
    replaced = min(plan.steps_dropped, len(sample.steps), len(sample.step_targets))
    return tuple(
        sample.step_targets[j // latents_per_step] if j // latents_per_step < replaced else ()
        for j in range(plan.thoughts)
    )


def build_prompt(
    sample: TokenizedSample,
    stage: int,
    method: Method,
    curriculum: Curriculum,
    ids: SpecialIds,
    n_thoughts: int | None = None,
) -> list[int]:
    """What generation starts from: the question and the thought span of `stage` (or exactly
    `n_thoughts` thoughts, for inference-time scaling). The count never depends on the sample's
    reference steps (`prompt_thoughts`), unlike the training sequence of the same stage."""
    if method.colar:  # the model decides how many latents follow (coconut/core/colar.py)
        return sample.question + sample.speed[method.compression_factor] + [ids.start_latent]
    if n_thoughts is None:
        n_thoughts = prompt_thoughts(method, curriculum, stage)
    return sample.question + thought_span(method, ids, n_thoughts)


def prompt_thoughts(method: Method, curriculum: Curriculum, stage: int) -> int:
    """Thoughts in every generation prompt of `method` at `stage` (validation and evaluation):
    k * c at stage k, max_latent_stage * c at the final stage (`Curriculum.inference_thoughts`);
    none for methods without thoughts and for iCoT."""
    if method.stage == "tokens" or method.thought == "none" or method.colar:  # CoLaR's: the model's choice
        return 0
    if method.num_latent is not None:
        return method.num_latent
    return curriculum.inference_thoughts(method.stage_for(stage, curriculum.final_stage))


def teacher_sequence(sample: TokenizedSample, method: Method) -> Sequence:
    """CODI's teacher: the record's chain of thought as text, as method=cot trains it, the last step
    dropped unless `method.include_last_cot` (the official default, train.py:270-272)."""
    steps = sample.steps if method.include_last_cot else sample.steps[:-1]
    text = list(chain.from_iterable(steps)) + sample.answer
    return Sequence(sample.question + text, [IGNORE] * len(sample.question) + text, 0)


def distill_index(sequence: Sequence, sample: TokenizedSample) -> int:
    """The index in `sequence` (which ends with `sample.answer`) of CODI's distillation token: the
    last token of the answer's "### " prefix."""
    return len(sequence.input_ids) - len(sample.answer) + sample.answer_prefix - 1


def step_texts(
    sample: TokenizedSample, method: Method, curriculum: Curriculum, thoughts: int
) -> tuple[tuple[int, ...], ...]:
    """Step supervision's targets for a sequence with `thoughts` thoughts: per group of thoughts, the
    tokens the auxiliary decoder writes from it, eos-terminated (empty: no target). As SIM-CoT's
    code: step j for the first cap - 1 groups, the remaining steps joined by "\n" for the last.

      COCONUT  groups of c = c_thought, thoughts // c of them, cap = max_latent_stage; a group
               past the record's steps writes the answer ("### N", their pseudo thought)
      CODI     groups of 1, num_latent + 1 of them (the last thought's own state too), cap the same,
               over the teacher's steps (`teacher_sequence`'s); a group past them has none"""
    eos = sample.answer[-1:]
    if method.num_latent is not None:
        steps = sample.step_ids if method.include_last_cot else sample.step_ids[:-1]
        groups = cap = method.num_latent + 1
        beyond: tuple[int, ...] = ()
    else:
        steps, cap = sample.step_ids, curriculum.max_latent_stage
        groups, beyond = thoughts // curriculum.c_thought, tuple(sample.answer)
    texts = [tuple(s) for s in steps[: cap - 1]]
    if steps[cap - 1 :]:
        merged = list(steps[cap - 1])
        for step in steps[cap:]:
            merged += [*sample.step_separator, *step]
        texts.append(tuple(merged))
    return tuple(texts[j] + tuple(eos) if j < len(texts) else beyond for j in range(groups))
