"""DDP on CPU (2 processes, gloo) end to end: the run finishes, training is sharded across the
processes, and validation counts every record exactly once although the processes get different
numbers of prompts (3 and 2 here, so one runs a generation batch the other does not: any collective
inside generation would hang). Also: the FSDP preset finds the base model's decoder blocks."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import tiny_lm
from hydra import compose, initialize_config_dir

from coconut import CONFIG_DIR
from coconut.commands.train import train
from coconut.training.strategies import build_strategy, decoder_block_classes

# lr ~ 0: the weights stay at their (seeded) initialisation, so one and two processes must give the
# same validation numbers; 5 val records (odd) with batch size 1 split 3 / 2 across the processes.
SHARED = [
    "debug=fast",
    "trainer.max_epochs=2",
    "curriculum.max_latent_stage=1",
    "optimizer.lr=1e-12",
    # One thread per process, as the single process: the quickstart preset fixes two, and two
    # processes of two threads on a 2-core machine would wait on each other.
    "trainer.cpu_threads=1",
    "optimizer.weight_decay=0",
    "data.sizes.train=16",
    "trainer.limit_train_batches=1.0",
    "data.sizes.val=5",
    "data.val_generation_size=5",
    "data.eval_batch_size=1",
    "trainer.limit_val_batches=1.0",
    "test=false",
]


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one_process(tmp_path):
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
    done = subprocess.run(
        [sys.executable, "-m", "coconut.cli.train", *ddp, *SHARED, f"hydra.run.dir={tmp_path}/ddp"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "GLOBAL_RANK: 1" in done.stdout + done.stderr
    distributed = json.loads((tmp_path / "ddp" / "metrics.json").read_text())["final"]

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*SHARED, f"paths.output_dir={tmp_path}/single"])
    single = train(cfg)
    for key in ("val/acc", "val/loss", "val/tokens_per_answer"):
        assert distributed[key] == pytest.approx(single[key], rel=1e-5), key
    # 16 records, batch 8: one process takes 2 steps per epoch, each of two processes takes 1.
    steps = {
        name: torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
        for name in ("ddp", "single")
    }
    assert steps == {"ddp": 2, "single": 4}


def test_trainer_presets_compose():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        ddp = compose(config_name="train", overrides=["trainer=ddp", "trainer.num_nodes=2"])
        fsdp = compose(config_name="train", overrides=["trainer=fsdp"])
    assert ddp.trainer.strategy == "ddp" and ddp.trainer.num_nodes == 2 and ddp.trainer.precision == "bf16-mixed"
    assert fsdp.trainer.strategy.auto_wrap_policy == "decoder_blocks" and fsdp.trainer.use_distributed_sampler is False


@pytest.mark.parametrize("family, block", [("gpt2", "GPT2Block"), ("llama", "LlamaDecoderLayer")])
def test_fsdp_wraps_the_decoder_blocks(family, block):
    lm = tiny_lm(family)
    assert {c.__name__ for c in decoder_block_classes(lm)} == {block}
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["trainer=fsdp"])
    strategy = build_strategy(cfg.trainer, lm)
    assert type(strategy).__name__ == "FSDPStrategy"
    assert {c.__name__ for c in strategy.kwargs["auto_wrap_policy"]._module_classes} == {block}
    assert build_strategy(compose_trainer("ddp"), lm) is None  # a plain string stays with the Trainer


def compose_trainer(name):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=[f"trainer={name}"]).trainer


def test_decoder_blocks_of_a_model_that_names_none_is_a_config_error():
    from coconut.core.errors import ConfigError

    with pytest.raises(ConfigError, match="auto_wrap_policy"):
        decoder_block_classes(torch.nn.Linear(2, 2))


def test_an_auto_wrap_policy_of_class_paths_imports_them_or_names_the_bad_one():
    from coconut.core.errors import ConfigError

    lm = tiny_lm("gpt2")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        path = "transformers.models.gpt2.modeling_gpt2.GPT2Block"
        cfg = compose(config_name="train", overrides=["trainer=fsdp", f"trainer.strategy.auto_wrap_policy=[{path}]"])
        strategy = build_strategy(cfg.trainer, lm)
        assert {c.__name__ for c in strategy.kwargs["auto_wrap_policy"]._module_classes} == {"GPT2Block"}
        cfg = compose(config_name="train", overrides=["trainer=fsdp", "trainer.strategy.auto_wrap_policy=[nope.Block]"])
    with pytest.raises(ConfigError, match="cannot import 'nope.Block'"):
        build_strategy(cfg.trainer, lm)
