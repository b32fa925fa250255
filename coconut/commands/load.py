"""Every kind of checkpoint coconut-eval and coconut-export read, loaded as one model, tokenizer
and the rule for its prompts (method, curriculum, stage, thought count):

- a coconut-train checkpoint (`.ckpt`): its own method, curriculum and data config; evaluated at
  the stage it was saved at (`stage=` to choose);
- `hf:<folder or hub id>`: a Hugging Face causal LM. A plain one is a CoT (default) or No-CoT
  (`method=no_cot`) baseline, generated as plain text; the COCONUT tokens are taken from its
  tokenizer where present (added, unused, where not). A folder written by coconut-export
  (`coconut.json` beside the model) is a COCONUT model: its method, thought tokens and count;
- a checkpoint written by the official code (facebookresearch/coconut `run.py`): a `torch.save`
  of a state dict, with `model.pretrained=<base id or folder>` naming its base model and tokenizer.
  The Coconut wrapper's parameters are prefixed `base_causallm.` (plus `embedding.weight`, the same
  tensor as the input embeddings); its CoT / No-CoT runs save the bare model, unprefixed. The
  tokenizer is rebuilt as run.py builds it: pad = eos, then `<|start-latent|>`, `<|end-latent|>`,
  `<|latent|>` added with `add_tokens` in that order (so the ids match the saved embeddings), then
  our `<pause>` after them (one unused row). Thoughts follow the same continuous-thought rule, as
  many as `n_thoughts=`, or `stage=k` x `curriculum.c_thought` (capped at
  `curriculum.max_latent_stage`).

A path of another kind gets one CheckpointError saying what was found and what was expected.
`ckpt_path=latest` and `ckpt_path=best` name the newest training run's checkpoints (`resolve_checkpoint`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from coconut.commands.build import build_curriculum, build_method
from coconut.commands.checks import CheckpointError, check_checkpoint_compatible
from coconut.core.base_model import ModelLoadError, load_pretrained, looks_local
from coconut.core.curriculum import ALL_STEPS, Curriculum
from coconut.core.errors import ConfigError
from coconut.core.methods import Method
from coconut.core.model import ContinuousThoughtLM
from coconut.core.thought_projection import build_thought_projection
from coconut.core.tokens import END_LATENT, LATENT, START_LATENT, add_special_tokens
from coconut.core.tokens import resize_and_init_embeddings as resize_embeddings
from coconut.data.sequences import stage_plan
from coconut.training.checkpoints import load_checkpoint as read_checkpoint
from coconut.training.checkpoints import require_complete
from coconut.training.lit_module import rebuild_from_checkpoint
from coconut.training.runs import renamed_knobs, upgraded

log = logging.getLogger(__name__)

TRAIN_RUNS = Path("outputs") / "train" / "runs"
HF_PREFIX = "hf:"
OFFICIAL_PREFIX = "base_causallm."
OFFICIAL_TOKENS = (START_LATENT, END_LATENT, LATENT)  # run.py's add_tokens order
EXPORT_META = "coconut.json"  # written by coconut-export beside the model
EXPORT_PROJECTION = "thought_projection.pt"  # a thought projection's weights, when it has any
EXPECTED = (
    "expected a .ckpt written by coconut-train, a coconut-train run folder (its checkpoints/stage{k}-best.ckpt "
    "give a per-stage curve), hf:<Hugging Face folder or hub id>, or a state dict saved by the official "
    "facebookresearch/coconut code with model.pretrained=<its base model id or folder>"
)


@dataclass
class LoadedCheckpoint:
    kind: str  # coconut-train | hf | coconut-export | official
    source: str  # what was loaded (a path, or hf:<id>)
    model: ContinuousThoughtLM
    tokenizer: PreTrainedTokenizerBase
    method: Method
    curriculum: Curriculum
    stage: int
    n_thoughts: int | None  # None: the stage's own count (coconut-train checkpoints)
    trained: DictConfig | None = None  # the training run's config (coconut-train only)


# -- coconut-train ------------------------------------------------------------------------------
def resolve_checkpoint(path: str) -> str:
    """`latest`: the last.ckpt of the newest training run under outputs/train/runs/. `best`: that run's
    best-validation checkpoint of its last stage (the stage{k}-best.ckpt of the highest k), so that
    what is evaluated does not depend on which epoch of the stage happened to come last."""
    if path not in ("latest", "best"):
        return path
    lasts = sorted(TRAIN_RUNS.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not lasts:
        raise ConfigError(f"ckpt_path={path}: no {TRAIN_RUNS}/*/checkpoints/last.ckpt here; give a checkpoint path")
    if path == "latest":
        return str(lasts[-1])
    folder = lasts[-1].parent
    stages = sorted(folder.glob("stage*-best.ckpt"), key=lambda p: int(p.name.removeprefix("stage").split("-")[0]))
    if not stages:
        raise ConfigError(
            f"ckpt_path=best: the newest run's {folder} holds no stage{{k}}-best.ckpt (it never validated); "
            "give ckpt_path=latest or a checkpoint path"
        )
    return str(stages[-1])


def load_checkpoint(path: str) -> dict:
    """A coconut-train checkpoint, `torch.load`-ed and checked to be one."""
    checkpoint = read_checkpoint(path, "ckpt_path")  # a missing or incomplete file: one message
    try:
        check_checkpoint_compatible(checkpoint)
    except CheckpointError as error:
        raise CheckpointError(f"ckpt_path={path}: {error}") from None
    return checkpoint


def _from_coconut_train(path: str, checkpoint: dict, cfg: DictConfig) -> LoadedCheckpoint:
    trained = OmegaConf.create(upgraded(checkpoint["hyper_parameters"]["config"]))
    # The trained method unless method=<name> asks for another compatible one (its stage rule).
    method = build_method(cfg if cfg.get("method") else trained)
    curriculum = build_curriculum(trained)
    model, tokenizer = rebuild_from_checkpoint(checkpoint)
    try:
        check_checkpoint_compatible(checkpoint, method, tokenizer)
    except CheckpointError as error:
        raise CheckpointError(f"ckpt_path={path}: {error}") from None
    # The stage the checkpoint was saved at, unless asked: stage{k}-best.ckpt is evaluated at stage k.
    stage = cfg.stage if cfg.get("stage") is not None else method.stage_at_epoch(curriculum, checkpoint["epoch"])
    return LoadedCheckpoint(
        "coconut-train", path, model, tokenizer, method, curriculum, stage, cfg.get("n_thoughts"), trained
    )


# -- checkpoints from elsewhere: the thought count they were not saved with ------------------------
def thoughts_of_stage(method: Method, curriculum: Curriculum, stage: int) -> int:
    """Thoughts at `stage` for every question, whatever its reference steps: k x c up to the last
    latent stage, max_latent_stage x c beyond it (the trained final stage's count)."""
    return stage_plan(method, curriculum, stage, ALL_STEPS).thoughts


def _foreign_curriculum(cfg: DictConfig) -> Curriculum:
    """curriculum.c_thought and max_latent_stage as given; an unset max_latent_stage is the stage
    asked (no cap below it), else the stages n_thoughts spans."""
    c = cfg.get("curriculum") or {}
    per_step = c.get("c_thought") or 1
    latest = c.get("max_latent_stage")
    if latest is None:
        if cfg.get("stage") is not None:
            latest = cfg.stage
        else:
            latest = -(-cfg.n_thoughts // per_step) if cfg.get("n_thoughts") is not None else 1
    return Curriculum(max_latent_stage=latest, c_thought=per_step)


def _foreign_thoughts(cfg: DictConfig, method: Method, curriculum: Curriculum, what: str) -> tuple[int, int | None]:
    """(stage, n_thoughts) of a checkpoint that does not say which stage it was saved at."""
    if method.thought == "none":  # plain text: the method's own stage rule, no thoughts
        return (cfg.stage if cfg.get("stage") is not None else 0), cfg.get("n_thoughts")
    if cfg.get("n_thoughts") is not None:
        return (cfg.stage if cfg.get("stage") is not None else curriculum.final_stage), cfg.n_thoughts
    if cfg.get("stage") is not None:
        return cfg.stage, thoughts_of_stage(method, curriculum, cfg.stage)
    raise ConfigError(
        f"{what} does not record how many thoughts it was trained with, and method={method.name} writes "
        "thoughts. Fix: give n_thoughts=<count> (the official GSM8K run: c_thought 2 x max_latent_stage 3 = 6; "
        "ProsQA and ProntoQA: 1 x 6 = 6), or stage=<k> with curriculum.c_thought=<c> "
        "(and curriculum.max_latent_stage=<m>)"
    )


def _ensure_tokens(tokenizer: PreTrainedTokenizerBase, lm: PreTrainedModel) -> None:
    """The COCONUT tokens the tokenizer lacks added after its own (the ids it has are kept), the
    embeddings grown to fit, and pad = eos where there is no pad."""
    try:
        add_special_tokens(tokenizer)
    except ValueError as error:  # no eos token
        raise CheckpointError(f"{error}: expected a tokenizer that ends answers with an eos token") from None
    resize_embeddings(lm, tokenizer)
    lm.config.pad_token_id = tokenizer.pad_token_id


def _load_hf(name: str, dtype: str) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    folder = Path(name).expanduser()
    if not folder.exists() and looks_local(name):
        raise CheckpointError(
            f"ckpt_path=hf:{name}: no such folder ({folder.absolute()}). Fix: give the folder save_pretrained wrote, "
            "or a hub id (owner/name)"
        )
    if folder.is_file():
        raise CheckpointError(
            f"ckpt_path=hf:{name}: found a file; expected a Hugging Face save_pretrained folder (config.json, "
            "weights, tokenizer) or a hub id. Fix: give the folder, or the file without hf: if coconut-train or the "
            "official code wrote it"
        )
    if folder.is_dir() and not (folder / "config.json").is_file():
        files = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) or "nothing"
        raise CheckpointError(
            f"ckpt_path=hf:{name}: found a folder without config.json ({files}); expected a Hugging Face "
            "save_pretrained folder (config.json, weights, tokenizer). Fix: give the folder save_pretrained wrote"
        )
    try:
        return load_pretrained(name, dtype)  # the same loading as model.pretrained= in training
    except ModelLoadError as error:
        raise CheckpointError(f"ckpt_path=hf:{name}: {error}") from None


def _from_hf(name: str, cfg: DictConfig) -> LoadedCheckpoint:
    dtype = (cfg.get("model") or {}).get("dtype") or "float32"
    tokenizer, lm = _load_hf(name, dtype)
    meta_path = Path(name) / EXPORT_META
    if meta_path.is_file():  # written by coconut-export
        meta = json.loads(meta_path.read_text())
        missing = [t for t in meta["thought_tokens"].values() if t not in tokenizer.get_vocab()]
        if missing:
            raise CheckpointError(
                f"ckpt_path=hf:{name}: {EXPORT_META} names the thought tokens {missing}, which its tokenizer lacks; "
                "expected the folder coconut-export wrote. Fix: export the checkpoint again"
            )
        projection = build_thought_projection(meta.get("thought_projection"), lm)
        if (Path(name) / EXPORT_PROJECTION).is_file():
            projection.load_state_dict(torch.load(Path(name) / EXPORT_PROJECTION, map_location="cpu"))
        model = ContinuousThoughtLM(lm, tokenizer.convert_tokens_to_ids(meta["thought_tokens"]["latent"]), projection)
        method = build_method(cfg) if cfg.get("method") else Method.from_config(meta["method"])
        curriculum = Curriculum(**renamed_knobs(meta)["curriculum"])  # an older export's names too
        asked = cfg.get("stage") is not None or cfg.get("n_thoughts") is not None
        stage, n_thoughts = (
            _foreign_thoughts(cfg, method, curriculum, f"hf:{name}") if asked else (meta["stage"], meta["n_thoughts"])
        )
        return LoadedCheckpoint("coconut-export", f"hf:{name}", model, tokenizer, method, curriculum, stage, n_thoughts)
    _ensure_tokens(tokenizer, lm)
    method = build_method(cfg) if cfg.get("method") else Method("cot", thought="none", stage="zero", markers=False)
    curriculum = _foreign_curriculum(cfg)
    stage, n_thoughts = _foreign_thoughts(cfg, method, curriculum, f"ckpt_path=hf:{name} (a plain Hugging Face model)")
    model = ContinuousThoughtLM(lm, tokenizer.convert_tokens_to_ids(LATENT))
    return LoadedCheckpoint("hf", f"hf:{name}", model, tokenizer, method, curriculum, stage, n_thoughts)


def _clean_names(state: dict) -> dict:
    """Parameter names as the module defines them: the segments wrappers add (a leading `module.` of
    DDP or `_orig_mod.` of torch.compile, `_fsdp_wrapped_module.` of FSDP anywhere) dropped, should a
    save keep them."""

    def clean(name: str) -> str:
        parts = [p for p in name.split(".") if p not in ("_fsdp_wrapped_module", "_checkpoint_wrapped_module")]
        while parts and parts[0] in ("module", "_orig_mod"):
            parts = parts[1:]
        return ".".join(parts)

    return {clean(k): v for k, v in state.items()}


def _from_official(path: str, state: dict, cfg: DictConfig) -> LoadedCheckpoint:
    state = _clean_names(state)
    wrapper = any(k.startswith(OFFICIAL_PREFIX) for k in state)
    found = (
        f"a state dict of the official Coconut wrapper ({len(state)} tensors named {OFFICIAL_PREFIX}*)"
        if wrapper
        else f"a state dict of a bare model ({len(state)} tensors, as the official CoT / No-CoT runs save)"
    )
    model_cfg = cfg.get("model") or {}
    pretrained = model_cfg.get("pretrained")
    if not pretrained:
        raise CheckpointError(
            f"ckpt_path={path}: found {found}, with no model.pretrained; expected model.pretrained=<the base model "
            "id or folder it was trained from> (its tokenizer too), e.g. model.pretrained=openai-community/gpt2"
        )
    tokenizer, lm = load_pretrained(pretrained, model_cfg.get("dtype") or "float32")
    tokenizer.pad_token = tokenizer.eos_token  # as run.py
    for token in OFFICIAL_TOKENS:
        if token not in tokenizer.get_vocab():
            tokenizer.add_tokens(token)
    weights = (
        {k.removeprefix(OFFICIAL_PREFIX): v for k, v in state.items() if k.startswith(OFFICIAL_PREFIX)}
        if wrapper
        else dict(state)
    )
    embedding = next(n for n, p in lm.named_parameters() if p is lm.get_input_embeddings().weight)
    if embedding not in weights:
        raise CheckpointError(
            f"ckpt_path={path}: found {found}, without {embedding} (the input embeddings of "
            f"model.pretrained={pretrained}); expected the checkpoint of a model built from model.pretrained. "
            "Fix: name the base model it was trained from"
        )
    # run.py resizes the embeddings to the tokenizer for COCONUT, not for CoT / No-CoT: take the saved size.
    lm.resize_token_embeddings(weights[embedding].shape[0], mean_resizing=False)
    try:
        missing, unexpected = lm.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # a shape mismatch: another architecture or size
        raise CheckpointError(
            f"ckpt_path={path}: found {found} whose shapes do not fit model.pretrained={pretrained} "
            f"({str(error).splitlines()[-1].strip()}); expected a checkpoint of that base model"
        ) from None
    tied = {n for n in missing if n.endswith("lm_head.weight") and lm.config.tie_word_embeddings}
    if set(missing) - tied or unexpected:
        raise CheckpointError(
            f"ckpt_path={path}: found {found} whose parameter names do not fit model.pretrained={pretrained} "
            f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]}); expected a checkpoint "
            "of that base model. Fix: name the base model it was trained from"
        )
    _ensure_tokens(tokenizer, lm)  # <pause> after the official three (an unused row)
    if cfg.get("method"):
        method = build_method(cfg)
    elif wrapper:
        method = Method("coconut")
    else:
        method = Method("cot", thought="none", stage="zero", markers=False)
        log.info("ckpt_path=%s: a bare model, evaluated as CoT (method=no_cot for a No-CoT run)", path)
    curriculum = _foreign_curriculum(cfg)
    stage, n_thoughts = _foreign_thoughts(cfg, method, curriculum, f"ckpt_path={path} (an official checkpoint)")
    model = ContinuousThoughtLM(lm, tokenizer.convert_tokens_to_ids(LATENT))
    return LoadedCheckpoint("official", path, model, tokenizer, method, curriculum, stage, n_thoughts)


