"""CoLaR's supervised loss and its latent count at inference (Tan et al. 2025, "Think Silently, Think
Fast: Dynamic Latent Compression of LLM Reasoning Chains", arXiv:2505.16552; code
xiaomi-research/colar, commit 4b6ae9a, src/models/colar.py unless named).

Each latent stands for c consecutive reasoning tokens: its input embedding is their compressed
embedding, and a latent head on the last hidden state predicts the next one. c is drawn per training
sample from a set and told to the model in the prompt ("(Thinking speed: c)"), so one model runs at
any c at inference. One training pass, teacher-forced (no thought is fed back in training):

    input    question "\n" (Thinking speed: c) | S | e_1 .. e_G | E | "###" answer <eos>
    e_g      = sum_{t in group g} emb(t) / (sqrt(n_g) + 1e-5)      the g-th c step tokens, n_g of them real
                                                                    (at c = 1: emb(t) itself; above it S
                                                                    too is over 1 + 1e-5, their "###" group)
    CE       next-token cross-entropy on S, each latent (label: one token of its group drawn uniformly),
             E (predicted from the last latent: the end of the latents) and the answer
    latent   = mean over the head's positions p in (S, e_1 .. e_G) of
               mean_d (z_p - x_{p+1} / sigma)^2,  z_p ~ N(mu(h_p), exp(log_std(h_p)))  (rsample)
             x_{p+1} the next input embedding (detached): e_1 .. e_G, then E's embedding
    loss     = ce_weight * CE + embed_modeling_weight * latent (+ entropy_weight * mean entropy)

Their details, matched (file:line):
  compression    the sum of the group's embeddings over sqrt(count) + 1e-5 with `sqrt_mean` (true in
                 their config), over count + 1e-5 without it: colar.py:144-157, configs/models/colar.yaml:23.
  grouping       their steps start with "###" (here S, <|start-latent|>), left-padded so that it sits
                 alone at the end of the first group (colar.py:103-116); the step tokens follow in
                 groups of c, the last group possibly short: colar.py:107-151.
  c in training  `max_compression_factor`: an int r draws c uniformly from 1..r, a list draws from it
                 (colar.py:69-76; their config: 5). c = 1 leaves the step tokens' embeddings as they
                 are, not divided by 1 + 1e-5 (98-100).
  latent labels  the CE label of a latent is one of its group's tokens, drawn uniformly among the real
                 ones (colar.py:159-164, utils/utils.py:12-22); S and E are labelled, the question is not
                 (colar.py:187-189).
  latent head    their LatentPolicy (modules/projector.py:16-38): Linear(D, I), GELU, Linear(I, I),
                 LayerNorm(I), then mean Linear(I, D) and log_std Linear(I, D), N(mean, exp(log_std) *
                 temperature); I = `lp_intermediate_size` (their config 2048 = Llama-1B's width; null here:
                 the model's). `lp_deterministic` (their key is spelt `lp_determinisitc`): std 1e-9.
                 Here it is the `latent_policy` thought projection (core/thought_projection.py).
  latent loss    `embed_modeling_loss` mse (their config) on an rsample of the head, or nll (-log_prob);
                 the target is the next input embedding divided by the embedding std sigma (their
                 MODEL_EMB_STD table, utils/constants.py: 0.12 for GPT-2; null here: the std of the
                 model's input embedding matrix when the head is built, kept in the checkpoint); mean over
                 width, then over the masked positions (colar.py:200-214). Weights ce_weight 1,
                 embed_modeling_weight 1, entropy_weight 0 (colar.py:248-257, yaml:16-20).
  inference      prompt question, speed c (`compression_factor`), "###" (S); each latent is the head's
                 output times sigma, fed as the next input; after each the LM head's token is read, and
                 the latents stop when it is "###" (here E) or after `max_n_latent_forward` (their 64);
                 then "###" (E) and the answer (model_base.py:216-327).

Not followed:
  - RL. Their second stage (GRPO on the latent head's samples, colar.py:269-450, modules/grpo.py) is out
    of scope: this is their supervised stage alone.
  - Sampling at inference. They sample each latent from the head (temperature 1) and the end token
    from the LM head (model_base.py:268-301), and the answer with top-p 0.9 (yaml:34-38). Here latents are
    the head's mean and the end token and the answer greedy, so that an evaluation is deterministic.
  - Their per-batch draws. c is drawn once per batch in their code (colar.py:69-76), here per sample
    from (seed, epoch, index) (data/dataset.py), so that an epoch is reproducible; the latent labels
    are drawn in the data too, not by torch.multinomial in the forward (whose pads keep weight 1e-5 and
    so are drawn, rarely, as label -100).
  - Their pad columns inside a row. The steps are left-padded between the question and "###"
    (colar.py:94-97, 103-116): in a row shorter than the batch's longest chain, or whose chain is a
    multiple of c tokens, the "###" label is predicted from a pad column instead of the question's last
    token. A row whose right padding exceeds c (114-116 moves it left only when it is exactly c) ends its
    steps with an all-pad group: its last latent's targets become that group's (label -100, the zero
    vector) and the answer's "###" is predicted from the pad column. Here each row is contiguous: S is
    predicted from the question, the last latent predicts E, as their code does where it has no pads.
    tests/test_colar.py checks against their forward on rows where their layout has none.
  - `pred_embed_forward_weight` (0 in their config) and `replace_r_with_auto_prob` ("auto" speed, 0 by
    default) are not implemented; nor LoRA (this project fine-tunes every weight).

No Lightning or Hydra here; `coconut.training.lit_module` calls `colar_loss` for CoLaR batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache

from coconut.core.generation import greedy_token
from coconut.core.methods import Method
from coconut.core.model import ContinuousThoughtLM


class LatentPolicy(nn.Module):
    """Their latent head (modules/projector.py:16-38). As a thought projection, `forward` gives the
    next latent's input embedding: the mean times `embeds_std` (inference here is deterministic)."""

    def __init__(self, dim: int, intermediate: int, deterministic: bool, embeds_std: float, dtype=torch.float32):
        super().__init__()
        self.deterministic, self.embeds_std = deterministic, embeds_std
        self.fc = nn.Sequential(
            nn.Linear(dim, intermediate, dtype=dtype),
            nn.GELU(),
            nn.Linear(intermediate, intermediate, dtype=dtype),
            nn.LayerNorm(intermediate, dtype=dtype),
        )
        self.mean = nn.Linear(intermediate, dim, dtype=dtype)
        if not deterministic:
            self.log_std = nn.Linear(intermediate, dim, dtype=dtype)

    def distribution(self, hidden: torch.Tensor, temperature: float = 1.0) -> torch.distributions.Normal:
        """N(mean, std) over the next compressed embedding divided by `embeds_std`, (..., D) each."""
        x = self.fc(hidden)
        mean = self.mean(x)
        if self.deterministic:
            return torch.distributions.Normal(mean, torch.ones_like(mean) * 1e-9)
        return torch.distributions.Normal(mean, self.log_std(x).exp() * temperature)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.mean(self.fc(hidden)) * self.embeds_std


