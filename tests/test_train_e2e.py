"""End to end: coconut-train on tiny configs through two stages, outputs on disk, and resume."""

import shutil
import subprocess
import sys

import pytest
import torch
from conftest import scalars, tiny_cfg

from coconut.commands.train import train
from coconut.training.lit_module import rebuild_from_checkpoint


def test_two_stages_write_tensorboard_checkpoints_and_tokenizer(tmp_path):
    metrics = train(tiny_cfg(tmp_path, "trainer.max_epochs=2"))
    logged = scalars(tmp_path)
    for tag in (
        "train/loss",
        "val/loss",
        "val/acc",
        "val/tokens_per_answer",
        "curriculum/stage",
        "test/acc",
        "val/legibility/decode_top1",
        "val/legibility/loss",
    ):
        assert tag in logged, f"{tag} missing from TensorBoard; have {sorted(logged)}"
    assert [value for _, value in logged["curriculum/stage"]] == [0.0, 1.0]
    assert 0.0 <= metrics["val/acc"] <= 1.0
    checkpoints = {p.name for p in (tmp_path / "checkpoints").iterdir()}
    assert {"last.ckpt", "stage0-best.ckpt", "stage1-best.ckpt"} <= checkpoints
    assert not any(name.endswith(".partial") for name in checkpoints)
    assert (tmp_path / "tokenizer" / "tokenizer.json").exists()
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 2 * 2 and "tokenizer_files" in saved["coconut"]  # 2 epochs x 2 batches


def test_a_checkpoint_rebuilds_model_and_tokenizer_without_the_run_folder(tmp_path):
    train(tiny_cfg(tmp_path / "run", "trainer.max_epochs=1", "test=false"))
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    shutil.rmtree(tmp_path / "run")
    model, tokenizer = rebuild_from_checkpoint(saved)
    ids = torch.tensor([tokenizer.encode("Ann has 3 pens.\n") + [model.latent_token_id, 5]])
    weights = {k.removeprefix("model."): v for k, v in saved["state_dict"].items() if k.startswith("model.")}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    assert torch.isfinite(model.eval()(ids).logits).all()


def test_resume_from_last_checkpoint_continues_at_the_right_stage(tmp_path):
    first = tmp_path / "first"
    train(tiny_cfg(first, "trainer.max_epochs=1", "test=false"))
    assert [v for _, v in scalars(first)["curriculum/stage"]] == [0.0]
    resumed = tmp_path / "resumed"
    train(tiny_cfg(resumed, "trainer.max_epochs=3", "test=false", f"ckpt_path={first}/checkpoints/last.ckpt"))
    # Epochs 1 and 2 ran after the resume: stage 1, then the final stage (max_latent_stage + 1).
    assert [v for _, v in scalars(resumed)["curriculum/stage"]] == [1.0, 2.0]
    assert torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 3 * 2


def test_llama_and_baseline_methods_train(tmp_path):
    for i, overrides in enumerate(
        [
            ("model=llama_tiny", "model.architecture.hidden_size=32", "model.architecture.num_hidden_layers=1"),
            ("method=cot",),
            ("method=no_cot",),
        ]
    ):
        metrics = train(tiny_cfg(tmp_path / str(i), "trainer.max_epochs=1", "test=false", *overrides))
        assert "val/acc" in metrics


@pytest.mark.parametrize("multirun", [False, True])
def test_cli_runs_and_sweeps_into_separate_folders(tmp_path, multirun):
    args = [
        "debug=fast",
        "trainer.max_epochs=1",
        "test=false",
        f"hydra.run.dir={tmp_path}/run",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]
    if multirun:
        args = ["-m", *args, "curriculum.c_thought=1,2"]
    done = subprocess.run(
        [sys.executable, "-m", "coconut.cli.train", *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [tmp_path / "sweep" / "0", tmp_path / "sweep" / "1"] if multirun else [tmp_path / "run"]
    for run in runs:
        assert (run / "checkpoints" / "last.ckpt").exists()
        assert (run / ".hydra" / "config.yaml").exists()
        assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_pretrained_model_from_a_local_folder(tmp_path):
    """model.pretrained= takes a folder written by save_pretrained (how hub models arrive offline)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from coconut.core.tokenizer import build_tokenizer
    from coconut.data.synthetic import generate_arithmetic

    folder = tmp_path / "tiny-gpt2"
    tokenizer = build_tokenizer((r.question for r in generate_arithmetic(200)), vocab_size=300)
    tokenizer.save_pretrained(folder)
    config = GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=32, n_head=2, n_positions=256)
    GPT2LMHeadModel(config).save_pretrained(folder)
    metrics = train(tiny_cfg(tmp_path / "run", "model=gpt2", f"model.pretrained={folder}", "trainer.max_epochs=1"))
    assert "val/acc" in metrics
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    # The four COCONUT tokens were added to the 300-entry vocabulary and the embeddings grown to fit.
    assert saved["coconut"]["model_config"]["vocab_size"] == len(tokenizer) + 4


def test_bad_input_gets_one_clear_line_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"question": "q", "steps": ["a"], "answer": "1"}, {"question": "q", "steps": "a", "answer": "1"}]')
    args = ["debug=fast", "data=files", f"data.train_path={bad}", f"data.val_path={bad}", f"data.test_path={bad}"]
    done = subprocess.run(
        [sys.executable, "-m", "coconut.cli.train", *args, f"hydra.run.dir={tmp_path}/run"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    output = done.stdout + done.stderr
    assert "bad.json" in output and "record 1" in output and "'steps'" in output
    assert "Traceback" not in output
