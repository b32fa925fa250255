"""coconut-eval on a whole debug=fast training run: the per-stage curve, sampling beside greedy
answers (and the scaling plot of a sweep), and coconut-export read back through hf: with the same
answers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import scalars, tiny_cfg
from hydra import compose, initialize_config_dir
from transformers import AutoModelForCausalLM, AutoTokenizer

from coconut import CONFIG_DIR
from coconut.commands.evaluate import run_evaluation
from coconut.commands.export import export
from coconut.commands.stage_curve import run_stage_curve
from coconut.commands.train import train
from coconut.core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    train(tiny_cfg(run, "trainer.max_epochs=2", "test=false"))  # stage 0, then stage 1
    return run


def compose_cfg(name: str, *overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def eval_cfg(output_dir: Path, *overrides: str):
    return compose_cfg("eval", f"paths.output_dir={output_dir}", "legibility.ablations=[]", *overrides)


def rows_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]


def test_per_stage_curve_of_a_run(trained, tmp_path):
    rows = run_stage_curve(eval_cfg(tmp_path, f"ckpt_path={trained}"), run_evaluation)
    assert [r["stage"] for r in rows] == [0, 1]
    for row in rows:  # each row is that stage's own evaluation
        report = json.loads((tmp_path / f"stage{row['stage']}" / "report.json").read_text())
        assert row["accuracy"] == report["accuracy"] and row["tokens"] == report["tokens"]["generated_mean"]
        assert row["thoughts"] == row["stage"]  # one thought per replaced step (c = 1)
    assert rows[1]["decode_top1"] is not None and rows[0]["decode_top1"] is None  # stage 0 has no thought to read
    assert json.loads((tmp_path / "curve.json").read_text()) == rows
    csv_lines = (tmp_path / "curve.csv").read_text().splitlines()
    assert csv_lines[0].startswith("stage,accuracy,n,tokens") and len(csv_lines) == 3
    assert "| stage | accuracy |" in (tmp_path / "curve.md").read_text()
    assert (tmp_path / "curve.png").stat().st_size > 1000
    assert [step for step, _ in scalars(tmp_path)["curve/accuracy"]] == [0, 1]  # the stage is the step
    # the command line: a run folder is a per-stage curve
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "coconut.cli.evaluate",
            f"ckpt_path={trained}",
            "legibility.ablations=[]",
            f"hydra.run.dir={tmp_path / 'cli'}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert json.loads((tmp_path / "cli" / "curve.json").read_text()) == rows


def test_sampling_beside_greedy_and_the_scaling_plot(trained, tmp_path):
    ckpt = f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}"
    greedy = run_evaluation(eval_cfg(tmp_path / "greedy", ckpt))
    assert "sampling" not in greedy  # greedy stays the default, alone
    at_zero = run_evaluation(eval_cfg(tmp_path / "t0", ckpt, "generation.num_samples=3"))
    assert at_zero["accuracy"] == greedy["accuracy"]
    sampling = at_zero["sampling"]  # three greedy samples: all equal to the greedy answer
    assert sampling["majority_accuracy"] == greedy["accuracy"]
    assert sampling["pass_at_k"] == {"1": pytest.approx(greedy["accuracy"]), "2": pytest.approx(greedy["accuracy"]),
                                     "3": pytest.approx(greedy["accuracy"])}  # fmt: skip
    for row in rows_of(tmp_path / "t0"):
        assert row["sampled"] == [row["prediction"]] * 3
    hot = run_evaluation(eval_cfg(tmp_path / "hot", ckpt, "generation.num_samples=4", "generation.temperature=1.5"))
    passes = hot["sampling"]["pass_at_k"]
    assert passes["1"] <= passes["2"] <= passes["4"] and 0.0 <= hot["sampling"]["majority_accuracy"] <= 1.0
    assert hot["accuracy"] == greedy["accuracy"]  # the greedy pass is unchanged by sampling
    assert hot["sampling"]["tokens_per_question"] > greedy["tokens"]["generated_mean"]
    # the scaling plot over thoughts x samples, from the sweep's reports
    for thoughts in (0, 2):
        for samples in (1, 2):
            run_evaluation(
                eval_cfg(
                    tmp_path / "sweep" / f"t{thoughts}_k{samples}",
                    ckpt,
                    f"n_thoughts={thoughts}",
                    f"generation.num_samples={samples}",
                    "generation.temperature=1.0",
                )
            )
    script = [sys.executable, str(ROOT / "scripts" / "scaling.py"), *map(str, (tmp_path / "sweep").iterdir())]
    shown = subprocess.run([*script, "--out", str(tmp_path / "plot")], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr[-2000:]
    table = json.loads((tmp_path / "plot" / "scaling.json").read_text())
    assert [(r["n_thoughts"], r["num_samples"]) for r in table] == [(0, 1), (0, 2), (2, 1), (2, 2)]
    assert all(r["tokens"] >= r["n_thoughts"] for r in table)
    assert (tmp_path / "plot" / "scaling.png").stat().st_size > 1000


def test_export_reads_back_with_the_same_answers(trained, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    out = tmp_path / "exported"
    export(compose_cfg("export", f"ckpt_path={ckpt}", f"out={out}", f"paths.output_dir={tmp_path / 'log'}"))
    meta = json.loads((out / "coconut.json").read_text())
    assert meta["n_thoughts"] == 1 and meta["stage"] == 1 and meta["method"]["name"] == "coconut"
    assert meta["thought_tokens"]["latent"] == "<|latent|>"
    # a plain Hugging Face folder: loads without this project
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.convert_tokens_to_ids("<|latent|>") == meta["thought_token_ids"]["latent"]
    assert AutoModelForCausalLM.from_pretrained(out).config.vocab_size == len(tokenizer)
    # the same questions for both (an exported folder carries no data config): debug=fast's split
    data = [
        "data=arithmetic",
        "data.sizes.train=64",
        "data.sizes.val=16",
        "data.sizes.test=16",
        "data.max_new_tokens=24",
    ]
    original = run_evaluation(eval_cfg(tmp_path / "original", f"ckpt_path={ckpt}", *data))
    back = run_evaluation(eval_cfg(tmp_path / "back", f"ckpt_path=hf:{out}", *data))
    assert back["checkpoint_kind"] == "coconut-export" and back["tokens"] == original["tokens"]
    assert back["accuracy"] == original["accuracy"]
    for key in ("question", "generated", "decoded_thoughts"):
        assert [r[key] for r in rows_of(tmp_path / "back")] == [r[key] for r in rows_of(tmp_path / "original")]
    with pytest.raises(ConfigError, match="not an empty folder"):
        export(compose_cfg("export", f"ckpt_path={ckpt}", f"out={out}", f"paths.output_dir={tmp_path / 'log'}"))