def compress(embeds: torch.Tensor, real: torch.Tensor, sqrt_mean: bool) -> torch.Tensor:
    """Compressed embeddings (..., D) of groups `embeds` (..., c, D) whose real tokens are `real`
    (..., c): the sum over sqrt(count) + 1e-5 (`sqrt_mean`), or over count + 1e-5."""
    count = real.sum(-1, keepdim=True).to(embeds.dtype)  # (..., 1)
    total = (embeds * real[..., None]).sum(-2)  # (..., D)
    return total / ((count.sqrt() if sqrt_mean else count) + 1e-5)


def colar_inputs(
    model: ContinuousThoughtLM, input_ids: torch.Tensor, groups: torch.Tensor, factors: torch.Tensor, sqrt_mean: bool
):
    """The input embeddings (B, T, D) of a CoLaR batch: each `<|latent|>` position takes the
    compressed embedding of its group; `groups` (B, G, c) holds row b's n-th latent's step token ids
    in [b, n], -1 where there is none; `factors` (B,) each row's c. A row at c = 1 keeps its tokens'
    embeddings as they are (not over 1 + 1e-5), as their code does (colar.py:98-100)."""
    embeds = model.embed(input_ids)  # (B, T, D)
    real = groups >= 0  # (B, G, c)
    tokens = model.embed(groups.clamp(min=0))  # (B, G, c, D)
    compressed = compress(tokens, real, sqrt_mean)  # (B, G, D)
    compressed = torch.where((factors == 1)[:, None, None], tokens[:, :, 0], compressed)
    is_latent = input_ids == model.latent_token_id  # (B, T)
    # Above c = 1, S is their first group, "###" alone in it: compressed, so over 1 + 1e-5 (colar.py:103-157).
    start = torch.zeros_like(is_latent)
    start[:, :-1] = is_latent[:, 1:] & ~is_latent[:, :-1]  # (B, T): the column before each row's first latent
    start &= (factors > 1)[:, None]
    embeds = torch.where(start[..., None], embeds / (1 + 1e-5), embeds)
    # Row b's latents in order are its groups 0 .. n_b - 1: the same row-major order on both sides.
    has_group = real.any(-1)  # (B, G)
    return embeds.masked_scatter(is_latent[..., None], compressed[has_group]), is_latent


