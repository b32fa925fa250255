"""scripts/bench_train_step.py runs end to end on a tiny model and prints both steps and their ratios."""

import bench_train_step  # scripts/bench_train_step.py (scripts/ is on pytest's pythonpath)


def test_the_benchmark_times_both_steps_of_a_tiny_model(capsys):
    tiny = {"model_type": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 128}
    sequences = {"thoughts": 3, "question": (5, 8), "rest": (2, 4)}
    bench_train_step.bench("tiny", tiny, 4, 50, sequences, repeats=1, device="cpu", bf16=False)
    line = capsys.readouterr().out
    assert "step plain" in line and "coconut" in line and line.count("ratio") == 2
