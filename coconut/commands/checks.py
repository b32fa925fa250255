"""Checks that run before any training or evaluation starts, each failing with one message that
names the key and the fix:

- `validate_config`: counts and choices of a composed `coconut-train` config;
- `validate_eval_config`: the same for `coconut-eval` and `coconut-export` (thought count, limit, batch size);
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

from coconut.core.curriculum import Curriculum
from coconut.core.errors import CheckpointError, ConfigError
from coconut.core.legibility_objective import READS
from coconut.core.methods import Method
from coconut.core.tokens import SPECIAL_TOKENS
from coconut.data.checks import ANSWER_KINDS
from coconut.data.prepare import data_root


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
    _check_model_type(architecture.get("model_type"), problems)
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


def _check_model_type(model_type, problems: list[str]) -> None:
    """A from-scratch model's `model_type` must be one Hugging Face knows; the closest ones are named
    rather than the several hundred it knows."""
    from transformers import CONFIG_MAPPING  # noqa: PLC0415 (slow to import; only for from-scratch models)

    if model_type is None or model_type in CONFIG_MAPPING:
        return
    known = list(CONFIG_MAPPING.keys())
    close = difflib.get_close_matches(str(model_type), known, n=3, cutoff=0.5) or ["gpt2", "llama"]
    problems.append(
        f"model.architecture.model_type={model_type} is not a Hugging Face model type (the closest: "
        f"{', '.join(close)}; transformers knows {len(known)})"
    )


def validate_eval_config(cfg) -> None:
    """Raises one ConfigError listing every out-of-range value of a `coconut-eval` or
    `coconut-export` config, and a device this machine lacks."""
    problems: list[str] = []
    for key, minimum, hint in (
        ("n_thoughts", 0, " (or null: the stage's)"),
        ("stage", 0, " (or null: the stage the checkpoint was saved at)"),
        ("limit", 1, " (or null: every question)"),
        ("max_new_tokens", 1, " (or null: the data config's)"),
        ("cpu_threads", 1, " (or null for the automatic choice)"),
        ("curriculum.c_thought", 1, ""),
        ("curriculum.max_latent_stage", 0, " (or null)"),
    ):
        _require_int(cfg, key, minimum, problems, hint)
    if "batch_size" in cfg:
        _require_int(cfg, "batch_size", 1, problems)
    device = _get(cfg, "device")
    if device is not None and device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
        problems.append(f"device must be auto, cpu or cuda, got {device!r}")
    measure = _get(cfg, "legibility.measure")
    if measure is not None and not isinstance(measure, bool):
        problems.append(f"legibility.measure must be true, false or null (a suite: false), got {measure!r}")
    if problems:
        raise ConfigError(f"invalid configuration: {'; '.join(problems)}. Fix: give these keys valid values")
    if device is not None and str(device).startswith("cuda"):
        check_accelerator("device", device)


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
    line: an unknown group choice or a misspelt key is one line and exit code 2, before Hydra composes."""
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
                    f"{key}={choice}: no such {key} (no conf/{key}/{choice}.yaml). Valid choices: {', '.join(choices)}"
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


def check_override_keys(overrides: Sequence[str], config_dir: str | Path, config_name: str) -> None:
    """A key the composed config lacks: `curriculum.c_thougth=2` (Hydra's "not in struct" dump) and
    `+curriculum.c_thougth=2` (a new key nothing reads, the fix Hydra itself suggests) are one
    ConfigError naming the key it resembles. A `+key` unlike every key beside it is a new key and
    passes (e.g. `+model.architecture.n_inner=...`); sweeps are checked at their first value; any
    other composition error is left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: PLC0415
    from hydra.errors import ConfigCompositionException  # noqa: PLC0415
    from omegaconf import DictConfig, OmegaConf  # noqa: PLC0415

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
