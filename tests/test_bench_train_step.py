"""scripts/bench_train_step.py runs end to end on a tiny model and prints both steps, their ratios
and the band's extra time, at each thread count asked for, and the Markdown table."""

import bench_train_step  # scripts/bench_train_step.py (scripts/ is on pytest's pythonpath)
import torch


def test_the_benchmark_times_both_steps_of_a_tiny_model_at_each_thread_count(capsys):
    tiny = {"model_type": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 128}
    sequences = {"thoughts": 3, "question": (5, 8), "rest": (2, 4)}
    threads = torch.get_num_threads()
    try:
        results = bench_train_step.bench(
            "tiny", tiny, 4, 50, sequences, repeats=1, device="cpu", bf16=False, threads=(1, 2)
        )
    finally:
        torch.set_num_threads(threads)
    lines = capsys.readouterr().out.splitlines()
    assert [r.threads for r in results] == [1, 2]
    assert len(lines) == 2 and all("step plain" in line and "band's extra time" in line for line in lines)
    assert lines[0].count("ratio") == 2 and lines[1].count("ratio") == 1  # memory once per model
    table = bench_train_step.markdown(results).splitlines()
    assert len(table) == 4 and table[2].startswith("| tiny, 4, 3 | 1 |")
