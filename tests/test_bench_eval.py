"""scripts/bench_eval.py runs end to end on a tiny checkpoint: coconut-eval's speed without
legibility, the official semantics' batch-1 generation on the same prompts, and their agreement."""

import sys

import bench_eval  # scripts/bench_eval.py (scripts/ is on pytest's pythonpath)
from conftest import tiny_cfg

from coconut.commands.train import train


def test_the_evaluation_benchmark_compares_with_batch_one_generation(tmp_path, monkeypatch, capsys):
    train(tiny_cfg(tmp_path / "run", "trainer.max_epochs=2", "test=false"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    monkeypatch.setattr(sys, "argv", ["bench_eval.py", f"ckpt_path={ckpt}", "limit=6", "--official-limit", "4"])
    capsys.readouterr()  # training's
    bench_eval.main()
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("coconut-eval, arithmetic test, 6 questions") and "questions/s answering" in out[0]
    assert out[1].startswith("official semantics (re-implemented), batch 1, no cache")
    assert "the same answer as coconut-eval in 4 of 4" in out[1]
