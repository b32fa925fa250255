"""Checks that run before any training or evaluation starts, each failing with one message that
names the key and the fix:

- `validate_config`: counts and choices of a composed `coconut-train` config;
- `check_group_choices`: `method=xyz` / `data=xyz` on the command line, before Hydra composes;
- `check_thoughts_fit`: the final stage's thoughts and the generation budget fit the model's positions;
- `check_checkpoint_compatible`: a checkpoint evaluated with the method and tokenizer it was
  trained with (thought kind, markers, vocabulary, special-token ids).

The record checks (answers, lengths) are the data layer's: `coconut.data.checks`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from coconut.core.curriculum import Curriculum
from coconut.core.errors import CheckpointError, ConfigError
from coconut.core.legibility_objective import READS
from coconut.core.methods import Method
from coconut.core.tokens import SPECIAL_TOKENS
from coconut.data.checks import ANSWER_KINDS


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
    for key in ("optimizer.lr", "curriculum.latent_lr_scale"):
        value = _get(cfg, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not value > 0):
            problems.append(f"{key} must be a number > 0, got {value!r}")
    kind = _get(cfg, "data.answer_kind")
    if kind is not None and kind not in ANSWER_KINDS:
        problems.append(f"data.answer_kind must be one of {', '.join(ANSWER_KINDS)}, got {kind!r}")
    strict = _get(cfg, "data.strict")
    if strict is not None and not isinstance(strict, bool):
        problems.append(f"data.strict must be true or false, got {strict!r}")
    resume = _get(cfg, "resume")
    if resume is not None and resume not in ("auto", False, "never"):
        problems.append(f"resume must be auto or false, got {resume!r}")
    if _get(cfg, "trainer.cpu_threads") is not None:
        _require_int(cfg, "trainer.cpu_threads", 1, problems, " (or null for the automatic choice)")
    weight = _get(cfg, "legibility.weight")
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0):
        problems.append(f"legibility.weight must be a number >= 0 (0: the paper's method), got {weight!r}")
    read = _get(cfg, "legibility.read")
    if read is not None and read not in READS:
        problems.append(f"legibility.read must be one of {', '.join(READS)}, got {read!r}")
    architecture = _get(cfg, "model.architecture")
    if isinstance(architecture, Mapping) and not _get(cfg, "model.pretrained"):
        _check_architecture(architecture, problems)
    if problems:
        raise ConfigError(f"invalid configuration: {'; '.join(problems)}. Fix: give these keys valid values")


# Counts that every architecture needs at least one of, under the names Hugging Face configs use
# (GPT-2's, Llama's and most others'); None means the model's default (GPT-2's n_inner, head_dim).
ARCHITECTURE_COUNTS = (
    "n_layer", "num_hidden_layers", "num_layers",
    "n_embd", "hidden_size", "d_model",
    "n_head", "num_attention_heads", "num_heads", "num_key_value_heads",
    "n_positions", "max_position_embeddings", "n_ctx",
    "n_inner", "intermediate_size", "head_dim",
)  # fmt: skip
# (width, heads): the width splits evenly into heads unless head_dim sets the head size itself.
WIDTH_PER_HEAD = (("n_embd", "n_head"), ("hidden_size", "num_attention_heads"), ("d_model", "num_heads"))


def _check_architecture(architecture: Mapping, problems: list[str]) -> None:
    """Impossible numbers in `model.architecture` (a from-scratch Hugging Face config): counts below
    1, a width that does not split into its heads, query heads not a multiple of key/value heads,
    dropout outside [0, 1]. Caught here, before a model is built or a batch is cut."""
    key = "model.architecture"
    bad = set()
    for name in ARCHITECTURE_COUNTS:
        value = architecture.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            problems.append(f"{key}.{name} must be an integer >= 1, got {value!r}")
            bad.add(name)
    if architecture.get("head_dim") is None:
        for width, heads in WIDTH_PER_HEAD:
            w, h = architecture.get(width), architecture.get(heads)
            if isinstance(w, int) and isinstance(h, int) and not {width, heads} & bad and w % h:
                problems.append(f"{key}.{width}={w} does not split into {key}.{heads}={h} heads (not a multiple of it)")
    q, kv = architecture.get("num_attention_heads"), architecture.get("num_key_value_heads")
    if isinstance(q, int) and isinstance(kv, int) and not {"num_attention_heads", "num_key_value_heads"} & bad:
        if q % kv:
            problems.append(f"{key}.num_attention_heads={q} is not a multiple of {key}.num_key_value_heads={kv}")
    for name, value in architecture.items():
        if str(name).endswith(("pdrop", "dropout")) and value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                problems.append(f"{key}.{name} must be a probability in [0, 1], got {value!r}")


def checked_command(name: str, run, config_dir: str | Path):
    """Runs a Hydra entry point `run` as the command `name`, after `check_group_choices` on its
    command line: an unknown group choice is one line and exit code 2, before Hydra composes."""
    try:
        check_group_choices(sys.argv[1:], config_dir)
    except ConfigError as error:
        print(f"{name}: {error}", file=sys.stderr)
        sys.exit(2)
    return run()


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


# -- thoughts against the model's positions ---------------------------------------------------------
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
                "Fix: use the tokenizer saved in the checkpoint (coconut.training.lit_module.rebuild_from_checkpoint) "
                "or in the run's tokenizer/ folder"
            )
        latent = saved.get("latent_token_id")
        token_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        if latent is not None and token_ids.get(SPECIAL_TOKENS[2]) != latent:
            raise CheckpointError(
                f"the tokenizer maps {SPECIAL_TOKENS[2]} to id {token_ids.get(SPECIAL_TOKENS[2])}, the checkpoint "
                f"was trained with id {latent}. Fix: use the tokenizer saved in the checkpoint "
                "(coconut.training.lit_module.rebuild_from_checkpoint) or in the run's tokenizer/ folder"
            )
