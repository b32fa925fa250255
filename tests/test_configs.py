"""Every shipped config composes, and the pieces built from it are valid."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from coconut import CONFIG_DIR
from coconut.commands.build import build_curriculum, build_method

GROUPS = ("data", "model", "method", "curriculum", "trainer", "experiment", "debug")
CHOICES = [(g, p.stem) for g in GROUPS for p in sorted((Path(CONFIG_DIR) / g).glob("*.yaml"))]


@pytest.mark.parametrize("group,choice", CHOICES, ids=[f"{g}={c}" for g, c in CHOICES])
def test_config_composes(group, choice, tmp_path):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"{group}={choice}", f"paths.output_dir={tmp_path}"])
    missing = OmegaConf.missing_keys(cfg)
    if choice == "files":  # the one preset that needs the user's paths
        assert missing == {"data.train_path", "data.val_path", "data.test_path"}
    else:
        assert not missing
    build_curriculum(cfg), build_method(cfg)
    assert cfg.data.answer_kind in ("number", "statement", "digits", "auto")


def test_c_thought_sets_latents_per_step_unless_given():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        assert compose("train", overrides=["curriculum.c_thought=3"]).curriculum.latents_per_step == 3
        cfg = compose("train", overrides=["curriculum.c_thought=3", "curriculum.latents_per_step=2"])
        assert cfg.curriculum.latents_per_step == 2
