"""Sampled generation through thoughts: temperature 0 is greedy, the thoughts are computed once and
stay deterministic, seeds reproduce; majority vote and pass@k on hand-built answer lists."""

import pytest
import torch
from conftest import tiny_lm
from omegaconf import OmegaConf

from coconut.commands.config import validate_eval_config
from coconut.core.errors import ConfigError
from coconut.core.generation import generate
from coconut.core.model import ContinuousThoughtLM
from coconut.data.collate import collate_prompts
from coconut.eval.sampling import SamplingConfig, ks_for, majority_vote, pass_at_k
from coconut.eval.thought_hooks import ThoughtRecorder

LATENT, START, END, EOS = 61, 62, 63, 0
PROMPTS = [
    [5, 6, 7, 8, START, LATENT, LATENT, LATENT, END],
    [5, 6, START, LATENT, END],
    [9, 10, 11],  # no thoughts (CoT / No-CoT)
]


def run(model, n=1, **kwargs):
    batch = collate_prompts(PROMPTS, pad_id=EOS)
    return generate(
        model,
        batch["input_ids"],
        batch["attention_mask"],
        batch["position_ids"],
        eos_token_id=EOS,
        max_new_tokens=10,
        num_samples=n,
        **kwargs,
    )


def test_sampling_at_temperature_zero_equals_greedy(family):
    model = ContinuousThoughtLM(tiny_lm(family, seed=3), LATENT).eval()
    greedy = run(model)
    sampled = run(model, n=3, temperature=0.0)
    assert sampled.tokens == [t for t in greedy.tokens for _ in range(3)]  # question-major rows
    assert sampled.emitted == [e for e in greedy.emitted for _ in range(3)]
    assert sampled.forward_passes == [p for p in greedy.forward_passes for _ in range(3)]
    # a nucleus so small that only the top token is left is greedy too, at any temperature
    tiny_nucleus = run(model, n=2, temperature=5.0, top_p=1e-6, generator=torch.Generator().manual_seed(0))
    assert tiny_nucleus.tokens == [t for t in greedy.tokens for _ in range(2)]


def test_samples_differ_share_the_thoughts_and_reproduce_with_a_seed():
    model = ContinuousThoughtLM(tiny_lm("gpt2", seed=3), LATENT).eval()
    batch = collate_prompts(PROMPTS, pad_id=EOS)
    recorder = ThoughtRecorder(batch["input_ids"], LATENT)
    out = generate(
        model,
        batch["input_ids"],
        batch["attention_mask"],
        batch["position_ids"],
        eos_token_id=EOS,
        max_new_tokens=10,
        num_samples=4,
        temperature=2.0,
        generator=torch.Generator().manual_seed(1),
        thought_hook=recorder,
    )
    # the thoughts are computed for the 3 questions, not the 12 samples: each sample continues them
    assert recorder.fed and all(fed.shape[0] == 3 for fed in recorder.fed.values())
    assert [len(t) for t in recorder.per_row()] == [3, 1, 0]
    assert len(out.tokens) == 12
    assert len({tuple(t) for t in out.tokens[:4]}) > 1  # a random model at T=2: the samples differ
    again = run(model, n=4, temperature=2.0, generator=torch.Generator().manual_seed(1))
    assert again.tokens == out.tokens


def test_majority_vote_groups_equal_answers_and_ignores_empty_ones():
    assert majority_vote(["72", "5", "72.0", "1,000", "1000", "1000.0"], "number") == "1,000"
    assert majority_vote(["5", "72", "72", "5"], "number") == "5"  # a tie: the first seen
    assert majority_vote(["", "", "", "8"], "number") == "8"  # no answer found does not vote
    assert majority_vote(["", ""], "number") == ""
    assert majority_vote(["Tom is a wumpus.", "Tom is a wumpus", "Tom is a yumpus."], "statement") == (
        "Tom is a wumpus."
    )


def test_pass_at_k_on_hand_built_counts():
    assert pass_at_k(5, 0, 1) == 0.0 and pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(2, 1, 1) == pytest.approx(0.5)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(8, 2, 8) == 1.0 and pass_at_k(8, 2, 7) == 1.0  # fewer wrong ones than draws
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the share right
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    assert ks_for(1) == [1] and ks_for(8) == [1, 2, 4, 8] and ks_for(6) == [1, 2, 4, 6]


def test_bad_sampling_settings_are_one_message():
    for bad in ({"num_samples": 0}, {"temperature": -1.0}, {"top_p": 0.0}, {"top_p": 1.5}):
        key = f"generation.{next(iter(bad))}"
        with pytest.raises(ConfigError, match=f"invalid configuration: {key} must be"):
            validate_eval_config(OmegaConf.create({"ckpt_path": "x", "generation": bad}))
    assert not SamplingConfig().active and SamplingConfig(num_samples=2).active
