"""CODI's training loss (Shen et al. 2025, "CODI: Compressing Chain-of-Thought into Continuous Space
via Self-Distillation", arXiv:2502.21074; code zhenyi4/codi): one model trained at once as the
chain-of-thought teacher and as the latent student, the student's hidden states at the token before
the answer pulled to the teacher's on every layer.

    loss = CE(student) + distill_loss_factor * D + ref_loss_factor * CE(teacher)

    D = 1/(L+1) sum_{l=0..L} smooth_l1(h_l^student[b, i_s], sg(h_l^teacher[b, i_t])) / std(sg(h_l^teacher[:, i_t]))

`method=codi` (coconut/conf/method/codi.yaml) sets the knobs; the names are the official code's.
Each detail follows their code at commit 4fd88d4 (src/model.py unless named):

  student        question, <|start-latent|> (their bot), `num_latent` thoughts, <|end-latent|> (their
                 eot), the answer: train.py:197-202 with --remove_eos True (the GPT-2 and Llama
                 scripts), the loop model.py:331-338. Each thought is the projection of the last
                 layer's hidden state at the position before it (model.py:283-285, 336-338): the
                 `mlp` thought projection, Dropout, Linear(D, prj_dim), GELU, Linear(prj_dim, D),
                 LayerNorm (model.py:192-200).
  teacher        question, the chain of thought, the answer, the question unlabelled
                 (train.py:189-194); the chain's last step dropped unless `include_last_cot`
                 (train.py:270-272; their `cot` of GSM8K-Aug is split on spaces, one equation each).
  student CE     the answer tokens after <|end-latent|>, the mean over the batch's labelled tokens
                 (model.py:376-382).
  teacher CE     the chain and the answer, weighted by `ref_loss_factor` (model.py:385-391).
  which token    the last token of the answer's prefix, the one before the answer's value, in both
                 sequences: theirs is the ":" of "The answer is:" (train.py:204-210, minus one at
                 model.py:326-328), ours the last token of "### " (coconut/data/sequences.py). The
                 answer text is the same in teacher and student, as theirs ("The answer is: N" in
                 both, train.py:283).
  which layers   every entry of the model's `output_hidden_states`: the embeddings and each block,
                 the last after the final norm (L + 1 entries), summed and divided by their number
                 (model.py:356-368).
  loss per layer nn.SmoothL1Loss() (beta 1, the mean over batch and width) of the student against the
                 detached teacher (model.py:214, 360); `l2`: nn.MSELoss (model.py:216).
  normalisation  with `distill_loss_div_std` (true in every script of theirs) each layer's term is
                 divided by the teacher's std at that token over batch and width, torch's unbiased
                 std, twice for l2 (model.py:362-365).
  weights        distill_loss_factor (their GPT-2 script: 1, Llama: 20), ref_loss_factor 1, the
                 student's CE 1 (model.py:391-400). The paper's alpha, beta, gamma.
  no curriculum  the student has `num_latent` thoughts from the first step (6 in their GSM8K scripts).

Not followed: their teacher runs twice, once without gradient for the distillation targets and
once with it for its CE (model.py:296-298); here it runs once and its hidden states are detached,
the same numbers when dropout is off (a second dropout mask otherwise). Their latents and answer
attend to the question's left padding and take positions counted from the padding
(`fix_attn_mask` false in their scripts, model.py:276-277, 334, 350); here padding is masked and
each row's positions start at its first token. They train LoRA adapters (r 128) in bf16; this
project fine-tunes every weight.

No Lightning or Hydra here; `coconut.training.lit_module` calls `codi_loss` for CODI batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache

from coconut.core.methods import Method
from coconut.core.model import ContinuousThoughtLM
from coconut.core.thought_band import buffered_cache


@dataclass
class CodiTerms:
    loss: torch.Tensor  # the training loss: student + distill_loss_factor * distill + ref_loss_factor * teacher
    student: torch.Tensor  # the student's cross-entropy on the answer
    teacher: torch.Tensor  # the teacher's cross-entropy on the chain and the answer (unweighted)
    distill: torch.Tensor  # D, the distillation term (unweighted)
    hidden: torch.Tensor  # (B, T, D): the student's last-layer states (step supervision reads its thoughts)


def distillation(
    student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...], loss_type: str, div_std: bool
) -> torch.Tensor:
    """D over the layers: `student[l]`, `teacher[l]` (B, D) each layer's states at the distillation
    token; the teacher's are detached here."""
    terms = []
    for s, t in zip(student, teacher, strict=True):
        t = t.detach()
        s, t = (s, t) if s.dtype == torch.float64 else (s.float(), t.float())
        term = nn.functional.smooth_l1_loss(s, t) if loss_type == "smooth_l1" else nn.functional.mse_loss(s, t)
        if div_std:
            term = term / t.std() ** (2 if loss_type == "l2" else 1)
        terms.append(term)
    return torch.stack(terms).sum() / len(terms)


def student_states(model: ContinuousThoughtLM, batch: dict) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], int]:
    """The student's last-layer hidden states (B, T, D), every layer's states from the column after
    its last thought on (each (B, T - cut, D)), and that column `cut`. Every CODI row has the same
    thoughts in the same columns (the collator aligns them), so one cut serves the batch: the
    thoughts go through `model.run`, the rest (<|end-latent|> and the answer) continues its KV cache
    with every layer's output."""
    ids, mask, positions = batch["input_ids"], batch["attention_mask"], batch["position_ids"]
    cut = int((ids == model.latent_token_id).any(0).nonzero().max()) + 1  # (B, T) -> the column after the band
    grad = torch.is_grad_enabled()
    cache = buffered_cache(model.config, ids.shape[1]) if grad else DynamicCache(config=model.config)
    head, cache = model.run(ids[:, :cut], mask[:, :cut], positions[:, :cut], cache=cache)  # (B, cut, D)
    layers = model.layer_states(ids[:, cut:], mask, positions[:, cut:], cache)  # L + 1 x (B, T - cut, D)
    return torch.cat([head, layers[-1]], 1), layers, cut


def codi_loss(model: ContinuousThoughtLM, batch: dict, method: Method) -> CodiTerms:
    """The CODI loss of one batch from `coconut.data.collate.collate_teacher` (the students' rows
    plus `teacher_*`, `distill_column`, `teacher_distill_column`)."""
    teacher = model.layer_states(
        batch["teacher_input_ids"], batch["teacher_attention_mask"], batch["teacher_position_ids"]
    )  # L + 1 x (B, T_t, D)
    teacher_ce = model.next_token_loss(teacher[-1], batch["teacher_labels"], batch["teacher_attention_mask"])
    hidden, layers, cut = student_states(model, batch)
    student_ce = model.next_token_loss(hidden, batch["labels"], batch["attention_mask"])
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    at_s, at_t = batch["distill_column"] - cut, batch["teacher_distill_column"]  # (B,), (B,)
    distill = distillation(
        tuple(h[rows, at_s] for h in layers),  # (B, D) each
        tuple(h[rows, at_t] for h in teacher),
        method.distill_loss_type,
        method.distill_loss_div_std,
    )
    loss = student_ce + method.distill_loss_factor * distill + method.ref_loss_factor * teacher_ce
    return CodiTerms(loss=loss, student=student_ce, teacher=teacher_ce, distill=distill, hidden=hidden)
