"""The continuous-thought wrapper around any Hugging Face causal LM (COCONUT, Hao et al. 2024,
"Training Large Language Models to Reason in a Continuous Latent Space", arXiv:2412.06769).

At every `<|latent|>` position the input embedding is replaced by the last-layer hidden state (the
one the LM head reads) at the previous position, computed with all earlier replacements applied.
Gradients flow through the replacement, so thoughts are trained end to end.

How it is computed (equal to running the model one position at a time, but fast):
the batch's latent positions lie in a band of columns [lo, hi] (the collator aligns them). We run
  1. one pass over the prefix [0, lo) that fills a KV cache,
  2. one single-column cached pass per column in [lo, hi), shared by the whole batch: a row whose
     column is a latent takes the previous column's hidden state as input, the other rows their
     token embedding,
  3. one cached pass over the rest [hi, T), column hi's input made as in 2.
So the extra cost over a plain forward is (hi - lo) small calls, not a per-position Python loop
over the batch. In training, thought_band.py keeps those calls cheap: a KV cache filled in
place instead of copied per column, every pass's weight gradients computed in one product per
weight, and the band's skinny products through a kernel that shares them out over threads;
band_columns.py runs a column through GPT-2's or Llama's layers without the decoder's per-call
set-up (for Llama in training, one autograd node a column: llama_column.py).
This module has no Lightning or Hydra in it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedModel

from coconut.core.band_columns import column_pass
from coconut.core.decoder_probe import cache_keyword, probe_decoder
from coconut.core.jacobi import jacobi_run
from coconut.core.thought_band import buffered_cache, deferred_weight_grads

# (thoughts (B, 1, D), column of the input) -> the thoughts to feed; rows that are not latent at
# that column ignore the result.
ThoughtHook = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass
class ThoughtOutput:
    hidden_states: torch.Tensor  # (B, T, D) last layer, after the final norm
    logits_of: Callable[[torch.Tensor], torch.Tensor]  # hidden states (..., D) -> logits (..., V)
    loss: torch.Tensor | None = None
    past_key_values: DynamicCache | None = None

    @cached_property
    def logits(self) -> torch.Tensor:
        """(B, T, V), computed on first use: a training step reads only the loss, which takes the
        logits of the labelled positions alone."""
        return self.logits_of(self.hidden_states)


class _DecoderOutput:
    """A decoder's output as a causal LM's forward reads it: `.last_hidden_state` or `[0]`; every
    other field (cache, attentions, router logits, ...) None."""

    def __init__(self, hidden: torch.Tensor):
        self.last_hidden_state = hidden

    def __getattr__(self, name: str):
        return None

    def __getitem__(self, index):
        return (self.last_hidden_state,)[index]


class _GivenHidden:
    """Stands in for a causal LM's decoder for one call of the model's own forward: called, it
    returns the hidden states it was given. Other attributes are the decoder's (Falcon-H1 reads
    `self.model.lm_head_multiplier`), and a sub-module stands in the same way (OPT calls
    `self.model.decoder`)."""

    def __init__(self, module: nn.Module, hidden: torch.Tensor, calls: list):
        self.module, self.hidden, self.calls = module, hidden, calls

    def __call__(self, *args, **kwargs):
        self.calls.append(self.module)
        return _DecoderOutput(self.hidden)

    def __getattr__(self, name: str):
        value = getattr(self.module, name)
        return _GivenHidden(value, self.hidden, self.calls) if isinstance(value, nn.Module) else value


def lm_logits(lm: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    """The logits (..., V) the model itself computes from last-layer hidden states (..., D): its own
    forward runs with the decoder replaced by these hidden states, so whatever it does after the
    decoder (the LM head, Cohere's `logit_scale`, Granite's `logits_scaling`, Gemma-2's soft-capping,
    MiniCPM's width scaling, a float32 cast) is applied as it defines it. Also read by the
    sparse-vocabulary thought projection, so that both see the same distribution.
    (`ContinuousThoughtLM` checks once that this equals the model's own logits.)"""
    name = lm.base_model_prefix
    decoder, calls = lm._modules[name], []
    given = _GivenHidden(decoder, hidden.reshape(1, -1, hidden.shape[-1]), calls)  # (1, N, D): any leading shape
    lm._modules[name] = given  # type: ignore[assignment]  (restored below; no hook or parameter moves)
    try:
        out = lm(inputs_embeds=given.hidden, use_cache=False)
    finally:
        lm._modules[name] = decoder
    if len(calls) != 1:
        raise RuntimeError(f"{type(lm).__name__}.forward did not call its decoder `{name}` once: no logits to take")
    logits = out.logits if hasattr(out, "logits") else out[0]
    return logits.reshape(*hidden.shape[:-1], logits.shape[-1])


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 at each row's first real token (left padding gets 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class ContinuousThoughtLM(nn.Module):
    """Wraps `lm` (any `AutoModelForCausalLM`) so that `latent_token_id` positions carry thoughts.

    `thought_projection` maps the hidden state to the next input embedding; the paper uses the
    identity. `jacobi_iterations` = T computes the thoughts by T parallel Jacobi updates instead
    (PCCoT, core/jacobi.py); None, the default, feeds them one after another.
    """

    def __init__(
        self,
        lm: PreTrainedModel,
        latent_token_id: int,
        thought_projection: nn.Module | None = None,
        jacobi_iterations: int | None = None,
    ):
        super().__init__()
        self.lm = lm
        self.latent_token_id = latent_token_id
        self.thought_projection = thought_projection or nn.Identity()
        self.jacobi_iterations = jacobi_iterations
        # Whether the decoder must be given position ids, from how it treats a left-padded row (a
        # decoder that takes them through **kwargs, or builds ALiBi from the mask like Bloom, cannot
        # be told from its signature); raises for a model this forward cannot reproduce.
        self._takes_position_ids = probe_decoder(lm, lm_logits)
        self._cache_keyword = cache_keyword(self.decoder)
        # The band's columns without the decoder's per-call set-up, where that is exact (band_columns.py).
        self._columns = column_pass(lm, self._decode)
        # Norms (B, n_band) of the thoughts fed by the last `run`, NaN where a band column held no
        # latent; None when it had no thoughts. Detached and never read here: diagnostics read it at
        # logging steps only, so the training step gains no host sync.
        self.last_thought_norms: torch.Tensor | None = None

    @property
    def config(self):
        return self.lm.config

    @property
    def decoder(self) -> nn.Module:
        # The decoder stack without the LM head: its last_hidden_state is post final-norm, which is
        # what the head reads and what the paper feeds back. (A property, so that its parameters
        # are not registered twice.)
        return self.lm.base_model

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(input_ids)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return lm_logits(self.lm, hidden)

    def _decode(self, embeds, attention_mask, position_ids, cache) -> torch.Tensor:
        kwargs = {"position_ids": position_ids} if self._takes_position_ids else {}
        kwargs[self._cache_keyword] = cache
        out = self.decoder(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=True, **kwargs)
        return out.last_hidden_state

    def run(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        cache: DynamicCache | None = None,
        thought_hook: ThoughtHook | None = None,
    ) -> tuple[torch.Tensor, DynamicCache]:
        """Hidden states (B, T, D) of `input_ids` with thoughts fed back, and the filled KV cache.

        With `cache` given, `input_ids` continue the cached sequence and `attention_mask` covers
        cache + new columns (the Hugging Face convention). `thought_hook(thoughts (B, 1, D), column)`
        sees every band column's thoughts before they are fed and may replace them (evaluation
        records thoughts and ablates them this way).
        """
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask)[:, -input_ids.shape[1] :]
        if cache is None:  # in training, one that the band's columns do not copy (thought_band.py)
            # (The Jacobi forward crops its cache after each iteration: a plain one.)
            grad = torch.is_grad_enabled() and self.jacobi_iterations is None
            cache = buffered_cache(self.lm.config, input_ids.shape[1]) if grad else DynamicCache(config=self.lm.config)
        past = cache.get_seq_length()
        embeds = self.embed(input_ids)  # (B, T, D)
        is_latent = input_ids == self.latent_token_id  # (B, T)
        band = is_latent.any(0).nonzero().flatten()  # one host sync per batch
        self.last_thought_norms = None
        if band.numel() == 0:
            return self._decode(embeds, attention_mask, position_ids, cache), cache
        lo, hi = int(band[0]), int(band[-1])
        if lo == 0:
            raise ValueError(
                "a <|latent|> token cannot start a (continued) sequence: its thought is the hidden state "
                "of the position before it"
            )
        if self.jacobi_iterations is not None:  # PCCoT: every thought updated at once, T times
            hidden, self.last_thought_norms = jacobi_run(
                self._decode, self.thought_projection, self.jacobi_iterations, embeds, is_latent,
                attention_mask, position_ids, cache, (lo, hi), thought_hook
            )  # fmt: skip
            return hidden, cache
        # In training, every pass's linear layers leave their weight gradients to one product per
        # weight, which the prefix pass's backward (autograd's last) computes (thought_band.py).
        band_grads = deferred_weight_grads(self.decoder)
        if band_grads is not None:
            embeds = band_grads.gate(embeds)
        # One split of the embeddings into the prefix, each band column and the rest: its backward is
        # one cat, where a slice per piece would each write a gradient the size of the whole sequence.
        prefix, *columns, tail = embeds.split([lo] + [1] * (hi + 1 - lo) + [embeds.shape[1] - hi - 1], dim=1)
        with band_grads.question_pass() if band_grads else nullcontext():
            chunks = [self._decode(prefix, attention_mask[:, : past + lo], position_ids[:, :lo], cache)]
        previous = chunks[-1][:, -1:]  # (B, 1, D)
        column_pass = None
        if self._columns is not None and hi > lo and self._columns.applies():
            column_pass = self._columns.prepare(attention_mask, position_ids[:, lo:hi], past, lo, band_grads)
        norms = []
        for t, column in zip(range(lo, hi + 1), columns):
            thought = self.thought_projection(previous)  # (B, 1, D)
            if thought_hook is not None:
                thought = thought_hook(thought, t)
            norms.append(thought.detach().float().norm(dim=-1))  # (B, 1)
            step_input = torch.where(is_latent[:, t, None, None], thought, column)
            if t == hi:  # nothing in the band reads its output: it joins the pass over the rest
                break
            with band_grads.column_pass() if band_grads else nullcontext():
                if column_pass is not None:
                    previous = column_pass(step_input, t, cache)
                else:
                    mask, positions = attention_mask[:, : past + t + 1], position_ids[:, t : t + 1]
                    previous = self._decode(step_input, mask, positions, cache)
            chunks.append(previous)
        self.last_thought_norms = torch.cat(norms, 1).masked_fill(~is_latent[:, lo : hi + 1], float("nan"))
        rest = torch.cat([step_input, tail], 1)  # columns hi..T-1
        with band_grads.rest_pass() if band_grads else nullcontext():
            chunks.append(self._decode(rest, attention_mask, position_ids[:, hi:], cache))
        return torch.cat(chunks, dim=1), cache

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> ThoughtOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden, cache = self.run(input_ids, attention_mask, position_ids)
        loss = None if labels is None else self.next_token_loss(hidden, labels, attention_mask)
        return ThoughtOutput(hidden_states=hidden, logits_of=self.logits, loss=loss, past_key_values=cache)

    def next_token_loss(self, hidden: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The mean cross-entropy of the labelled tokens (B, T) from last-layer hidden states (B, T, D)."""
        # Next-token loss: the logits at t predict the label at t + 1. A pad column predicts
        # nothing (a left-padded row's first token has no real position before it).
        targets = nn.functional.pad(labels[:, 1:], (0, 1), value=-100)  # (B, T)
        targets = targets.masked_fill(attention_mask == 0, -100)
        # Logits only where there is a label (a stage-k sequence's question and thoughts have
        # none): the same loss, for a fraction of the LM head's and the softmax's cost.
        scored = targets != -100  # (B, T)
        logits = self.logits(hidden[scored])  # (N, V)
        # At least float32 (a bf16 model's loss), never below the model's own precision (float64 checks).
        logits = logits if logits.dtype == torch.float64 else logits.float()
        return nn.functional.cross_entropy(logits, targets[scored])

    def layer_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: DynamicCache | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Every layer's hidden states (B, T, D) of `input_ids`, which hold no `<|latent|>` and
        continue `cache` if given: the embeddings' first, the last layer's (after the final norm)
        last, as the model's own `output_hidden_states` gives them (CODI distils on all of them)."""
        kwargs = {"position_ids": position_ids} if self._takes_position_ids else {}
        if cache is not None:
            kwargs[self._cache_keyword] = cache
        out = self.decoder(
            inputs_embeds=self.embed(input_ids),
            attention_mask=attention_mask,
            use_cache=cache is not None,
            output_hidden_states=True,
            **kwargs,
        )
        return tuple(out.hidden_states)

    @staticmethod
    def thoughts(input_ids: torch.Tensor, hidden_states: torch.Tensor, latent_token_id: int) -> list[torch.Tensor]:
        """The continuous thoughts each row consumed, in order: a list of (n_i, D) tensors.

        A thought is the hidden state one column before its `<|latent|>` position.
        """
        is_latent = input_ids == latent_token_id  # (B, T)
        return [hidden_states[b, is_latent[b].nonzero().flatten() - 1] for b in range(input_ids.shape[0])]
