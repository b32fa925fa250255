"""The paper's baselines and ablations, and iCoT: exact stage-k sequences, schedules, and a tiny
training run of each through coconut-train (val/acc logged)."""

import math
import random
from pathlib import Path

import pytest
import torch
from conftest import tiny_cfg
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from coconut import CONFIG_DIR
from coconut.commands.build import build_method
from coconut.commands.train import train
from coconut.core.curriculum import Curriculum
from coconut.core.errors import ConfigError
from coconut.core.methods import Method
from coconut.core.tokens import SpecialIds
from coconut.data.dataset import StageDataset
from coconut.data.sequences import IGNORE, TokenizedSample, build_prompt, build_sequence

S, E, L, P, EOS = 100, 101, 102, 103, 1
IDS = SpecialIds(start_latent=S, end_latent=E, latent=L, pause=P, eos=EOS, pad=0)
Q = [10, 11]
STEPS = [[20, 21], [30], [40, 41, 42]]  # three steps, six chain-of-thought tokens
A = [50, 51, EOS]
SAMPLE = TokenizedSample(question=Q, steps=STEPS, answer=A)
X = IGNORE
MAX3 = Curriculum(max_latent_stage=3)


def method(name: str) -> Method:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return build_method(compose("train", overrides=[f"method={name}"]))


def seq(m: Method, stage: int, curriculum: Curriculum = MAX3, offset: int = 0):
    s = build_sequence(SAMPLE, stage, m, curriculum, IDS, offset)
    assert len(s.input_ids) == len(s.labels)
    return s.input_ids, s.labels


def stages(m: Method, curriculum: Curriculum, epochs: int) -> list[int]:
    return [m.stage_at_epoch(curriculum, e) for e in range(epochs)]


def test_pause_writes_as_many_pause_tokens_as_coconut_final_thoughts_from_the_first_epoch():
    pause, coconut = method("pause"), method("coconut")
    curriculum = Curriculum(max_latent_stage=2, c_thought=2)
    assert stages(pause, curriculum, 5) == [3] * 5  # the final stage, no curriculum
    ids, labels = seq(pause, 0, curriculum)
    assert ids == [10, 11, P, P, P, P, 50, 51, EOS]  # min(3 steps, max 2) * 2, no markers
    assert labels == [X] * 6 + [50, 51, EOS]
    final = build_sequence(SAMPLE, curriculum.final_stage, coconut, curriculum, IDS)
    assert final.thoughts == ids.count(P) == 4
    padded = Curriculum(max_latent_stage=4, c_thought=2, pad_latent_to_max=True)
    assert seq(pause, 0, padded)[0].count(P) == 8
    assert build_prompt(SAMPLE, 0, pause, curriculum, IDS) == [10, 11, P, P, P, P]


def test_pause_as_thought_follows_the_curriculum_with_pause_tokens_between_markers():
    m = method("pause_as_thought")
    curriculum = Curriculum(max_latent_stage=3, epochs_per_stage=2)
    assert stages(m, curriculum, 9) == [0, 0, 1, 1, 2, 2, 3, 3, 4]
    assert seq(m, 0)[0] == [10, 11, S, E, 20, 21, 30, 40, 41, 42, 50, 51, EOS]
    ids, labels = seq(m, 1)
    assert ids == [10, 11, S, P, E, 30, 40, 41, 42, 50, 51, EOS]
    assert labels == [X] * 5 + [30, 40, 41, 42, 50, 51, EOS]
    assert L not in seq(m, 4)[0] and seq(m, 4)[0] == [10, 11, S, P, P, P, E, 50, 51, EOS]


def test_no_curriculum_trains_coconut_final_stage_from_epoch_zero():
    m = method("no_curriculum")
    curriculum = Curriculum(max_latent_stage=3, c_thought=2)
    assert stages(m, curriculum, 3) == [4, 4, 4]
    ids, labels = seq(m, 0, curriculum)
    assert ids == [10, 11, S] + [L] * 6 + [E, 50, 51, EOS]
    assert labels == [X] * 10 + [50, 51, EOS]


def test_no_thought_drops_steps_by_the_curriculum_with_nothing_in_their_place():
    m = method("no_thought")
    assert stages(m, Curriculum(max_latent_stage=3), 5) == [0, 1, 2, 3, 4]
    assert seq(m, 0)[0] == [10, 11, 20, 21, 30, 40, 41, 42, 50, 51, EOS]
    ids, labels = seq(m, 2)
    assert ids == [10, 11, 40, 41, 42, 50, 51, EOS]
    assert labels == [X, X, 40, 41, 42, 50, 51, EOS]
    assert seq(m, 4)[0] == [10, 11, 50, 51, EOS]
    assert build_prompt(SAMPLE, 2, m, Curriculum(), IDS) == [10, 11]


