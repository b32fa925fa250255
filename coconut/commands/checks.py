"""Checks that run before any training or evaluation starts, each failing with one message that
names the key and the fix:

- (the types, counts and choices of a composed config: `coconut.commands.config`);
- `check_group_choices`: `method=xyz` / `data=xyz` on the command line, before Hydra composes;
- `check_override_keys`: a misspelt key (`curriculum.c_thougth=2`, `+curriculum.c_thougth=2`), with
  the key it resembles, before Hydra composes;
- `check_accelerator`: `trainer.accelerator=gpu` (or `device=cuda`) on a machine without a GPU;
- `check_prepared`: the files of a dataset that coconut-data writes, named with the command;
- `check_thoughts_fit`: the final stage's thoughts and the generation budget fit the model's positions;
- `check_checkpoint_compatible`: a checkpoint evaluated with the method and tokenizer it was
  trained with (thought kind, markers, vocabulary, special-token ids).

The record checks (answers, lengths) are the data layer's: `coconut.data.checks`.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from coconut.commands.config import renamed_overrides
from coconut.core.curriculum import Curriculum
from coconut.core.errors import CheckpointError, ConfigError
from coconut.core.methods import Method
from coconut.core.tokens import SPECIAL_TOKENS
from coconut.data.prepare import data_root

# -- configuration ----------------------------------------------------------------------------------
# The types and ranges of every key: coconut/commands/config.py (validate_config, validate_eval_config).


def check_accelerator(key: str, accelerator) -> None:
    """`trainer.accelerator=gpu` (or coconut-eval's `device=cuda`) where torch sees no GPU: one message,
    rather than Lightning's MisconfigurationException inside Hydra's instantiate error."""
    name = str(accelerator).split(":")[0]
    if name in ("gpu", "cuda") and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        fix = "trainer=cpu (or trainer.accelerator=cpu)" if key.startswith("trainer") else "device=cpu (or auto)"
        raise ConfigError(
            f"{key}={accelerator}, but this machine has no GPU that torch can use (torch {torch.__version__}, "
            f"{build}). Fix: {fix}, or run on a machine with a GPU and a CUDA build of torch"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{key}={accelerator}, but torch sees no Apple GPU (MPS) here. Fix: trainer=cpu")


def checked_command(name: str, run, config_dir: str | Path, config_name: str | None = None):
    """Runs a Hydra entry point `run` as the command `name` (config `config_name`, by default the
    name without `coconut-`), after `check_group_choices` and `check_override_keys` on its command
    line: an unknown group choice, a misspelt key or a value of the wrong type is one line and exit
    code 2, before Hydra composes. A renamed knob's old name is read as the new one, with a message."""
    sys.argv[1:] = renamed_overrides(sys.argv[1:])
    try:
        check_group_choices(sys.argv[1:], config_dir)
        check_override_keys(sys.argv[1:], config_dir, config_name or name.removeprefix("coconut-"))
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
                    f"{key}={choice}: no such {key} (no coconut/conf/{key}/{choice}.yaml). "
                    f"Valid choices: {', '.join(choices)}"
                )


def _compose(config_dir: str | Path, config_name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir  # noqa: PLC0415 (only on the command line)

    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def _unknown_key(key: str, value: str, siblings: list[str], added: bool) -> ConfigError:
    parent, _, leaf = key.rpartition(".")
    where = parent or "the top level"
    close = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.8 if added else 0.6)
    named = f"{'+' if added else ''}{key}={value}"
    if close:
        right = f"{parent}.{close[0]}" if parent else close[0]
        return ConfigError(
            f"{named}: {where} has no key {leaf}"
            + (", so the run would add it and train with the default" if added else "")
            + f"; did you mean {right}? Fix: {right}={value}"
        )
    return ConfigError(
        f"{named}: {where} has no key {leaf} (its keys: {', '.join(siblings[:12])}). Fix: give one of its keys, "
        f"or +{key}={value} to add a new one"
    )


def _wrong_type(message: str, cause) -> ConfigError:
    """Hydra's "Error merging override key=value" with OmegaConf's reason, as one line."""
    match = re.search(r"override (\S+)", message)
    override = match.group(1) if match else getattr(cause, "full_key", "a key")
    reason = str(cause).splitlines()[0].rstrip(".")
    key = override.split("=", 1)[0].lstrip("+~")
    return ConfigError(
        f"{override}: {reason} (the type of {key}: coconut/commands/config.py). Fix: give {key} a value of that type"
    )