# -- any kind ------------------------------------------------------------------------------------
def is_run_folder(path: str) -> bool:
    """A coconut-train run folder (or its checkpoints/ folder) with stage{k}-best.ckpt files."""
    folder = Path(path)
    return folder.is_dir() and any(any(folder.glob(p)) for p in ("stage*-best.ckpt", "checkpoints/stage*-best.ckpt"))


def _describe(value) -> str:
    if isinstance(value, dict):
        keys = ", ".join(map(str, list(value)[:6]))
        return f"a {type(value).__name__} with keys {keys}{', ...' if len(value) > 6 else ''}"
    return f"a {type(value).__name__}"


def load_any(path: str, cfg: DictConfig) -> LoadedCheckpoint:
    """The checkpoint at `path` (a file, or hf:<folder or id>), whatever wrote it. `cfg` supplies
    method=, stage=, n_thoughts=, and for checkpoints from elsewhere model.pretrained / model.dtype
    and curriculum.c_thought / max_latent_stage."""
    loaded = _load_any(path, cfg)
    _check_thought_count(loaded, cfg)
    # How the thoughts are computed is the method's (method=pccot method.jacobi_iterations=T overrides it).
    loaded.model.jacobi_iterations = loaded.method.jacobi_iterations
    return loaded


def _check_thought_count(loaded: LoadedCheckpoint, cfg: DictConfig) -> None:
    """`n_thoughts=N` (N > 0) under a method that writes no thoughts would fill its prompts with N
    untrained <pause> rows while the report says N thoughts. Where the method was guessed (a bare
    state dict or a plain Hugging Face model cannot say which method trained it), the message says so."""
    n = loaded.n_thoughts
    if not n or (loaded.method.thought != "none" and loaded.method.stage != "tokens"):
        return
    if not cfg.get("method") and loaded.kind in ("official", "hf"):
        what = (
            f"a bare state dict (no {OFFICIAL_PREFIX} prefix)"
            if loaded.kind == "official"
            else "a plain Hugging Face model"
        )
        raise ConfigError(
            f"ckpt_path={loaded.source}: n_thoughts={n} asks for {n} thoughts per question, but {what} cannot say "
            f"which method trained it: taken as CoT, which writes no thoughts, its prompts would hold {n} untrained "
            "<pause> rows. Fix: method=coconut if a COCONUT run saved it (the official wrapper's weights with the "
            "prefix stripped), or leave n_thoughts out for a CoT model (method=no_cot for a No-CoT one)"
        )
    raise ConfigError(
        f"n_thoughts={n}: method={loaded.method.name} writes no thoughts, so its prompts would hold {n} untrained "
        "<pause> rows. Fix: leave n_thoughts out (or n_thoughts=0), or evaluate with a method that writes thoughts"
    )