def test_icot_removes_tokens_not_steps_then_everything():
    icot = Method("icot", thought="none", stage="tokens", markers=False, tokens_removed_per_epoch=2)
    curriculum = Curriculum()  # not used by icot
    assert stages(icot, curriculum, 5) == [0, 2, 4, 6, 8]
    assert seq(icot, 0)[0] == [10, 11, 20, 21, 30, 40, 41, 42, 50, 51, EOS]
    ids, labels = seq(icot, 4)  # the first step (2 tokens), the second (1) and one of the third
    assert ids == [10, 11, 41, 42, 50, 51, EOS]
    assert labels == [X, X, 41, 42, 50, 51, EOS]
    assert seq(icot, 3)[0] == [10, 11, 40, 41, 42, 50, 51, EOS]
    assert seq(icot, 3, offset=2)[0] == [10, 11, 42, 50, 51, EOS]  # smoothing removes 2 more
    assert seq(icot, 8)[0] == seq(icot, 6)[0] == [10, 11, 50, 51, EOS]  # past the chain: question -> answer
    # The prompt is the bare question: the model writes what is left of the chain, then the answer.
    assert build_prompt(SAMPLE, 4, icot, curriculum, IDS) == [10, 11]


def test_icot_remove_all_beyond_caps_the_count_and_drops_the_whole_chain():
    icot = Method(
        "icot", thought="none", stage="tokens", markers=False, tokens_removed_per_epoch=2, remove_all_beyond=3
    )
    assert stages(icot, Curriculum(), 5) == [0, 2, 3, 3, 3]  # the count stops: no more optimizer resets
    assert seq(icot, 2)[0] == [10, 11, 30, 40, 41, 42, 50, 51, EOS]
    assert seq(icot, 3)[0] == [10, 11, 50, 51, EOS]  # 3 scheduled >= 3: all six tokens go


def test_icot_removal_smoothing_offsets_are_geometric_and_seeded_per_sample():
    smooth = Method("icot", thought="none", stage="tokens", markers=False, tokens_removed_per_epoch=8)
    assert smooth.removal_offset(random.Random(0)) == 0  # lambda null: no smoothing
    m = Method(
        "icot", thought="none", stage="tokens", markers=False, tokens_removed_per_epoch=8, removal_smoothing_lambda=1.0
    )
    rng = random.Random(0)
    draws = [m.removal_offset(rng) for _ in range(20000)]
    q = math.exp(-1.0)  # P(o) = (1 - q) q^o
    for o in (0, 1, 2):
        assert abs(draws.count(o) / len(draws) - (1 - q) * q**o) < 0.015
    # The dataset draws each training sample's offset from (seed, epoch, index): reproducible, and
    # validation (no mixing) removes exactly the scheduled count.
    samples = [SAMPLE] * 200
    kwargs = dict(stage=1, method=m, curriculum=Curriculum(), ids=IDS, seed=0)
    train_a = [StageDataset(samples, epoch=3, mix_stages=True, **kwargs)[i]["input_ids"] for i in range(200)]
    train_b = [StageDataset(samples, epoch=3, mix_stages=True, **kwargs)[i]["input_ids"] for i in range(200)]
    assert train_a == train_b
    assert {len(ids) for ids in train_a} > {len(Q) + 5 + len(A)}  # some samples lost extra tokens
    val = StageDataset(samples, mix_stages=False, **kwargs)
    assert {tuple(val[i]["input_ids"]) for i in range(200)} == {(10, 11, 21, 30, 40, 41, 42, 50, 51, EOS)}


def test_start_stage_skips_stage_zero():
    c = Curriculum(epochs_per_stage=3, max_latent_stage=3, start_stage=1)
    assert [c.stage_for_epoch(e) for e in range(14)] == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 4, 4]
    with pytest.raises(ValueError, match="curriculum.start_stage"):
        Curriculum(max_latent_stage=3, start_stage=5)


@pytest.mark.parametrize(
    "fields,match",
    [
        ({"stage": "tokens", "thought": "continuous", "tokens_removed_per_epoch": 1}, "thought=none"),
        ({"stage": "tokens", "thought": "none", "markers": False}, "tokens_removed_per_epoch"),
        ({"stage": "weekly"}, "method.stage"),
        (
            {
                "stage": "tokens",
                "thought": "none",
                "markers": False,
                "tokens_removed_per_epoch": 1,
                "removal_smoothing_lambda": 0,
            },
            "lambda",
        ),
    ],
)
def test_bad_method_values_are_named(fields, match):
    with pytest.raises(ConfigError, match=match):
        Method("m", **fields)


def test_an_unknown_method_key_is_an_error_not_ignored():
    with pytest.raises(ConfigError, match="tokens_per_epoch"):
        Method.from_config({"name": "icot", "stage": "tokens", "tokens_per_epoch": 8})


def method_cfg(output_dir: Path, *overrides: str):
    return tiny_cfg(
        output_dir,
        "test=false",
        "logger={}",
        "data.max_new_tokens=8",  # val/acc is logged either way; generation dominates the run time
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        *overrides,
    )


@pytest.mark.parametrize("name", ["pause", "pause_as_thought", "no_curriculum", "no_thought", "icot"])
def test_each_method_trains_and_evaluates(tmp_path, name):
    extra = ["method.tokens_removed_per_epoch=3"] if name == "icot" else []
    metrics = train(method_cfg(tmp_path, f"method={name}", "trainer.max_epochs=2", *extra))
    assert 0.0 <= metrics["val/acc"] <= 1.0 and math.isfinite(metrics["val/loss"])
    final_stage = {"pause": 2, "pause_as_thought": 1, "no_curriculum": 2, "no_thought": 1, "icot": 3}[name]
    assert metrics["curriculum/stage"] == final_stage  # epoch 1's stage
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["hyper_parameters"]["config"]["method"]["name"] == name
    assert OmegaConf.create(saved["hyper_parameters"]["config"]).method.stage == method(name).stage
