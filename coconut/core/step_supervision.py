"""SIM-CoT step supervision (Wei et al. 2025, "SIM-CoT: Supervised Implicit Chain-of-Thought",
arXiv:2509.20317; code InternLM/SIM-CoT): during training only, an auxiliary decoder writes out,
from each group of continuous thoughts, the text of the reasoning step it stands for; its
cross-entropy joins the training loss. The decoder is dropped at inference: generation, evaluation
and `coconut-export` never see it.

    loss = the method's loss + weight * mean over groups j with a target of L_j

    L_j = sum_{b, t} CE(decoder([thoughts of group j of row b ; E(step_j of row b)])_t, step_j,t) / N_j

N_j is the number of rows with a target in group j (`loss_level: sample`, their COCONUT variant) or
the number of target tokens in group j (`loss_level: token`, their CODI variant). Each detail
follows their code (commit f3ae967; `Coconut/coconut.py` = their COCONUT + SIM-CoT,
`CODI/src/model.py` = their CODI + SIM-CoT):

  decoder        a second copy of the causal LM, trained with it, same optimizer
                 (Coconut/run.py:121-122, 185; CODI/src/model.py:327-334). Here: a copy of the LM as
                 this run starts it (`StepDecoder.of`), kept on the LightningModule, so it is in the
                 training checkpoints and nowhere else.
  its input      the group's thoughts as the first input embeddings, then the step's tokens embedded
                 by the *reasoning* model's embedding table, not the decoder's (Coconut/coconut.py:
                 736-739, `self.embedding` is the base model's, coconut.py:313-316;
                 CODI/src/model.py:619-620, `get_embd(self.codi)`), then eos.
  labels         the step's tokens and the eos after it; the thoughts and the padding are not
                 labelled (coconut.py:745-748; model.py:627-631). Shifted: the last thought
                 predicts the step's first token.
  positions      1, 2, ... in their COCONUT variant (coconut.py:744), 0, 1, ... in their CODI
                 variant (no position_ids given, model.py:641-645): `first_position`.
  which thoughts COCONUT: group j = thoughts j*c .. j*c + c - 1, the step they replaced
                 (coconut.py:733-736). CODI (c = 1): the `num_latent` thoughts fed and also the
                 projection of the last thought's own hidden state, which is never fed:
                 num_latent + 1 groups (model.py:468, 482-509, 605-636). Here `extra_thought`.
  which steps    `coconut.data.sequences.step_texts`: step j for the first cap - 1 groups, every
                 step after them joined into the last (cap = max_latent_stage, coconut.py:598-612;
                 num_latent + 1 on the teacher's steps for CODI, model.py:199-210); a COCONUT group
                 beyond the record's steps writes the answer, "### N" (their pseudo thought,
                 coconut.py:569-592), a CODI one has no target (model.py:212-214, 661-665).
  normalisation  sample (coconut.py:771, 779-785) or token (model.py:664, CrossEntropyLoss's mean),
                 then the mean over the groups with a target (coconut.py:785 divides by the group
                 count, every group having a target there; model.py:736 counts those with one).
  weight         `weight` (1.0 in their COCONUT code, coconut.py:785; `explain_loss_factor`,
                 default 1, model.py:116, 735).
  gradients      flow into the decoder, into the thoughts (not detached: the reasoning model learns
                 from it) and into the reasoning model's embedding table through the step's tokens.

Not followed: their decoder is a fresh copy of the pretrained model (Coconut/run.py:121), while the
reasoning model starts from their CoT checkpoint; here it copies the LM this run starts from (the
`init_from` checkpoint's, when given). Their decoder's vocabulary is the pretrained one; this copy
carries the three thought tokens too (three more logits in its softmax). Their merged last step
joins GSM8K-Aug's `<<...>>` spans with "\n" (COCONUT) or nothing (CODI); here steps are joined with
"\n", as the records write them. Their CODI decoder runs under bf16 autocast; here in the model's
dtype. Their COCONUT code's `training_method` (freezing one model or the other) and `use_prj`
(a projection on the decoder's output) are not offered: their scripts use neither.

How it differs from `legibility.weight` (coconut/core/legibility_objective.py): the legibility
objective reads one thought through the reasoning model's own LM head (the logit lens) and asks for
the step's key content only (an arithmetic result's first token, a graph frontier's nodes); it adds
no weights and keeps the thought decodable by the model itself. Step supervision asks a separate,
trained decoder for the whole step text, token by token, from the c thoughts together: the thought
must carry the step's content, but in whatever code the decoder learns, so decode_top1 and the
frontier metrics (which read the LM head) need not rise with it.

No Lightning or Hydra here; `coconut.training.lit_module` adds the term to the training loss.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from coconut.core.errors import ConfigError
from coconut.core.model import ContinuousThoughtLM, lm_logits

LOSS_LEVELS = ("sample", "token")


@dataclass
class StepTerm:
    loss: torch.Tensor  # scalar: the mean over groups with a target of L_j, 0 when none has one
    groups: int  # groups with a target, over the batch's columns of groups
    tokens: int  # target tokens written (eos included)


@dataclass(frozen=True)
class StepSupervision:
    """What the training step needs: the term's weight, its normalisation, and which of their two
    variants lays the thoughts out (`codi`: num_latent + 1 single-thought groups, positions from 0;
    else groups of c_thought, positions from 1)."""

    weight: float
    c_thought: int = 1  # thoughts per group: the curriculum's c_thought; 1 for CODI
    loss_level: str = "sample"
    codi: bool = False

    def __post_init__(self):
        check_loss_level(self.loss_level)


def check_loss_level(loss_level: str) -> None:
    if loss_level not in LOSS_LEVELS:
        raise ConfigError(f"step_supervision.loss_level must be one of {', '.join(LOSS_LEVELS)}, got {loss_level!r}")


class StepDecoder(nn.Module):
    """The auxiliary decoder: a causal LM of its own, read only by `step_loss`."""

    def __init__(self, lm: PreTrainedModel):
        super().__init__()
        self.lm = lm

    @classmethod
    def of(cls, lm: PreTrainedModel) -> StepDecoder:
        """A copy of `lm` (weights and all), trained apart from it from here on."""
        return cls(copy.deepcopy(lm))


def group_thoughts(
    model: ContinuousThoughtLM, input_ids: torch.Tensor, hidden_states: torch.Tensor, extra_thought: bool
) -> torch.Tensor:
    """(B, n, D): row b's thoughts in order, recomputed with gradient from `hidden_states` (B, T, D):
    the thought at a `<|latent|>` in column t is the projection of the hidden state at t - 1, and
    rows' bands start in one column (`coconut.data.collate`). `extra_thought`: one more, the
    projection of the last band column's own state (CODI's num_latent + 1-th). Entries past a row's
    own thoughts are read from other columns; their groups have no target."""
    is_latent = input_ids == model.latent_token_id  # (B, T)
    band = is_latent.any(0).nonzero().flatten()
    if band.numel() == 0:
        return hidden_states.new_zeros(input_ids.shape[0], 0, hidden_states.shape[-1])
    lo, hi = int(band[0]), int(band[-1])
    sources = hidden_states[:, lo - 1 : hi + (1 if extra_thought else 0)]  # (B, n, D)
    return model.thought_projection(sources)


def step_loss(
    model: ContinuousThoughtLM,
    decoder: StepDecoder,
    input_ids: torch.Tensor,
    hidden_states: torch.Tensor,
    step_texts: torch.Tensor,
    c_thought: int,
    *,
    extra_thought: bool = False,
    loss_level: str = "sample",
    first_position: int = 1,
) -> StepTerm:
    """The step-supervision term of one training batch. `hidden_states` (B, T, D): the reasoning
    model's last-layer states on `input_ids` (B, T); `step_texts` (B, G, S): row b's j-th group's
    target ids, eos-terminated, padded with -1 (`coconut.data.collate`); a group without a target
    is all -1. Group j is thoughts j*c .. j*c + c - 1."""
    check_loss_level(loss_level)
    thoughts = group_thoughts(model, input_ids, hidden_states, extra_thought)  # (B, n, D)
    B, G, S = step_texts.shape
    step_texts = step_texts.to(input_ids.device)
    has = (step_texts >= 0).any(-1)  # (B, G)
    if G == 0 or not bool(has.any()):
        return StepTerm(hidden_states.new_zeros((), dtype=torch.float32), 0, 0)
    if G * c_thought > thoughts.shape[1]:
        raise ValueError(f"step_texts holds {G} groups of {c_thought} thoughts, the batch has {thoughts.shape[1]}")
    groups = thoughts[:, : G * c_thought].reshape(B, G, c_thought, -1)[has]  # (N, c, D)
    ids = step_texts[has]  # (N, S)
    real = ids >= 0  # (N, S)
    steps = model.embed(ids.clamp(min=0))  # (N, S, D): the reasoning model's embedding table
    embeds = torch.cat([groups.to(steps.dtype), steps], 1)  # (N, c + S, D)
    N, width = embeds.shape[:2]
    mask = torch.cat([real.new_ones(N, c_thought), real], 1).long()  # (N, c + S): right padding only
    positions = first_position + torch.arange(width, device=embeds.device).expand(N, width)
    out = decoder.lm.base_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions)
    states = out.last_hidden_state[:, c_thought - 1 : -1]  # (N, S, D): each predicts ids[:, t]
    logits = lm_logits(decoder.lm, states[real])  # (M, V)
    ce = nn.functional.cross_entropy(logits.float(), ids[real], reduction="none")  # (M,)
    # Sum within each group j across rows, then its normaliser N_j.
    group_of = torch.arange(G, device=ids.device).expand(B, G)[has]  # (N,)
    per_group = torch.zeros(G, dtype=ce.dtype, device=ce.device).index_add(
        0, group_of.repeat_interleave(real.sum(1)), ce
    )  # (G,)
    if loss_level == "sample":
        norm = has.sum(0)  # (G,): rows with a target
    else:
        norm = torch.zeros(G, dtype=torch.long, device=ids.device).index_add(0, group_of, real.sum(1))
    scored = norm > 0  # (G,)
    loss = (per_group[scored] / norm[scored]).mean()
    return StepTerm(loss, int(scored.sum()), int(real.sum()))