def check_override_keys(overrides: Sequence[str], config_dir: str | Path, config_name: str) -> None:
    """A key the composed config lacks: `curriculum.c_thougth=2` (Hydra's "not in struct" dump) and
    `+curriculum.c_thougth=2` (a new key nothing reads, the fix Hydra itself suggests) are one
    ConfigError naming the key it resembles. A `+key` unlike every key beside it is a new key and
    passes (e.g. `+model.architecture.n_inner=...`); sweeps are checked at their first value; any
    other composition error is left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: PLC0415
    from hydra.errors import ConfigCompositionException  # noqa: PLC0415
    from omegaconf import DictConfig, OmegaConf, ValidationError  # noqa: PLC0415

    if any(o.startswith(("--config", "-cn", "-cp", "-cd")) for o in overrides):
        return  # another primary config or folder: Hydra's own checks
    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("-")])
    except Exception:  # noqa: BLE001 (a syntax error: Hydra says it)
        return
    plain, added = [], []
    for override in parsed:
        if override.key_or_group.startswith("hydra") or override.is_delete() or override.is_force_add():
            continue
        try:
            value = next(iter(override.sweep_string_iterator())) if override.is_sweep_override() else None
            value = value if value is not None else override.get_value_element_as_str()
        except Exception:  # noqa: BLE001 (a sweep without a first value: range over floats, ...)
            continue
        (added if override.is_add() else plain).append((override.key_or_group, value))

    def as_overrides(pairs, prefix=""):
        return [f"{prefix}{k}={v}" for k, v in pairs]

    try:
        base = _compose(config_dir, config_name, as_overrides(plain))
    except ConfigCompositionException as error:
        if isinstance(error.__cause__, ValidationError):  # a value of the wrong type (coconut/commands/config.py)
            raise _wrong_type(str(error), error.__cause__) from None
        match = re.search(r"Could not override '([^']+)'", str(error))
        key = match.group(1) if match else None
        value = dict(plain).get(key)
        if key is None or value is None:
            return
        try:
            base = _compose(config_dir, config_name, as_overrides([p for p in plain if p[0] != key]))
        except Exception:  # noqa: BLE001
            return
        node = OmegaConf.select(base, key.rpartition(".")[0]) if "." in key else base
        if isinstance(node, DictConfig):
            raise _unknown_key(key, value, [str(k) for k in node], added=False) from None
        return
    except Exception:  # noqa: BLE001 (anything else: Hydra says it)
        return
    for key, value in added:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(base, parent) if parent else base
        if isinstance(node, DictConfig) and leaf not in node:
            siblings = [str(k) for k in node]
            if difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.8):
                raise _unknown_key(key, value, siblings, added=True)


# -- data files that coconut-data writes ---------------------------------------------------------------
def prepare_command(data_cfg, path: str | Path) -> str:
    """The coconut-data command that writes `path` of `data_cfg` (its `prepare`, with `--out` when the
    data root is not the default one)."""
    command = data_cfg.get("prepare") or f"coconut-data {data_cfg.get('name')}"
    root = Path(path).absolute().parent.parent
    return command if root == data_root() else f"{command} --out {root}"


def check_prepared(data_cfg, splits: Sequence[str] = ("train", "val", "test")) -> None:
    """A dataset that coconut-data writes (`data.prepare`) whose file for one of `splits` is missing:
    one ConfigError naming the absolute path and the command that writes it."""
    if not data_cfg.get("prepare"):
        return
    for split in splits:
        path = data_cfg.get(f"{split}_path")
        if path and not Path(path).exists():
            absolute = Path(path).absolute()
            raise ConfigError(
                f"data={data_cfg.get('name')}: {absolute} does not exist. Fix: run `{prepare_command(data_cfg, path)}` "
                f"first (it writes {absolute.parent}), or give data.{split}_path=<file>"
            )


# -- thoughts against the model's positions ---------------------------------------------------------
def check_thoughts_fit(method: Method, curriculum: Curriculum, positions: int | None, max_new_tokens: int) -> None:
    """More thoughts than positions: the longest thought span, a one-token question and the
    generation budget must fit the model, whatever the data."""
    if positions is None or method.thought == "none":
        return
    thoughts = curriculum.max_latent_stage * curriculum.c_thought
    markers = 2 if method.markers else 0
    if method.num_latent is not None:
        thoughts = method.num_latent
    needed = 1 + thoughts + markers + max_new_tokens
    if needed > positions and method.num_latent is not None:
        raise ConfigError(
            f"method.num_latent={thoughts} thoughts (+{markers} markers) and data.max_new_tokens={max_new_tokens} "
            f"need at least {needed} positions, more than the model's {positions}. Fix: lower method.num_latent "
            "or data.max_new_tokens, or use a model with more positions"
        )
    if needed > positions:
        raise ConfigError(
            f"the final stage writes curriculum.max_latent_stage * c_thought = {curriculum.max_latent_stage} * "
            f"{curriculum.c_thought} = {thoughts} thoughts (+{markers} markers), and generation adds up to "
            f"data.max_new_tokens={max_new_tokens}: at least {needed} positions, more than the model's {positions}. "
            "Fix: lower curriculum.c_thought or curriculum.max_latent_stage, lower "
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
