"""Checks that run before any training or evaluation starts, each failing with one message that
names the key (or file, record and field) and the fix:

- `validate_config`: counts and choices of a composed `coconut-train` config;
- `check_group_choices`: `method=xyz` / `data=xyz` on the command line, before Hydra composes;
- `check_thoughts_fit` and `keep_within_context`: every sequence (and every generation) fits the
  model's positions; a record that does not is skipped with a counted warning, or is an error
  with `data.strict=true`;
- `check_checkpoint_compatible`: a checkpoint evaluated with the method and tokenizer it was
  trained with (thought kind, markers, vocabulary, special-token ids).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path

from coconut.curriculum import Curriculum
from coconut.data.records import DataError, Record
from coconut.data.sequences import TokenizedSample, build_prompt, build_sequence
from coconut.errors import ConfigError, UserInputError
from coconut.methods import Method
from coconut.tokens import SPECIAL_TOKENS, SpecialIds

log = logging.getLogger(__name__)

ANSWER_KINDS = ("number", "statement", "digits", "auto")
# Records named in a skip warning; the count covers the rest.
SHOWN = 5


class CheckpointError(UserInputError, ValueError):
    """A checkpoint that cannot be used as asked (not from coconut-train, or trained differently)."""


# -- configuration ----------------------------------------------------------------------------------
def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if node is None or not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _require_int(cfg, key: str, minimum: int, problems: list[str], hint: str = "") -> None:
    value = _get(cfg, key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        problems.append(f"{key} must be an integer >= {minimum}, got {value!r}{hint}")


def validate_config(cfg) -> None:
    """Raises one ConfigError listing every out-of-range count or unknown choice in `cfg`."""
    problems: list[str] = []
    for key in ("curriculum.epochs_per_stage", "curriculum.latents_per_step", "curriculum.c_thought"):
        _require_int(cfg, key, 1, problems)
    _require_int(cfg, "curriculum.max_latent_stage", 0, problems)
    if _get(cfg, "curriculum.epochs_first_stage") is not None:
        _require_int(cfg, "curriculum.epochs_first_stage", 1, problems, " (or null)")
    _require_int(cfg, "trainer.max_epochs", 1, problems)
    for key in ("data.batch_size", "data.eval_batch_size", "data.val_generation_size", "data.max_new_tokens"):
        _require_int(cfg, key, 1, problems)
    _require_int(cfg, "data.num_workers", 0, problems)
    if _get(cfg, "data.generator") is not None:
        for split in ("train", "val", "test"):
            if not _get(cfg, f"data.{split}_path"):
                _require_int(cfg, f"data.sizes.{split}", 1, problems)
    for split, value in (_get(cfg, "data.limit") or {}).items():
        if value is not None:
            _require_int(cfg, f"data.limit.{split}", 1, problems, " (or null for the whole split)")
    every = _get(cfg, "callbacks.last_checkpoint.every_n_train_steps")
    if every is not None:
        _require_int(cfg, "callbacks.last_checkpoint.every_n_train_steps", 1, problems, " (or null)")
    lr = _get(cfg, "optimizer.lr")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0):
        problems.append(f"optimizer.lr must be a number > 0, got {lr!r}")
    kind = _get(cfg, "data.answer_kind")
    if kind is not None and kind not in ANSWER_KINDS:
        problems.append(f"data.answer_kind must be one of {', '.join(ANSWER_KINDS)}, got {kind!r}")
    strict = _get(cfg, "data.strict")
    if strict is not None and not isinstance(strict, bool):
        problems.append(f"data.strict must be true or false, got {strict!r}")
    resume = _get(cfg, "resume")
    if resume is not None and resume not in ("auto", False, "never"):
        problems.append(f"resume must be auto or false, got {resume!r}")
    if problems:
        raise ConfigError(f"invalid configuration: {'; '.join(problems)}. Fix: give these keys valid values")


def check_group_choices(overrides: Sequence[str], config_dir: str | Path) -> None:
    """`method=xyz` (or `data=`, `model=`, ...) naming no file in `conf/<group>/`: one ConfigError
    that lists the valid choices, before Hydra prints its longer message. Sweeps (`method=cot,xyz`)
    are checked value by value; Hydra's sweep functions (`choice(...)`, `glob(...)`) are left to it."""
    config_dir = Path(config_dir)
    for override in overrides:
        if override.startswith("-") or "=" not in override:
            continue
        key, value = override.lstrip("+").split("=", 1)
        folder = config_dir / key
        if "." in key or "/" in key or not folder.is_dir() or "(" in value:
            continue
        choices = sorted(p.stem for p in folder.glob("*.yaml"))
        for choice in value.split(","):
            choice = choice.strip()
            if choice and choice != "null" and choice not in choices:
                raise ConfigError(
                    f"{key}={choice}: no such {key} (no conf/{key}/{choice}.yaml). Valid choices: {', '.join(choices)}"
                )