@dataclass
class ColarTerms:
    loss: torch.Tensor  # ce_weight * ce + embed_modeling_weight * latent + entropy_weight * entropy
    ce: torch.Tensor  # next-token cross-entropy (S, latents, E, answer)
    latent: torch.Tensor  # the latent head's loss (embed_modeling_loss), unweighted
    entropy: torch.Tensor  # the head's mean entropy


def colar_loss(model: ContinuousThoughtLM, batch: dict, method: Method) -> ColarTerms:
    """The CoLaR loss of one batch from `coconut.data.collate.collate_training` with `colar_groups`."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    embeds, is_latent = colar_inputs(model, ids, batch["colar_groups"], batch["colar_factors"], method.sqrt_mean)
    kwargs = {"position_ids": batch["position_ids"]} if model._takes_position_ids else {}
    hidden = model.decoder(inputs_embeds=embeds, attention_mask=mask, use_cache=False, **kwargs).last_hidden_state
    ce = model.next_token_loss(hidden, batch["labels"], mask)
    # The head reads S (the column before the first latent) and every latent, and predicts the next
    # input: the next latent, or E after the last.
    source = is_latent.clone()  # (B, T)
    source[:, :-1] |= is_latent[:, 1:]
    target = torch.zeros_like(source)
    target[:, 1:] = source[:, :-1]
    head = model.thought_projection
    dist = head.distribution(hidden[source])  # (N, D) each
    gold = embeds[target].detach() / head.embeds_std  # (N, D)
    if method.embed_modeling_loss == "nll":
        latent = -dist.log_prob(gold).mean(-1)  # (N,)
    else:
        latent = nn.functional.mse_loss(dist.rsample(), gold, reduction="none").mean(-1)  # (N,)
    latent, entropy = latent.mean(), dist.entropy().mean(-1).mean()
    loss = method.ce_weight * ce + method.embed_modeling_weight * latent
    if method.entropy_weight:
        loss = loss + method.entropy_weight * entropy
    return ColarTerms(loss=loss, ce=ce, latent=latent, entropy=entropy)


@torch.no_grad()
def latent_counts(model: ContinuousThoughtLM, batch: dict, end_id: int, max_latents: int) -> list[int]:
    """How many latents each prompt (question, speed, S; left-padded) gets: latents are fed one after
    another (the head's output on the last hidden state) until the LM head's token after one is E
    (`end_id`), at most `max_latents`; at least one (model_base.py:265-304)."""
    ids, mask, positions = batch["input_ids"], batch["attention_mask"], batch["position_ids"]
    hidden, cache = model.run(ids, mask, positions, cache=DynamicCache(config=model.config))
    last, position = hidden[:, -1:], positions[:, -1:]  # (B, 1, D), (B, 1)
    counts = torch.full((ids.shape[0],), max_latents, dtype=torch.long, device=ids.device)
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    for n in range(1, max_latents + 1):
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        position = position + 1
        last = model._decode(model.thought_projection(last), mask, position, cache)  # (B, 1, D)
        ended = (greedy_token(model, last[:, 0]) == end_id) & ~done
        counts[ended] = n
        done |= ended
        if bool(done.all()):
            break
    return counts.tolist()
