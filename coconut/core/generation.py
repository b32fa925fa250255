"""Batched generation through continuous thoughts, with a KV cache end to end: greedy (the
default), or sampled (temperature, top-p) with several samples per question.

Prompts (question + thought span) come left-padded so that they all end in the last column
(`coconut.data.collate.collate_prompts`). One call of `ContinuousThoughtLM.run` fills the cache over
the prompt, feeding thoughts back; then each new token costs one single-position cached pass for the
whole batch. Finished rows keep decoding into the void (their tokens are dropped) so that the batch
stays rectangular; the loop stops when every row has emitted eos or `max_new_tokens` is reached.

Sampling (`num_samples` > 1) runs the prompt and its thoughts once per question, then copies each
row of the cache `num_samples` times and samples the written tokens of all copies as one batch: the
continuous thoughts stay deterministic (the same for every sample), only the text is sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from coconut.core.jacobi import jacobi_passes
from coconut.core.model import ContinuousThoughtLM, ThoughtHook


def greedy_token(model: ContinuousThoughtLM, hidden: torch.Tensor) -> torch.Tensor:
    """The most likely next token of `hidden` (..., D) that can be written as text: `<|latent|>` is
    never chosen, since its input is a thought, not a token (a half-trained model can rank it first)."""
    logits = model.logits(hidden)
    logits[..., model.latent_token_id] = float("-inf")
    return logits.argmax(-1)


def sampled_token(
    model: ContinuousThoughtLM,
    hidden: torch.Tensor,
    *,
    temperature: float,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A next token (B,) drawn from softmax(logits / temperature) of `hidden` (B, D), restricted to
    the smallest set of tokens whose probability reaches `top_p` (nucleus sampling, Holtzman et al.
    2020); `<|latent|>` never. Temperature 0 is greedy."""
    if temperature <= 0:
        return greedy_token(model, hidden)
    logits = model.logits(hidden).float() / temperature  # (B, V)
    logits[..., model.latent_token_id] = float("-inf")
    if top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)  # (B, V)
        mass_before = ordered.softmax(-1).cumsum(-1) - ordered.softmax(-1)  # probability of the tokens above
        ordered = ordered.masked_fill(mass_before >= top_p, float("-inf"))  # the top token always stays
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, ordered)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


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
    temperature: float = 0.0,
    top_p: float = 1.0,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
) -> Generation:
    """Answers for a left-padded prompt batch (B, T). With `num_samples` = n the result has B * n
    rows, question-major (row b * n + s is sample s of question b); the thoughts are computed once
    per question. Temperature 0 (the default) is greedy."""
    hidden, cache = model.run(input_ids, attention_mask, position_ids, thought_hook=thought_hook)
    if num_samples > 1:  # one copy of each question's prompt state per sample
        cache.batch_repeat_interleave(num_samples)
        hidden, input_ids, attention_mask, position_ids = (
            t.repeat_interleave(num_samples, dim=0) for t in (hidden[:, -1:], input_ids, attention_mask, position_ids)
        )
    batch = input_ids.shape[0]

    def choose(h: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B,)
        if temperature <= 0:
            return greedy_token(model, h)
        return sampled_token(model, h, temperature=temperature, top_p=top_p, generator=generator)

    next_token = choose(hidden[:, -1])  # (B,)
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
        next_token = choose(hidden[:, -1])
    generated = [row[:n].tolist() for row, n in zip(tokens, lengths.tolist())]
    # A pass per thought column (each depends on the last), one for the prompt before and after
    # them, and one per generated token after the first.
    thoughts = (input_ids == model.latent_token_id).sum(1).tolist()
    prompt_passes = [1 + t + (1 if t else 0) for t in thoughts]
    # PCCoT: the question, T passes over the band, then the band with the rest.
    if getattr(model, "jacobi_iterations", None) is not None:
        prompt_passes = [jacobi_passes(model.jacobi_iterations, t) for t in thoughts]
    emitted = (lengths + finished.long()).clamp(max=tokens.shape[1]).tolist()
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
