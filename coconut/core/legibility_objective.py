"""The legibility objective: an auxiliary training loss that keeps each continuous thought readable
as the key content of the reasoning step it stands for (`legibility.weight` = lambda in
conf/train.yaml; lambda = 0 is the paper's method, Hao et al. 2024, arXiv:2412.06769).

    loss = LM loss + lambda * mean over scored thoughts of  -log sum_{v in T} p(v | thought)

T is the thought's target: the token ids naming its step's key content (`coconut.data.step_keys`,
the rule evaluation's legibility metrics use): for a single result (arithmetic) the key's first
token, so the term is that token's cross-entropy (when the key's spellings with and without a
leading space start with different tokens, both count, as `decode_top1` counts both); for a graph
frontier the set of its nodes' tokens, and the term is the set cross-entropy -log of the summed
probability: the thought may spread its mass over the frontier in any proportion (a superposition),
but not outside it. Thoughts without a target (a step without key content) contribute nothing.

p is read from the thought in one of two ways (`legibility.read`):

  lm_head   softmax of the LM head on the thought fed (the logit lens): what coconut-eval's
            decode_top1 and frontier metrics read, for every projection
  readout   the `sparse_readout` projection's own distribution softmax(R h) on the hidden state h
            it maps: what R is free to learn to mean

No Lightning or Hydra here; `coconut.training.lit_module` adds the term to the training loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from coconut.core.errors import ConfigError

READS = ("lm_head", "readout")


@dataclass
class LegibilityTerm:
    loss: torch.Tensor  # scalar: the mean over scored thoughts, 0 when none was scored
    thoughts_scored: int  # thoughts with a target
    samples_unscored: int  # rows with thoughts none of which has a target (no key content)


def set_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log sum_{v in targets} softmax(logits)_v per row: logits (N, V), targets (N, S) token ids
    padded with -1, at least one real id per row. For one id it is the plain cross-entropy."""
    log_probs = logits.float().log_softmax(-1)  # (N, V)
    picked = log_probs.gather(-1, targets.clamp(min=0)).masked_fill(targets < 0, float("-inf"))  # (N, S)
    return -picked.logsumexp(-1)  # (N,)


def check_read(read: str, projection: nn.Module) -> None:
    if read not in READS:
        raise ConfigError(f"legibility.read must be one of {', '.join(READS)}, got {read!r}")
    if read == "readout" and not hasattr(projection, "readout_logits"):
        raise ConfigError(
            "legibility.read=readout scores the sparse_readout projection's own distribution, but the model's "
            f"thought projection is {type(projection).__name__}. Fix: model/thought_projection=sparse_readout, "
            "or legibility.read=lm_head"
        )


def thought_legibility(
    model: nn.Module,
    input_ids: torch.Tensor,
    hidden_states: torch.Tensor,
    thought_targets: torch.Tensor,
    read: str = "lm_head",
) -> LegibilityTerm:
    """The legibility term of one training batch. `model` is the `ContinuousThoughtLM` whose forward
    gave `hidden_states` (B, T, D) on `input_ids` (B, T); `thought_targets` (B, n, S): row b's j-th
    thought's target ids (`coconut.data.collate.collate_training`). The thought at a `<|latent|>`
    in column t is the projection of the hidden state at t - 1 (recomputed here, with gradient)."""
    check_read(read, model.thought_projection)
    is_latent = input_ids == model.latent_token_id  # (B, T)
    feeds = nn.functional.pad(is_latent[:, 1:], (0, 1), value=False)  # (B, T): the state before a latent
    counts = is_latent.sum(1)  # (B,)
    most = int(counts.max()) if counts.numel() else 0
    if most > thought_targets.shape[1]:
        raise ValueError(f"thought_targets holds {thought_targets.shape[1]} thoughts per row, a row has {most}")
    has = torch.arange(thought_targets.shape[1], device=counts.device)[None] < counts[:, None]  # (B, n)
    targets = thought_targets.to(counts.device)[has]  # (N, S), row-major: row b's thoughts in order
    hidden = hidden_states[feeds]  # (N, D), the same order
    scored = (targets >= 0).any(-1)  # (N,)
    row_of = torch.arange(len(counts), device=counts.device).repeat_interleave(counts)  # (N,)
    rows_scored = torch.zeros_like(counts, dtype=torch.bool)
    rows_scored[row_of[scored]] = True
    unscored = int(((counts > 0) & ~rows_scored).sum())
    n = int(scored.sum())
    if n == 0:
        return LegibilityTerm(hidden_states.new_zeros((), dtype=torch.float32), 0, unscored)
    hidden = hidden[scored]
    projection = model.thought_projection
    logits = projection.readout_logits(hidden) if read == "readout" else model.logits(projection(hidden))  # (n, V)
    return LegibilityTerm(set_cross_entropy(logits, targets[scored]).mean(), n, unscored)
