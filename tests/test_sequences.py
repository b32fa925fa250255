"""Exact stage-k sequences and label masks (the curriculum's contract with the model)."""

import random

import pytest

from coconut.core.curriculum import ALL_STEPS, Curriculum, StagePlan
from coconut.core.methods import Method
from coconut.core.tokens import SpecialIds
from coconut.data.sequences import IGNORE, TokenizedSample, build_prompt, build_sequence

S, E, L, P, EOS = 100, 101, 102, 103, 1
IDS = SpecialIds(start_latent=S, end_latent=E, latent=L, pause=P, eos=EOS, pad=0)
Q = [10, 11]
STEPS = [[20, 21], [30], [40, 41, 42]]  # three steps
A = [50, 51, EOS]
SAMPLE = TokenizedSample(question=Q, steps=STEPS, answer=A)
COCONUT = Method("coconut")
X = IGNORE


def seq(stage, curriculum, method=COCONUT):
    s = build_sequence(SAMPLE, stage, method, curriculum, IDS)
    assert len(s.input_ids) == len(s.labels)
    return s.input_ids, s.labels


def test_stage_zero_is_chain_of_thought_between_empty_markers():
    ids, labels = seq(0, Curriculum(max_latent_stage=3))
    assert ids == [10, 11, S, E, 20, 21, 30, 40, 41, 42, 50, 51, EOS]
    assert labels == [X, X, X, X, 20, 21, 30, 40, 41, 42, 50, 51, EOS]


def test_stage_k_replaces_k_steps_with_k_times_c_thoughts():
    ids, labels = seq(1, Curriculum(max_latent_stage=3, c_thought=2))
    assert ids == [10, 11, S, L, L, E, 30, 40, 41, 42, 50, 51, EOS]
    assert labels == [X, X, X, X, X, X, 30, 40, 41, 42, 50, 51, EOS]
    ids, labels = seq(2, Curriculum(max_latent_stage=3, c_thought=1))
    assert ids == [10, 11, S, L, L, E, 40, 41, 42, 50, 51, EOS]
    assert labels == [X] * 6 + [40, 41, 42, 50, 51, EOS]


def test_stage_up_to_max_writes_k_thoughts_even_past_the_last_step():
    # As the official code: stage 3 <= max 4 on a 3-step sample writes 3 thoughts, and stage 4
    # (still <= max) writes 4 although there are only 3 steps to replace.
    ids, _ = seq(4, Curriculum(max_latent_stage=4))
    assert ids == [10, 11, S, L, L, L, L, E, 50, 51, EOS]


def test_beyond_max_stage_every_step_goes_and_thoughts_are_capped():
    # More steps (3) than stages (max 2): stage 3 drops all three steps, thoughts capped at 2.
    ids, labels = seq(3, Curriculum(max_latent_stage=2))
    assert ids == [10, 11, S, L, L, E, 50, 51, EOS]
    assert labels == [X] * 6 + [50, 51, EOS]
    # With max 5 and only 3 steps, the cap is the number of steps ...
    ids, _ = seq(6, Curriculum(max_latent_stage=5, c_thought=2))
    assert ids.count(L) == 3 * 2
    # ... unless pad_latent_to_max asks for max_latent_stage * c always.
    ids, _ = seq(6, Curriculum(max_latent_stage=5, c_thought=2, pad_latent_to_max=True))
    assert ids.count(L) == 5 * 2


def test_baselines_cot_and_no_cot():
    cot = Method("cot", thought="none", stage="zero", markers=False)
    no_cot = Method("no_cot", thought="none", stage="final", markers=False)
    for stage in (0, 2, 9):
        assert seq(stage, Curriculum(), cot)[0] == [10, 11, 20, 21, 30, 40, 41, 42, 50, 51, EOS]
        ids, labels = seq(stage, Curriculum(), no_cot)
        assert ids == [10, 11, 50, 51, EOS]
        assert labels == [X, X, 50, 51, EOS]


def test_pause_tokens_take_the_place_of_thoughts():
    pause = Method("pause_as_thought", thought="pause")
    assert seq(2, Curriculum(), pause)[0] == [10, 11, S, P, P, E, 40, 41, 42, 50, 51, EOS]


