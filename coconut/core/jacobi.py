"""The continuous-thought forward by Jacobi iteration: PCCoT (Wu, Teng and Tu 2025, "Parallel
Continuous Chain-of-Thought with Jacobi Iteration", arXiv:2506.18582; code whyNLP/PCCoT,
`models/modeling_gpt2.py` and `modeling_llama.py`, `PCCoT*LMHeadModel.forward`).

COCONUT feeds the thought at latent position i the last hidden state at i - 1, which depends on
the thoughts before it: n thoughts are n sequential passes. PCCoT updates every thought at once:

    E^0_i     = the `<|latent|>` token's embedding                       (their `input_ids` at pass 0)
    h^t       = decoder(question, E^t at the latents, the band's other tokens)      one pass, t = 0..T-1
    E^{t+1}_i = projection(h^t_{i-1})        for every latent i at once (h_{lo-1}: the question's last)
    output    = decoder(question, E^T at the latents, the rest of the sequence)     the loss is on this pass

T (`method.jacobi_iterations`, their `num_iterations`) is a knob at training and at inference. After
t updates the first t thoughts equal COCONUT's (thought j reads only thoughts before it), so T >= n
reaches COCONUT's sequential result exactly; T = 0 leaves the latent token's embedding in place (a
pause token). Gradients flow through every iteration, as in their code (nothing is detached).

How it is computed (as their code): one pass over the question [0, lo) fills the KV cache; each
iteration runs the band [lo, hi] (every latent column of the batch, the collator aligns them) on it
and crops the band off again; the last pass runs the band and the rest together. So a sequence
costs the question once, the band T + 1 times and the rest once; no single-column passes, none of
thought_band.py's machinery.

What the paper does and where this differs:
- Their model is trained with CODI's objective (Shen et al. 2025): a CoT teacher pass on the same
  weights, the answer loss of the latent pass, and a smooth-L1 distillation of every layer's hidden
  state at the answer prompt's last token (`loss_alpha`, `loss_beta`, `loss_gamma`), with LoRA on
  GPT-2 / Llama. Here the loss is this project's: the cross-entropy of the labelled tokens after
  the thoughts of the last pass (their `loss_beta` term alone); the teacher and distillation terms
  belong with the CODI method.
- They use a fixed number of thoughts (24 on GSM8K-Aug, T = 3) and no curriculum. `method=pccot`
  trains on the final stage from the first epoch (`stage: final`, no curriculum); its thought count
  is the curriculum's final-stage count, c_thought per replaced step (step-aligned like COCONUT's,
  so the legibility suite reads them), or with `curriculum.pad_latent_to_max=true` the same
  max_latent_stage x c_thought for every question, as they do (24 = 3 x 8).
- Their optional projection (`use_projection`: Linear, GELU, Linear, LayerNorm; off by default) is
  this project's `model.thought_projection`, applied to the whole band per iteration.
- Their code cannot run here: its model classes subclass transformers 4.x's GPT-2 / Llama and slice
  the question's cache per layer (`past_key_values[l][0]`), which fails on transformers >= 5.4 (this
  project's floor: "'DynamicCache' object is not subscriptable"), and its forward requires CODI's
  teacher batch (`cot_input_ids`, `cot_kd_indices`). tests/test_jacobi.py checks this
  forward against the equations above, written out step by step in float64.

A thought hook (eval/thought_hooks.py) sees every band column's thoughts at every iteration, in
order, and may replace them: an ablated or edited thought is fed from its first iteration on and the
others iterate around it, as COCONUT's later thoughts carry on from an edited one. Recording hooks
keep the last iteration's, the thoughts the answer reads. This module has no Lightning or Hydra.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import DynamicCache

# (embeds (B, n, D), attention_mask, position_ids, cache) -> last hidden states (B, n, D)
Decode = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, DynamicCache], torch.Tensor]
# (thoughts (B, 1, D), column) -> the thoughts to feed
Hook = Callable[[torch.Tensor, int], torch.Tensor]


def jacobi_passes(iterations: int, n_thoughts: int) -> int:
    """Sequential decoder passes of a prompt with `n_thoughts`: the question, T band passes, the
    band with the rest (generation's forward_passes); without thoughts, one."""
    return 1 + (iterations + 1 if n_thoughts else 0)


def _thoughts(projection: nn.Module, sources: torch.Tensor, lo: int, hook: Hook | None) -> torch.Tensor:
    """projection(sources) (B, n, D), the band's thoughts. With a hook, one column at a time, in
    order, so that a recording hook sees each column's projection input before its thoughts
    (ThoughtRecorder's contract, as in the sequential forward)."""
    if hook is None:
        return projection(sources)
    return torch.cat([hook(projection(sources[:, j : j + 1]), lo + j) for j in range(sources.shape[1])], 1)


def jacobi_run(
    decode: Decode,
    projection: nn.Module,
    iterations: int,
    embeds: torch.Tensor,
    is_latent: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    cache: DynamicCache,
    band: tuple[int, int],
    thought_hook: Hook | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Hidden states (B, T, D) of `embeds` (B, T, D) continuing `cache` (its `past` columns covered
    by `attention_mask`'s first ones), the latents of `is_latent` (B, T) inside columns
    `band` = (lo, hi) fed by `iterations` Jacobi updates; and the last iteration's thought norms
    (B, hi - lo + 1), NaN off the latents (None for T = 0). `cache` ends filled over the sequence."""
    lo, hi = band
    past = cache.get_seq_length()
    width = hi + 1 - lo
    prefix = decode(embeds[:, :lo], attention_mask[:, : past + lo], position_ids[:, :lo], cache)  # (B, lo, D)
    tokens = embeds[:, lo : hi + 1]  # (B, n, D): iteration 0 feeds the latent token's embedding
    latent = is_latent[:, lo : hi + 1, None]  # (B, n, 1)
    inputs, thoughts = tokens, None
    for _ in range(iterations):
        hidden = decode(inputs, attention_mask[:, : past + hi + 1], position_ids[:, lo : hi + 1], cache)  # (B, n, D)
        cache.crop(-width)  # back to the question's cache for the next iteration
        sources = torch.cat([prefix[:, -1:], hidden[:, :-1]], 1)  # (B, n, D): the state before each column
        thoughts = _thoughts(projection, sources, lo, thought_hook)
        inputs = torch.where(latent, thoughts, tokens)
    rest = torch.cat([inputs, embeds[:, hi + 1 :]], 1)  # (B, T - lo, D)
    out = decode(rest, attention_mask, position_ids[:, lo:], cache)
    norms = None
    if thoughts is not None:
        norms = thoughts.detach().float().norm(dim=-1).masked_fill(~latent[..., 0], float("nan"))  # (B, n)
    return torch.cat([prefix, out], 1), norms
