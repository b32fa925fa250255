"""Batched greedy generation through continuous thoughts, with a KV cache end to end.

Prompts (question + thought span) come left-padded so that they all end in the last column
(`coconut.data.collate.collate_prompts`). One call of `ContinuousThoughtLM.run` fills the cache over
the prompt, feeding thoughts back; then each new token costs one single-position cached pass for the
whole batch. Finished rows keep decoding into the void (their tokens are dropped) so that the batch
stays rectangular; the loop stops when every row has emitted eos or `max_new_tokens` is reached.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from coconut.core.model import ContinuousThoughtLM, ThoughtHook


def greedy_token(model: ContinuousThoughtLM, hidden: torch.Tensor) -> torch.Tensor:
    """The most likely next token of `hidden` (..., D) that can be written as text: `<|latent|>` is
    never chosen, since its input is a thought, not a token (a half-trained model can rank it first)."""
    logits = model.logits(hidden)
    logits[..., model.latent_token_id] = float("-inf")
    return logits.argmax(-1)


@dataclass
class Generation:
    tokens: list[list[int]]  # generated ids per row, eos excluded
    emitted: list[int]  # tokens each row generated, its eos included (the cost of the answer)
    forward_passes: list[int]  # sequential model passes each row needed (prompt, thoughts, tokens)


@torch.no_grad()
def generate(
    model: ContinuousThoughtLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    *,
    eos_token_id: int,
    max_new_tokens: int,
    thought_hook: ThoughtHook | None = None,
) -> Generation:
    batch = input_ids.shape[0]
    hidden, cache = model.run(input_ids, attention_mask, position_ids, thought_hook=thought_hook)
    next_token = greedy_token(model, hidden[:, -1])  # (B,)
    tokens = torch.empty(batch, 0, dtype=torch.long, device=input_ids.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    lengths = torch.zeros(batch, dtype=torch.long, device=input_ids.device)
    position = position_ids[:, -1:]
    for _ in range(max_new_tokens):
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        finished |= next_token == eos_token_id
        lengths += ~finished
        if bool(finished.all()) or tokens.shape[1] == max_new_tokens:
            break
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
        position = position + 1
        hidden, cache = model.run(next_token[:, None], attention_mask, position, cache)
        next_token = greedy_token(model, hidden[:, -1])
    generated = [row[:n].tolist() for row, n in zip(tokens, lengths.tolist())]
    # A pass per thought column (each depends on the last), one for the prompt before and after
    # them, and one per generated token after the first.
    thoughts = (input_ids == model.latent_token_id).sum(1).tolist()
    prompt_passes = [1 + t + (1 if t else 0) for t in thoughts]
    emitted = torch.minimum(lengths + finished.long(), torch.tensor(tokens.shape[1])).tolist()
    passes = [p + max(e - 1, 0) for p, e in zip(prompt_passes, emitted)]
    return Generation(tokens=generated, emitted=emitted, forward_passes=passes)


@torch.no_grad()
def generate_uncached(
    model: ContinuousThoughtLM, prompt: list[int], *, eos_token_id: int, max_new_tokens: int
) -> list[int]:
    """One question, no KV cache: the whole sequence is recomputed (thoughts included) for every new
    token, as the official implementation generates. The reference `generate` must equal, and the
    baseline of scripts/bench_generate.py."""
    device = next(model.parameters()).device
    ids = list(prompt)
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([ids], device=device)).logits[0, -1]
        logits[model.latent_token_id] = float("-inf")  # as greedy_token
        next_token = int(logits.argmax())
        if next_token == eos_token_id:
            break
        ids.append(next_token)
    return ids[len(prompt) :]
