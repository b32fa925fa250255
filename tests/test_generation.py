"""Batched greedy generation through thoughts equals generating each prompt alone."""

import torch
from conftest import tiny_lm

from coconut.core.generation import generate, generate_uncached
from coconut.core.model import ContinuousThoughtLM
from coconut.data.collate import collate_prompts

LATENT, START, END, EOS = 61, 62, 63, 0

PROMPTS = [
    [5, 6, 7, 8, START, LATENT, LATENT, LATENT, END],
    [5, 6, START, LATENT, END],
    [7, 8, 9, 10, 11, 12, START, END],
    [9, 10, 11],  # no thoughts at all (CoT / No-CoT)
]


def test_batched_generation_equals_one_at_a_time(family):
    model = ContinuousThoughtLM(tiny_lm(family, seed=3), LATENT).eval()
    batch = collate_prompts(PROMPTS, pad_id=EOS)
    out = generate(
        model, batch["input_ids"], batch["attention_mask"], batch["position_ids"], eos_token_id=EOS, max_new_tokens=12
    )
    for prompt, tokens in zip(PROMPTS, out.tokens):
        assert tokens == generate_uncached(model, prompt, eos_token_id=EOS, max_new_tokens=12)
        single = collate_prompts([prompt], pad_id=EOS)
        alone = generate(
            model,
            single["input_ids"],
            single["attention_mask"],
            single["position_ids"],
            eos_token_id=EOS,
            max_new_tokens=12,
        )
        assert alone.tokens[0] == tokens


def test_generation_stops_at_eos_and_counts_passes():
    lm = tiny_lm("gpt2", seed=1).eval()
    with torch.no_grad():  # make eos the only possible next token after the prompt
        lm.lm_head.weight.zero_()
        lm.lm_head.weight[EOS] = 1.0
        lm.transformer.ln_f.bias.fill_(1.0)
        lm.transformer.ln_f.weight.zero_()
    model = ContinuousThoughtLM(lm, LATENT)
    batch = collate_prompts(PROMPTS[:2], pad_id=EOS)
    out = generate(
        model, batch["input_ids"], batch["attention_mask"], batch["position_ids"], eos_token_id=EOS, max_new_tokens=8
    )
    assert out.tokens == [[], []]
    assert out.emitted == [1, 1]  # the eos
    # prefix pass + one per thought + the pass after them; eos needs no further pass
    assert out.forward_passes == [1 + 3 + 1, 1 + 1 + 1]


def test_a_model_that_ranks_the_latent_token_first_writes_the_next_best_token():
    # A half-trained model can put <|latent|> on top; it must not be fed back as text (its input is a thought).
    lm = tiny_lm("gpt2", seed=1).eval()
    with torch.no_grad():
        lm.transformer.ln_f.weight.zero_()
        lm.transformer.ln_f.bias.fill_(1.0)  # every hidden state is all ones: logits = row sums of the head
        lm.lm_head.weight.zero_()
        lm.lm_head.weight[LATENT] = 2.0
        lm.lm_head.weight[7] = 1.0
    model = ContinuousThoughtLM(lm, LATENT)
    batch = collate_prompts(PROMPTS[:2], pad_id=EOS)
    out = generate(
        model, batch["input_ids"], batch["attention_mask"], batch["position_ids"], eos_token_id=EOS, max_new_tokens=4
    )
    assert out.tokens == [[7, 7, 7, 7]] * 2
    assert generate_uncached(model, PROMPTS[0], eos_token_id=EOS, max_new_tokens=4) == [7, 7, 7, 7]
