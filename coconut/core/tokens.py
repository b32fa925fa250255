"""Special tokens of the COCONUT format, added to any tokenizer, and their embeddings initialised.

`<|start-latent|>` and `<|end-latent|>` mark the span of thoughts; each `<|latent|>` position carries
one continuous thought; `<pause>` is the pause-token baseline's learned filler (Goyal et al. 2024).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

START_LATENT = "<|start-latent|>"
END_LATENT = "<|end-latent|>"
LATENT = "<|latent|>"
PAUSE = "<pause>"
SPECIAL_TOKENS = (START_LATENT, END_LATENT, LATENT, PAUSE)
# The official code initialises new rows from this token's embedding; we do too where it exists.
INIT_FROM_TEXT = "<<"


@dataclass(frozen=True)
class SpecialIds:
    start_latent: int
    end_latent: int
    latent: int
    pause: int
    eos: int
    pad: int


def add_special_tokens(tokenizer: PreTrainedTokenizerBase) -> SpecialIds:
    """Adds the COCONUT tokens (idempotent) and a pad token (eos) if the tokenizer has none."""
    missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token; set one (answers end with it)")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return special_ids(tokenizer)


def special_ids(tokenizer: PreTrainedTokenizerBase) -> SpecialIds:
    ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ValueError(f"the tokenizer lacks the COCONUT tokens {SPECIAL_TOKENS}; was it saved with the run?")
    return SpecialIds(*ids, eos=tokenizer.eos_token_id, pad=tokenizer.pad_token_id)


def resize_and_init_embeddings(lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Grows the embedding matrix to the tokenizer and initialises the added rows.

    New rows copy the embedding of `<<` (as the official code does) when the tokenizer encodes it
    as one token, else they keep Hugging Face's mean-of-existing-rows initialisation.
    """
    old = lm.get_input_embeddings().weight.shape[0]
    if len(tokenizer) <= old:
        return
    lm.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    source = tokenizer.encode(INIT_FROM_TEXT, add_special_tokens=False)
    if len(source) != 1:
        return
    with torch.no_grad():
        inputs = lm.get_input_embeddings().weight
        inputs[old:] = inputs[source[0]]
        outputs = lm.get_output_embeddings()
        if outputs is not None and outputs.weight is not inputs:
            outputs.weight[old:] = outputs.weight[source[0]]
