"""Lightning strategies that need the model to be built first: FSDP wraps each decoder block of the
base model (`trainer=fsdp`), a class known only once the Hugging Face model exists.

Every other strategy (`ddp`, `auto`, a plain string) is left to `instantiate(cfg.trainer)`.
"""

from __future__ import annotations

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from coconut.core.errors import ConfigError

# The value of `trainer.strategy.auto_wrap_policy` that asks for the base model's decoder blocks.
DECODER_BLOCKS = "decoder_blocks"


def decoder_block_classes(lm: nn.Module) -> set[type[nn.Module]]:
    """The classes of `lm`'s repeated decoder blocks (`GPT2Block`, `LlamaDecoderLayer`, ...), named by
    the model's `_no_split_modules` (the modules Hugging Face never splits across devices)."""
    names = set(getattr(lm, "_no_split_modules", None) or ())
    classes = {type(m) for m in lm.modules() if type(m).__name__ in names}
    if not classes:
        raise ConfigError(
            f"trainer.strategy.auto_wrap_policy={DECODER_BLOCKS}: {type(lm).__name__} names no decoder block class "
            f"(_no_split_modules={sorted(names)}); set trainer.strategy.auto_wrap_policy to a list of module "
            "class paths instead"
        )
    return classes


def build_strategy(trainer_cfg: DictConfig, lm: nn.Module):
    """The strategy object for `trainer_cfg.strategy` when it is a `_target_` config (FSDP), with
    `auto_wrap_policy: decoder_blocks` resolved against `lm`; None when the trainer config's own
    value (a string such as `ddp`) does."""
    strategy = trainer_cfg.get("strategy")
    if not isinstance(strategy, DictConfig) or "_target_" not in strategy:
        return None
    overrides = {}
    policy = strategy.get("auto_wrap_policy")
    if policy == DECODER_BLOCKS:
        overrides["auto_wrap_policy"] = decoder_block_classes(lm)
    elif OmegaConf.is_list(policy):
        overrides["auto_wrap_policy"] = {_import(path) for path in policy}
    return instantiate(strategy, **overrides)


def _import(path: str) -> type:
    try:
        return get_class(path)
    except Exception:  # Hydra raises ImportError, ValueError or its own errors, by Hydra version
        raise ConfigError(
            f"trainer.strategy.auto_wrap_policy: cannot import {path!r}; give full class paths such as "
            "transformers.models.gpt2.modeling_gpt2.GPT2Block"
        ) from None
