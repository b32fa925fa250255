"""Checks of records before training or evaluation, each failing with one message that names the
file, record and field and the fix:

- `check_records`: every answer can be scored under `data.answer_kind`; records without steps are
  counted;
- `keep_within_context`: every sequence (and every generation) fits the model's positions; a record
  that does not is skipped with a counted warning, or is an error with `data.strict=true`;
- `keep_answerable`: evaluation's rule, on the prompt alone (the reference steps play no part in
  answering a question): the prompt leaves `max_new_tokens` positions to generate.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from decimal import Decimal, InvalidOperation

from coconut.core.curriculum import Curriculum
from coconut.core.methods import Method
from coconut.core.tokens import SpecialIds
from coconut.data.records import DataError, Record
from coconut.data.sequences import TokenizedSample, build_prompt, build_sequence, teacher_sequence

log = logging.getLogger(__name__)

ANSWER_KINDS = ("number", "statement", "digits", "auto")
# Records named in a skip warning; the count covers the rest.
SHOWN = 5


def stages_of(method: Method, curriculum: Curriculum) -> list[int]:
    """Every stage a sample of `method` can be built at (stage mixing may draw any of them)."""
    return sorted({method.stage_for(s, curriculum.final_stage) for s in range(curriculum.final_stage + 1)})


# -- sequences against the model's positions -------------------------------------------------------------
def keep_within_context(
    records: list[Record],
    samples: list[TokenizedSample],
    *,
    source: str,
    method: Method,
    curriculum: Curriculum,
    ids: SpecialIds,
    positions: int | None,
    generation_budget: int = 0,
    strict: bool = False,
) -> tuple[list[Record], list[TokenizedSample]]:
    """Drops the records whose longest sequence (over the stages `method` can train) has more tokens
    than the model has positions, or whose prompt leaves less than `generation_budget` positions
    (evaluation splits: data.max_new_tokens) to generate. Skipped records are counted in one warning;
    with `strict` the first one is a DataError. A split left empty is always an error."""
    if positions is None:
        return records, samples
    stages = stages_of(method, curriculum)
    kept_records, kept_samples, skipped = [], [], []
    for index, (record, sample) in enumerate(zip(records, samples)):
        length = max(len(build_sequence(sample, s, method, curriculum, ids).input_ids) for s in stages)
        if method.self_distillation:  # CODI also trains the chain of thought
            length = max(length, len(teacher_sequence(sample, method).input_ids))
        prompt = max(len(build_prompt(sample, s, method, curriculum, ids)) for s in stages)
        if method.colar:  # the latents and <|end-latent|> that generation adds (coconut/core/colar.py)
            prompt += method.max_n_latent_forward + 1
        if length <= positions and prompt + generation_budget <= positions:
            kept_records.append(record)
            kept_samples.append(sample)
            continue
        problem = (
            f"is {length} tokens long at its longest stage (question {len(sample.question)}, steps "
            f"{sum(map(len, sample.steps))}, answer {len(sample.answer)}), more than the model's {positions} positions"
            if length > positions
            else f"leaves {positions - prompt} of the model's {positions} positions after its {prompt}-token prompt, "
            f"fewer than data.max_new_tokens={generation_budget} to generate the answer"
        )
        fix = (
            "shorten or drop the record, use a model with more positions, lower data.max_new_tokens, "
            "or set data.strict=false to skip such records with a warning"
        )
        if strict:
            raise DataError.at(source, problem, fix, index=index, field="steps" if length > positions else "question")
        skipped.append(index)
    if skipped:
        if not kept_records:
            raise DataError.at(
                source,
                f"every record ({len(records)}) is longer than the model's {positions} positions",
                "use a model with more positions or shorter records; lower curriculum.c_thought or data.max_new_tokens",
            )
        shown = ", ".join(map(str, skipped[:SHOWN])) + (", ..." if len(skipped) > SHOWN else "")
        log.warning(
            "%s: skipped %d of %d records that do not fit the model's %d positions (records %s, 0-based); "
            "set data.strict=true to make this an error",
            source,
            len(skipped),
            len(records),
            positions,
            shown,
        )
    return kept_records, kept_samples


def keep_answerable(
    records: list[Record],
    samples: list[TokenizedSample],
    *,
    source: str,
    stage: int,
    method: Method,
    curriculum: Curriculum,
    ids: SpecialIds,
    positions: int | None,
    generation_budget: int,
    n_thoughts: int | None = None,
    strict: bool = False,
    skipped: Counter | None = None,
) -> tuple[list[Record], list[TokenizedSample]]:
    """Evaluation: drops the questions whose generation prompt at `stage` (or with `n_thoughts`)
    leaves fewer than `generation_budget` of the model's positions, with a counted warning (the first
    is a DataError with `strict`), and counts them by reason in `skipped`. Unlike `keep_within_context`
    the reference steps are not looked at: a long reference solution does not make a question
    unanswerable. Every question skipped is an error."""
    if positions is None:
        return records, samples
    kept_records, kept_samples, dropped = [], [], []
    for index, (record, sample) in enumerate(zip(records, samples)):
        prompt = len(build_prompt(sample, stage, method, curriculum, ids, n_thoughts))
        prompt += method.max_n_latent_forward + 1 if method.colar else 0  # CoLaR's latents and <|end-latent|>
        if prompt + generation_budget <= positions:
            kept_records.append(record)
            kept_samples.append(sample)
            continue
        if strict:
            raise DataError.at(
                source,
                f"leaves {positions - prompt} of the model's {positions} positions after its {prompt}-token prompt, "
                f"fewer than max_new_tokens={generation_budget} to generate the answer",
                "lower max_new_tokens, use a model with more positions, or set data.strict=false to skip such "
                "questions (counted in the report as wrong)",
                index=index,
                field="question",
            )
        dropped.append(index)
    if dropped:
        if not kept_records:
            raise DataError.at(
                source,
                f"no question ({len(records)}) leaves max_new_tokens={generation_budget} of the model's "
                f"{positions} positions after its prompt: every record is longer than the model's positions allow",
                "lower max_new_tokens or use a model with more positions",
            )
        reason = f"the prompt leaves fewer than max_new_tokens={generation_budget} of the model's {positions} positions"
        if skipped is not None:
            skipped[reason] += len(dropped)
        shown = ", ".join(map(str, dropped[:SHOWN])) + (", ..." if len(dropped) > SHOWN else "")
        log.warning(
            "%s: skipped %d of %d questions: %s (records %s, 0-based); they count as wrong in `accuracy`. "
            "Set data.strict=true to make this an error",
            source,
            len(dropped),
            len(records),
            reason,
            shown,
        )
    return kept_records, kept_samples


# -- answers against data.answer_kind ----------------------------------------------------------------------
_DIGITS = re.compile(r"[\d\s]+")


def answer_parses(answer: str, kind: str) -> bool:
    """Whether a reference answer can be scored under `kind`: a number (GSM8K's `1,000`, `$0.50`,
    `-3`), digits separated by spaces (iCoT multiplication), or any text (statement, auto)."""
    if kind == "number":
        # The cleaning of coconut.eval.answers (commas, `$` and a trailing `.` dropped).
        cleaned = answer.strip().replace(",", "").replace("$", "").rstrip(".").strip()
        try:
            return Decimal(cleaned).is_finite()
        except InvalidOperation:
            return False
    if kind == "digits":
        return bool(_DIGITS.fullmatch(answer)) and any(c.isdigit() for c in answer)
    return True


def check_records(
    records: list[Record],
    *,
    source: str,
    answer_kind: str,
    strict: bool = False,
    expect_steps: bool = True,
    skipped: Counter | None = None,
) -> list[Record]:
    """Records whose answer cannot be scored under `answer_kind` are skipped with a counted
    warning (an error with `strict`), and counted by reason in `skipped` when given; records with no
    reasoning steps are kept (they train only the answer, as in the official code) but counted in a
    warning (an error with `strict`), unless `expect_steps` is false (evaluation-only benchmarks
    have no steps by design)."""
    kept, unparsable, no_steps = [], [], []
    for index, record in enumerate(records):
        if not answer_parses(record.answer, answer_kind):
            if strict:
                raise DataError.at(
                    source,
                    f"{record.answer!r} is not a {answer_kind} answer (data.answer_kind={answer_kind})",
                    "fix the answer, set data.answer_kind to statement or auto, "
                    "or set data.strict=false to skip such records with a warning",
                    index=index,
                    field="answer",
                )
            unparsable.append(index)
            continue
        if not record.steps and expect_steps:
            if strict:
                raise DataError.at(
                    source,
                    "is an empty list: the record has no reasoning for the curriculum to replace",
                    "add its steps, drop the record, or set data.strict=false to keep such records with a warning",
                    index=index,
                    field="steps",
                )
            no_steps.append(index)
        kept.append(record)

    def shown(indices: list[int]) -> str:
        return ", ".join(map(str, indices[:SHOWN])) + (", ..." if len(indices) > SHOWN else "")

    if unparsable:
        if not kept:
            raise DataError.at(
                source,
                f"no answer is a {answer_kind} answer",
                "set data.answer_kind to the kind of these answers (number, digits, statement or auto)",
                field="answer",
            )
        log.warning(
            "%s: skipped %d of %d records whose answer is not a %s answer (records %s, 0-based); "
            "set data.strict=true to make this an error",
            source,
            len(unparsable),
            len(records),
            answer_kind,
            shown(unparsable),
        )
        if skipped is not None:
            skipped[f"the reference answer is not a {answer_kind} answer"] += len(unparsable)
    if no_steps:
        log.warning(
            "%s: %d of %d records have no reasoning steps (records %s, 0-based); they train only the answer. "
            "Set data.strict=true to make this an error",
            source,
            len(no_steps),
            len(records),
            shown(no_steps),
        )
    return kept
