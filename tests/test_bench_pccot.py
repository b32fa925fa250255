"""scripts/bench_pccot.py runs end to end on a tiny model: every step timed, ratios to COCONUT's."""

import bench_pccot  # scripts/bench_pccot.py (scripts/ is on pytest's pythonpath)


def test_the_benchmark_times_cot_coconut_and_each_t_on_a_tiny_model(capsys):
    tiny = {"model_type": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 128}
    sequences = {"thoughts": 3, "question": (5, 8), "rest": (2, 4)}
    medians = bench_pccot.bench("tiny", tiny, 4, 50, sequences, repeats=1, iterations=(1, 2))
    assert list(medians) == ["cot", "coconut", "pccot T=1", "pccot T=2"] and all(s > 0 for s in medians.values())
    assert "coconut" in capsys.readouterr().out and "(1.00x)" in bench_pccot.markdown([("tiny", medians)])