def test_prompt_is_the_sequence_up_to_the_end_marker_and_n_thoughts_overrides():
    curriculum = Curriculum(max_latent_stage=3, c_thought=2)
    assert build_prompt(SAMPLE, 1, COCONUT, curriculum, IDS) == [10, 11, S, L, L, E]
    assert build_prompt(SAMPLE, 1, COCONUT, curriculum, IDS, n_thoughts=5) == [10, 11, S] + [L] * 5 + [E]


@pytest.mark.parametrize("pad", [False, True])
def test_prompt_thoughts_never_read_the_reference_steps(pad):
    """At evaluation the thought count is the stage's (k x c, final stage max_latent_stage x c),
    the same for a question with no reference steps, one step, or more steps than stages; only the
    training sequence follows the steps (min(steps, max) x c at the final stage without padding)."""
    curriculum = Curriculum(max_latent_stage=3, c_thought=2, pad_latent_to_max=pad)
    samples = [TokenizedSample(Q, steps, A) for steps in ([], [[20]], STEPS, STEPS + [[60], [70]])]
    for stage, expected in [(0, 0), (1, 2), (2, 4), (3, 6), (4, 6), (9, 6)]:
        assert [build_prompt(s, stage, COCONUT, curriculum, IDS).count(L) for s in samples] == [expected] * 4
    # The training sequences are unchanged: the final stage caps at the sample's steps unless padded.
    final = [build_sequence(s, 4, COCONUT, curriculum, IDS).thoughts for s in samples]
    assert final == ([6, 6, 6, 6] if pad else [0, 2, 6, 6])
    pause = Method("pause", thought="pause", stage="final", markers=False)
    assert [build_prompt(s, 0, pause, curriculum, IDS).count(P) for s in samples] == [6] * 4
    no_cot = Method("no_cot", thought="none", stage="final", markers=False)
    assert [build_prompt(s, 0, no_cot, curriculum, IDS) for s in samples] == [Q] * 4


def test_stage_schedule_and_plans():
    c = Curriculum(epochs_per_stage=3, max_latent_stage=2)
    assert [c.stage_for_epoch(e) for e in range(12)] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    longer_start = Curriculum(epochs_per_stage=2, epochs_first_stage=3, max_latent_stage=1)
    assert [longer_start.stage_for_epoch(e) for e in range(9)] == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert c.plan(1, 5) == StagePlan(1, 1)
    assert c.plan(3, 5) == StagePlan(ALL_STEPS, 2)


def test_stage_mixing_draws_stages_from_zero_to_n_steps():
    c = Curriculum(uniform_prob=0.5)
    rng = random.Random(0)
    draws = [c.sample_stage(1, 3, rng) for _ in range(2000)]
    assert set(draws) == {0, 1, 2, 3}
    assert 0.55 < draws.count(1) / len(draws) < 0.70  # 0.5 scheduled + 0.5 * 1/4 drawn
    assert {Curriculum().sample_stage(1, 3, rng) for _ in range(50)} == {1}


@pytest.mark.parametrize(
    "field,value", [("epochs_per_stage", 0), ("c_thought", 0), ("max_latent_stage", -1), ("uniform_prob", 1.5)]
)
def test_bad_curriculum_values_are_named(field, value):
    with pytest.raises(ValueError, match=f"curriculum.{field}"):
        Curriculum(**{field: value})


def test_tokenized_parts_decode_to_the_official_text_format():
    from coconut.core.tokenizer import build_tokenizer
    from coconut.data.records import Record
    from coconut.data.sequences import tokenize_records

    records = [Record("Ann has 3 pens.", ("<<3*4=12>>", "<<12-5=7>>"), "7"), Record("No steps here?", (), "2")]
    tokenizer = build_tokenizer([r.question for r in records] + ["<<3*4=12>>", "### 7"], vocab_size=300)
    first, second = tokenize_records(records, tokenizer)
    assert [tokenizer.decode(p) for p in (first.question, *first.steps)] == [
        "Ann has 3 pens.\n",
        "<<3*4=12>>\n",
        "<<12-5=7>>\n",
    ]
    assert first.answer[-1] == tokenizer.eos_token_id and tokenizer.decode(first.answer[:-1]) == "### 7"
    assert second.steps == [] and tokenizer.decode(second.answer[:-1]) == "### 2"