def _load_any(path: str, cfg: DictConfig) -> LoadedCheckpoint:
    if path.startswith(HF_PREFIX):
        return _from_hf(path[len(HF_PREFIX) :], cfg)
    file = Path(path)
    if file.is_dir():
        if (file / "config.json").is_file():
            raise CheckpointError(
                f"ckpt_path={path}: found a Hugging Face model folder (config.json); {EXPECTED}. "
                f"Fix: ckpt_path=hf:{path}"
            )
        raise CheckpointError(
            f"ckpt_path={path}: found a folder with no stage*-best.ckpt and no config.json; {EXPECTED}"
        )
    if not file.is_file():
        raise ConfigError(f"ckpt_path={path}: no such file; {EXPECTED}")
    with open(file, "rb") as handle:
        zipped = handle.read(2) == b"PK"  # torch.save writes a zip archive; anything else is another kind
    if zipped:
        require_complete(path, "ckpt_path")  # cut off or damaged: names the complete checkpoints beside it
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 (any unreadable file gets the same message)
        hint = f" Fix: ckpt_path=hf:{file.parent}" if (file.parent / "config.json").is_file() else ""
        raise CheckpointError(
            f"ckpt_path={path}: found a file torch.load cannot read ({type(error).__name__}); {EXPECTED}.{hint}"
        ) from None
    if isinstance(loaded, dict) and "coconut" in loaded:
        check_checkpoint_compatible(loaded)
        return _from_coconut_train(path, loaded, cfg)
    if isinstance(loaded, dict) and loaded and all(torch.is_tensor(v) for v in loaded.values()):
        return _from_official(path, loaded, cfg)
    if isinstance(loaded, dict) and "state_dict" in loaded:
        raise CheckpointError(
            f"ckpt_path={path}: found a Lightning checkpoint without coconut-train's 'coconut' section (the model "
            f"config and tokenizer); {EXPECTED}"
        )
    raise CheckpointError(f"ckpt_path={path}: found {_describe(loaded)}; {EXPECTED}")
