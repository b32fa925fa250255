"""What the continuous-thought wrapper learns about a Hugging Face causal LM by running it once on a
few random tokens, instead of trusting its signatures or config names:

- whether its decoder must be given `position_ids`. Batches are left-padded (the collator aligns the
  thoughts), so a padded row's first real token must get the position an unpadded row's gets. A
  decoder that takes position ids only through `**kwargs`, or not at all, cannot be judged from
  its signature. The probe runs one unpadded and one left-padded row, in two cached chunks as the
  wrapper does, with and without position ids, and keeps the first way that gives both rows the
  same hidden states; if neither does, the model cannot be trained here and it says so.
- that the logits `coconut.core.model.lm_logits` takes from the last hidden state equal the
  model's own forward (where Cohere, Granite, Gemma-2, Falcon-H1, MiniCPM and others rescale or cap
  them).
"""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache, PreTrainedModel

from coconut.core.errors import UserInputError

REAL, PADS, FIRST_CHUNK = 6, 3, 5  # probe: real tokens, left pads of the padded row, columns of the first pass


class UnsupportedModelError(UserInputError, ValueError):
    """A base model whose behaviour the continuous-thought forward cannot reproduce."""


def accepts_position_ids(decoder: torch.nn.Module) -> bool:
    params = inspect.signature(decoder.forward).parameters.values()
    return any(p.name == "position_ids" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def cache_keyword(decoder: torch.nn.Module) -> str:
    """The name under which `decoder.forward` takes its KV cache: `cache` from transformers 5.2x on
    (`past_key_values` is deprecated there, to be removed in 5.40), `past_key_values` before and in
    models that kept it."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def _tolerance(dtype: torch.dtype) -> float:
    return 1e-4 if dtype in (torch.float32, torch.float64) else 3e-2


def _relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).abs().max() / a.abs().max().clamp(min=1e-6))


def _probe_inputs(lm: PreTrainedModel) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows: REAL + PADS real tokens, and PADS pads then the same first REAL tokens.
    Random tokens from a private generator (the caller's random state is left alone)."""
    table = lm.get_input_embeddings()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, table.weight.shape[0], (REAL + PADS,), generator=generator)
    padded = torch.cat([ids[:PADS], ids[:REAL]])  # the pads' tokens are masked out: any will do
    embeds = table(torch.stack([ids, padded]).to(table.weight.device))  # (2, T, D)
    mask = torch.ones(2, REAL + PADS, dtype=torch.long, device=embeds.device)
    mask[1, :PADS] = 0
    return embeds, mask


def _padding_error(lm: PreTrainedModel, embeds: torch.Tensor, mask: torch.Tensor, with_positions: bool) -> float:
    """How far the padded row's hidden states are from the unpadded row's, computed in two cached
    passes as `ContinuousThoughtLM.run` does."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=lm.config)
    cache_argument = cache_keyword(lm.base_model)
    hidden = []
    for lo, hi in ((0, FIRST_CHUNK), (FIRST_CHUNK, REAL + PADS)):
        kwargs = {"position_ids": positions[:, lo:hi]} if with_positions else {}
        kwargs[cache_argument] = cache
        out = lm.base_model(inputs_embeds=embeds[:, lo:hi], attention_mask=mask[:, :hi], use_cache=True, **kwargs)
        hidden.append(out.last_hidden_state)
    hidden = torch.cat(hidden, 1)  # (2, T, D)
    return _relative_difference(hidden[0, :REAL], hidden[1, PADS:])


@torch.no_grad()
def probe_decoder(lm: PreTrainedModel, logits) -> bool:
    """Whether to pass `position_ids` to `lm.base_model`; raises UnsupportedModelError when left
    padding changes the hidden states either way, or when `logits(lm, hidden)` differs from the
    model's own logits."""
    modes = {module: module.training for module in lm.modules()}  # restored one by one after
    lm.eval()  # no dropout in the comparison
    try:
        embeds, mask = _probe_inputs(lm)
        tolerance = _tolerance(embeds.dtype)
        name = lm.config.model_type
        own = lm(inputs_embeds=embeds[:1]).logits
        ours = logits(lm, lm.base_model(inputs_embeds=embeds[:1]).last_hidden_state)
        if _relative_difference(own, ours) > tolerance:
            raise UnsupportedModelError(
                f"model type {name!r}: its forward computes logits that are not its LM head applied to its "
                f"decoder's last hidden state (relative difference {_relative_difference(own, ours):.2g}), so "
                "continuous thoughts cannot be fed back through it. Fix: use another architecture"
            )
        errors = {}
        if accepts_position_ids(lm.base_model):
            try:
                errors["with position_ids"] = _padding_error(lm, embeds, mask, with_positions=True)
            except TypeError:  # the **kwargs do not reach anything that takes them
                pass
            if errors.get("with position_ids", float("inf")) <= tolerance:
                return True
        errors["without"] = _padding_error(lm, embeds, mask, with_positions=False)
        if errors["without"] <= tolerance:
            return False
        found = ", ".join(f"{k}: {v:.2g}" for k, v in errors.items())
        raise UnsupportedModelError(
            f"model type {name!r}: a left-padded row gets other hidden states than the same tokens unpadded "
            f"(relative difference {found}); batches here are left-padded, so it would train on wrong "
            "positions. Fix: use an architecture whose decoder takes position_ids (most Hugging Face "
            "causal LMs do), or make a custom decoder's forward pass position_ids on"
        )
    finally:
        for module, training in modes.items():
            module.training = training
