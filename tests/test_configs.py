"""Every shipped config composes, and the pieces built from it are valid."""

import logging
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from coconut import CONFIG_DIR
from coconut.commands import config as config_schema
from coconut.commands.build import build_curriculum, build_method
from coconut.commands.config import renamed_overrides, validate_config
from coconut.core.errors import ConfigError
from coconut.training import runs

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


def test_a_value_of_the_wrong_type_or_an_unknown_key_stops_composition():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        with pytest.raises(ConfigCompositionException) as error:
            compose("train", overrides=["curriculum.c_thought=two"])
        assert "curriculum.c_thought" in str(error.value.__cause__)
        added = compose("train", overrides=["+curriculum.c_thougth=2", "paths.output_dir=x"])  # Hydra adds it
        with pytest.raises(ConfigError, match="curriculum.c_thougth"):
            validate_config(added)  # the schema has no such key
        with pytest.raises(ConfigCompositionException):
            compose("eval", overrides=["ckpt_path=x", "generation.num_samples=many"])


def test_old_knob_names_on_the_command_line_are_read_as_the_new_ones_with_a_message(caplog):
    runs._warned.clear()
    with caplog.at_level(logging.WARNING):
        new = renamed_overrides(["curriculum.latents_per_step=2", "+curriculum.stage_mix_prob=0.5", "seed=1"])
    assert new == ["curriculum.c_thought=2", "curriculum.uniform_prob=0.5", "seed=1"]
    assert "curriculum.latents_per_step is deprecated: read as curriculum.c_thought=2" in caplog.text
    assert "curriculum.stage_mix_prob is deprecated: read as curriculum.uniform_prob=0.5" in caplog.text
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=new)
    assert (cfg.curriculum.c_thought, cfg.curriculum.uniform_prob) == (2, 0.5)
    assert build_curriculum(cfg).c_thought == 2 and build_curriculum(cfg).uniform_prob == 0.5


def test_an_old_run_folders_config_with_the_old_names_is_read_as_the_new_ones(tmp_path, caplog):
    """An old run's .hydra/config.yaml (given as the primary config) and its run.json record."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}"])
    old = OmegaConf.to_container(cfg, resolve=True)
    curriculum = old["curriculum"]
    curriculum["latents_per_step"], curriculum["stage_mix_prob"] = 2, 0.25
    del curriculum["uniform_prob"]  # c_thought stays (1): latents_per_step, set apart from it, wins
    old_cfg = OmegaConf.create(old)
    runs._warned.clear()
    with caplog.at_level(logging.WARNING):
        config = validate_config(old_cfg)
    assert (config.curriculum.c_thought, config.curriculum.uniform_prob) == (2, 0.25)
    assert "latents_per_step" not in old_cfg.curriculum and old_cfg.curriculum.c_thought == 2
    assert "deprecated: read as curriculum.c_thought=2" in caplog.text
    # run.json written before the rename compares equal to the same run now (resume=auto finds it)
    recorded = runs.run_config(OmegaConf.create(old))
    assert runs.comparable(runs.upgraded(recorded)) == runs.comparable(runs.run_config(old_cfg))


def test_the_schema_holds_every_key_of_the_shipped_configs_and_one_comment_per_field():
    source = Path(config_schema.__file__).read_text()
    for schema in config_schema.SCHEMAS.values():
        for node in (schema, *(f.type for f in fields(schema) if isinstance(f.type, type) and is_dataclass(f.type))):
            for f in fields(node):
                line = next(line for line in source.splitlines() if line.strip().startswith(f"{f.name}:"))
                assert "  # " in line, f"{node.__name__}.{f.name} has no comment"


def _with_old_knob_names(config: dict) -> dict:
    """A recorded config as coconut wrote it before the rename: latents_per_step, stage_mix_prob."""
    curriculum = dict(config["curriculum"])
    curriculum["latents_per_step"] = curriculum.pop("c_thought")
    curriculum["stage_mix_prob"] = curriculum.pop("uniform_prob")
    return {**config, "curriculum": curriculum}


def test_a_checkpoint_and_run_folder_with_the_old_knob_names_evaluate_and_resume(tmp_path):
    """A run written before the rename: its checkpoint evaluates to the same report as under the new
    names and training resumes from it at the next stage (resume=auto's match of an old run.json:
    the test above)."""
    import torch
    from conftest import scalars, tiny_cfg

    from coconut.commands.evaluate import run_evaluation
    from coconut.commands.train import train

    run = tmp_path / "run"
    train(tiny_cfg(run, "trainer.max_epochs=1", "test=false"))
    last = run / "checkpoints" / "last.ckpt"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        evaluate = [f"ckpt_path={last}", "limit=4", "legibility.measure=false"]
        new = run_evaluation(compose("eval", overrides=[*evaluate, f"paths.output_dir={tmp_path / 'new'}"]))
        saved = torch.load(last, weights_only=False)
        saved["hyper_parameters"]["config"] = _with_old_knob_names(saved["hyper_parameters"]["config"])
        torch.save(saved, last)
        old = run_evaluation(compose("eval", overrides=[*evaluate, f"paths.output_dir={tmp_path / 'old'}"]))
    assert {k: v for k, v in old.items() if k not in ("latency", "config")} == {
        k: v for k, v in new.items() if k not in ("latency", "config")
    }
    resumed = tmp_path / "resumed"
    train(tiny_cfg(resumed, "trainer.max_epochs=2", "test=false", f"ckpt_path={last}"))
    assert [v for _, v in scalars(resumed)["curriculum/stage"]] == [1.0]
    assert torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2 * 2
