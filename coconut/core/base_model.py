"""The base causal LM and its tokenizer: a Hugging Face id or local folder (pretrained), or a
config built from scratch with a tokenizer trained on the run's own data (digits split).

Either way the COCONUT special tokens are added and the embedding matrix grown to fit.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from coconut.core.errors import UserInputError
from coconut.core.tokenizer import build_tokenizer
from coconut.core.tokens import SpecialIds, add_special_tokens, resize_and_init_embeddings

log = logging.getLogger(__name__)


class ModelLoadError(UserInputError, RuntimeError):
    pass


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a connection (HF_ENDPOINT), at once rather than after the
    download client's retries; True behind a proxy (the proxy decides), False with HF_HUB_OFFLINE."""
    from huggingface_hub import constants  # noqa: PLC0415 (reads HF_ENDPOINT / HF_HUB_OFFLINE when imported)

    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return True
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        return False
    return True


def looks_local(name: str) -> bool:
    """Whether `name` can only be a local path: a hub id is `owner/name` (or `name`)."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _local_only(name_or_path: str) -> bool:
    """For a hub id: whether to load from the local cache alone (the hub cannot be reached); a
    ModelLoadError naming the cache when the id is not there either."""
    from huggingface_hub import constants, try_to_load_from_cache  # noqa: PLC0415

    if Path(name_or_path).expanduser().exists() or _hub_reachable():
        return False
    if isinstance(try_to_load_from_cache(name_or_path, "config.json"), str):
        return True
    raise ModelLoadError(
        f"{name_or_path} is not a local folder, the Hugging Face hub ({constants.ENDPOINT}) cannot be reached from "
        f"here, and the cache it would be read from ({constants.HF_HUB_CACHE}) holds no copy of it. Fix: download "
        f"it where the hub is reachable (`hf download {name_or_path}`) into that cache (HF_HOME), or give a local "
        "folder saved with save_pretrained"
    )


def load_pretrained(name_or_path: str, dtype: str = "float32") -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    folder = Path(name_or_path).expanduser()
    if not folder.exists() and looks_local(name_or_path):
        raise ModelLoadError(
            f"model.pretrained={name_or_path}: no such folder ({folder.absolute()}). Fix: give the folder "
            "save_pretrained wrote, or a hub id (owner/name)"
        )
    local = _local_only(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=local)
        lm = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=getattr(torch, dtype), local_files_only=local)
    except OSError as error:
        raise ModelLoadError(
            f"could not load model.pretrained={name_or_path!r}: {error}\n"
            "Fix: give a local folder saved with save_pretrained, or a Hugging Face id on a machine that "
            "can reach the hub (set HF_HUB_OFFLINE=1 to use only the local cache)."
        ) from error
    return tokenizer, lm


def build_from_scratch(
    architecture: dict, texts: Iterable[str], vocab_size: int, dtype: str = "float32"
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """A tokenizer trained on `texts`, then a randomly initialised model sized to it."""
    tokenizer = build_tokenizer(texts, vocab_size=vocab_size)
    add_special_tokens(tokenizer)
    architecture = dict(architecture)
    model_type = architecture.pop("model_type")
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **architecture,
    )
    lm = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    return tokenizer, lm


def load_base_model(model_cfg, texts: Iterable[str]) -> tuple[PreTrainedTokenizerBase, PreTrainedModel, SpecialIds]:
    """`model_cfg` has `pretrained` (id or folder) or `architecture` (an HF config dict with
    `model_type`); `tokenizer_vocab_size` sizes a from-scratch tokenizer."""
    if model_cfg.get("pretrained"):
        tokenizer, lm = load_pretrained(model_cfg.pretrained, model_cfg.get("dtype", "float32"))
    elif model_cfg.get("architecture"):
        tokenizer, lm = build_from_scratch(
            model_cfg.architecture, texts, model_cfg.tokenizer_vocab_size, model_cfg.get("dtype", "float32")
        )
    else:
        raise ModelLoadError("set model.pretrained (an id or folder) or model.architecture (a config to build)")
    ids = add_special_tokens(tokenizer)
    resize_and_init_embeddings(lm, tokenizer)
    lm.config.pad_token_id = tokenizer.pad_token_id
    n_params = sum(p.numel() for p in lm.parameters())
    log.info("base model %s: %.2fM parameters, vocabulary %d", lm.config.model_type, n_params / 1e6, len(tokenizer))
    return tokenizer, lm, ids


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)


def max_positions(model_config) -> int | None:
    """The positions a Hugging Face model config allows (GPT-2 `n_positions`, Llama and most others
    `max_position_embeddings`); None when it states no limit."""
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(model_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
