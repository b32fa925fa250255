"""Shared fixtures: tiny GPT-2 and Llama models built from configs, and the path to ../shared/data."""

from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.exists(), reason="../shared/data is absent (benchmark files are staged only on dev and CI machines)"
)


def tiny_lm(family: str, vocab_size: int = 64, seed: int = 0):
    torch.manual_seed(seed)
    if family == "gpt2":
        return GPT2LMHeadModel(
            GPT2Config(
                vocab_size=vocab_size,
                n_embd=32,
                n_layer=2,
                n_head=2,
                n_positions=128,
                bos_token_id=0,
                eos_token_id=0,
                pad_token_id=0,
            )
        )
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
        )
    )


@pytest.fixture(params=["gpt2", "llama"])
def family(request) -> str:
    return request.param