# -- sequences against the model's positions -------------------------------------------------------------
def max_positions(model_config) -> int | None:
    """The positions a Hugging Face model config allows (GPT-2 `n_positions`, Llama and most others
    `max_position_embeddings`); None when it states no limit."""
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(model_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _stages(method: Method, curriculum: Curriculum) -> list[int]:
    """Every stage a sample of `method` can be built at (stage mixing may draw any of them)."""
    return sorted({method.stage_for(s, curriculum.final_stage) for s in range(curriculum.final_stage + 1)})


def check_thoughts_fit(method: Method, curriculum: Curriculum, positions: int | None, max_new_tokens: int) -> None:
    """More thoughts than positions: the longest thought span, a one-token question and the
    generation budget must fit the model, whatever the data."""
    if positions is None or method.thought == "none":
        return
    thoughts = curriculum.max_latent_stage * curriculum.latents_per_step
    markers = 2 if method.markers else 0
    needed = 1 + thoughts + markers + max_new_tokens
    if needed > positions:
        raise ConfigError(
            f"the final stage writes curriculum.max_latent_stage * latents_per_step = {curriculum.max_latent_stage} * "
            f"{curriculum.latents_per_step} = {thoughts} thoughts (+{markers} markers), and generation adds up to "
            f"data.max_new_tokens={max_new_tokens}: at least {needed} positions, more than the model's {positions}. "
            "Fix: lower curriculum.c_thought (latents_per_step) or curriculum.max_latent_stage, lower "
            "data.max_new_tokens, or use a model with more positions (model.architecture.n_positions / "
            "max_position_embeddings)"
        )


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
    stages = _stages(method, curriculum)
    kept_records, kept_samples, skipped = [], [], []
    for index, (record, sample) in enumerate(zip(records, samples)):
        length = max(len(build_sequence(sample, s, method, curriculum, ids).input_ids) for s in stages)
        prompt = max(len(build_prompt(sample, s, method, curriculum, ids)) for s in stages)
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


def check_records(records: list[Record], *, source: str, answer_kind: str, strict: bool = False) -> list[Record]:
    """Records whose answer cannot be scored under `answer_kind` are skipped with a counted
    warning (an error with `strict`); records with no reasoning steps are kept (they train only the
    answer, as in the official code) but counted in a warning (an error with `strict`)."""
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
        if not record.steps:
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


# -- checkpoints --------------------------------------------------------------------------------------------
def check_checkpoint_compatible(checkpoint: Mapping, method: Method | None = None, tokenizer=None) -> None:
    """Raises CheckpointError unless `checkpoint` (a `torch.load`-ed coconut-train checkpoint) can be
    evaluated with `method` and `tokenizer`.

    Method: the thought kind (continuous / pause / none) and the markers must be the trained ones;
    the stage rule may differ (a COCONUT checkpoint may be evaluated at any stage). Tokenizer: the
    vocabulary size must match the checkpoint's embeddings and the COCONUT special tokens must have
    the ids the model was trained with. Either may be None to skip its check.
    """
    saved = checkpoint.get("coconut") if isinstance(checkpoint, Mapping) else None
    if not isinstance(saved, Mapping) or "model_config" not in saved:
        raise CheckpointError(
            "the checkpoint was not written by coconut-train (no 'coconut' section with the model config). "
            "Fix: give a .ckpt from a coconut-train run folder (checkpoints/last.ckpt or stage<k>-best.ckpt)"
        )
    config = (checkpoint.get("hyper_parameters") or {}).get("config") or {}
    trained = config.get("method") or {}
    if method is not None and trained:
        differences = [
            f"method.{key}: trained {trained.get(key)!r}, asked {getattr(method, key)!r}"
            for key in ("thought", "markers")
            if key in trained and trained[key] != getattr(method, key)
        ]
        if differences:
            raise CheckpointError(
                f"the checkpoint was trained with method={trained.get('name')} and cannot be evaluated as "
                f"method={method.name} ({'; '.join(differences)}). Fix: evaluate with method={trained.get('name')}, "
                "or give a checkpoint trained with this method"
            )
    if tokenizer is not None:
        vocab = saved["model_config"].get("vocab_size")
        if vocab is not None and len(tokenizer) != vocab:
            raise CheckpointError(
                f"the tokenizer has {len(tokenizer)} tokens but the checkpoint's model was trained with {vocab}. "
                "Fix: use the tokenizer saved in the checkpoint (coconut.lit_module.rebuild_from_checkpoint) "
                "or in the run's tokenizer/ folder"
            )
        latent = saved.get("latent_token_id")
        token_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        if latent is not None and token_ids.get(SPECIAL_TOKENS[2]) != latent:
            raise CheckpointError(
                f"the tokenizer maps {SPECIAL_TOKENS[2]} to id {token_ids.get(SPECIAL_TOKENS[2])}, the checkpoint "
                f"was trained with id {latent}. Fix: use the tokenizer saved in the checkpoint "
                "(coconut.lit_module.rebuild_from_checkpoint) or in the run's tokenizer/ folder"
            )
