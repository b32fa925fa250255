"""The internals of transformers, Lightning and torch that coconut reads (docs/architecture.md,
"Library internals"): each is still there in the installed versions, and the table names them all."""

import re

import lightning as L
import pytest
import torch
from conftest import ROOT, tiny_lm
from lightning.pytorch.callbacks import ModelCheckpoint
from transformers import DynamicCache


def _attention_scaling():
    for family in ("gpt2", "llama"):
        decoder = tiny_lm(family).base_model
        layer = decoder.h[0].attn if family == "gpt2" else decoder.layers[0].self_attn
        assert isinstance(layer.scaling, float), family


def _fit_loop():
    loop = L.Trainer(logger=False, enable_checkpointing=False, max_epochs=2).fit_loop
    assert loop.max_epochs == 2 and loop.epoch_loop is not None


CHECKS = {
    "transformers.cache_utils.DynamicLayer": lambda: __import__("transformers.cache_utils").cache_utils.DynamicLayer,
    "DynamicCache.layers": lambda: DynamicCache(config=tiny_lm("gpt2").config).layers,
    "GPT2Attention.scaling": _attention_scaling,
    "transformers.models.llama.modeling_llama.rotate_half": lambda: __import__(
        "transformers.models.llama.modeling_llama", fromlist=["rotate_half"]
    ).rotate_half,
    "PretrainedConfig._attn_implementation": lambda: tiny_lm("llama").config._attn_implementation,
    "torch.ops.aten._fused_rms_norm": lambda: torch.ops.aten._fused_rms_norm,
    "torch.nn.modules.module._global_forward_hooks": lambda: torch.nn.modules.module._global_forward_hooks,
    "ModelCheckpoint._save_checkpoint": lambda: [
        getattr(ModelCheckpoint, name) for name in ("_save_checkpoint", "_save_last_checkpoint", "_monitor_candidates")
    ]
    and ModelCheckpoint()._last_global_step_saved,
    "Trainer.fit_loop.max_epochs": _fit_loop,
    "lightning.pytorch.overrides.distributed.UnrepeatedDistributedSampler": lambda: __import__(
        "lightning.pytorch.overrides.distributed", fromlist=["UnrepeatedDistributedSampler"]
    ).UnrepeatedDistributedSampler,
}


def listed() -> list[str]:
    """The first name of each row of the table (the first backticked name in its first cell)."""
    text = (ROOT / "docs" / "architecture.md").read_text().split("## Library internals", 1)[1]
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    return [re.match(r"\| `([^`]+)`", row).group(1) for row in rows]


def test_the_table_names_every_internal_checked_here():
    assert sorted(listed()) == sorted(CHECKS)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_the_internal_is_still_there(name):
    CHECKS[name]()
