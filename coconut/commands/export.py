"""`coconut-export`: any checkpoint coconut-eval reads, written as a Hugging Face `save_pretrained`
folder that needs nothing from this project to load as a causal LM:

    <out>/config.json, model weights     the base causal LM (`AutoModelForCausalLM.from_pretrained(out)`)
    <out>/tokenizer files                the tokenizer, with <|start-latent|>, <|end-latent|>, <|latent|>, <pause>
    <out>/coconut.json                   the thought tokens and their ids, how many thoughts to write, the
                                         method, curriculum, stage and thought projection
    <out>/thought_projection.pt          the projection's weights (only when it has any, e.g. linear)

`coconut-eval ckpt_path=hf:<out> data=...` evaluates the folder with the same thoughts and gives the
same answers as the checkpoint it came from.

    coconut-export ckpt_path=outputs/train/runs/<time>/checkpoints/last.ckpt out=exported/coconut-gpt2

`export(cfg)` does the work; the `@hydra.main` shell is coconut/cli/export.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from coconut.commands.config import validate_export_config
from coconut.commands.load import EXPORT_META, EXPORT_PROJECTION, load_any, resolve_checkpoint, thoughts_of_stage
from coconut.core.errors import ConfigError, writable_folder
from coconut.core.thought_projection import projection_config
from coconut.core.tokens import END_LATENT, LATENT, PAUSE, START_LATENT

log = logging.getLogger(__name__)

EXPORT_FORMAT = 1


def export(cfg: DictConfig) -> Path:
    """Writes the folder `cfg.out` from `cfg.ckpt_path`; returns it."""
    validate_export_config(cfg)  # n_thoughts, stage, curriculum.* in range
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"out={out}: exists and is not an empty folder. Fix: choose a new folder")
    writable_folder(out, f"out={out}")  # before the model is loaded
    ckpt_path = resolve_checkpoint(cfg.ckpt_path)
    loaded = load_any(ckpt_path, cfg)
    model, tokenizer = loaded.model, loaded.tokenizer
    n_thoughts = (
        loaded.n_thoughts
        if loaded.n_thoughts is not None
        else thoughts_of_stage(loaded.method, loaded.curriculum, loaded.stage)
    )
    out.mkdir(parents=True, exist_ok=True)
    model.lm.save_pretrained(out)
    tokenizer.save_pretrained(out)
    projection = model.thought_projection.state_dict()
    if projection:
        torch.save(projection, out / EXPORT_PROJECTION)
    tokens = {"start": START_LATENT, "end": END_LATENT, "latent": LATENT, "pause": PAUSE}
    meta = {
        "format": EXPORT_FORMAT,
        "source": loaded.source,
        "source_kind": loaded.kind,
        "thought_tokens": tokens,
        "thought_token_ids": {name: tokenizer.convert_tokens_to_ids(token) for name, token in tokens.items()},
        "n_thoughts": n_thoughts,
        "stage": loaded.stage,
        "method": dataclasses.asdict(loaded.method),
        "curriculum": dataclasses.asdict(loaded.curriculum),
        "thought_projection": projection_config(model.thought_projection),
        "prompt": (
            "question + '\\n', then <|start-latent|> + <|latent|> x n_thoughts + <|end-latent|> (method.markers; "
            "<pause> for method.thought=pause; nothing for none); each <|latent|> input is the last hidden state "
            "of the position before it; the answer follows '### '"
        ),
    }
    (out / EXPORT_META).write_text(json.dumps(meta, indent=2) + "\n")
    log.info(
        f"exported {ckpt_path} ({loaded.kind}, {loaded.method.name}, stage {loaded.stage}, {n_thoughts} thoughts) "
        f"to {out}"
    )
    return out
