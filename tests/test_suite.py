"""One checkpoint, five math benchmarks, one folder: `coconut-eval suite=math` end to end on a tiny
debug=fast checkpoint and small files converted by coconut-data, the summary (markdown, CSV, JSON),
scripts/compare.py over two summaries, and the message for a benchmark that is not prepared."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_cfg
from hydra import compose, initialize_config_dir

from coconut import CONFIG_DIR
from coconut.commands.suite import run_suite
from coconut.commands.train import train
from coconut.core.errors import ConfigError
from coconut.data import prepare

ROOT = Path(__file__).resolve().parent.parent
MATH = ["gsm8k", "gsm_hard", "svamp", "multiarith", "asdiv"]
QUESTIONS = ["Tom has 3 apples and buys 4 more. How many apples?", "A box holds 6 pens. How many in 2 boxes?", "5-2?"]
ANSWERS = [7, 12, 3]


def raw_files(folder: Path) -> dict[str, Path]:
    """Three problems per benchmark, each in the format its authors publish."""
    folder.mkdir(parents=True)
    qa = list(zip(QUESTIONS, ANSWERS))
    files = {
        "gsm8k": (
            "test.jsonl",
            "".join(json.dumps({"question": q, "answer": f"<<a=b>>\n#### {a}"}) + "\n" for q, a in qa),
        ),
        "gsm_hard": (
            "gsmhardv2.jsonl",
            "".join(json.dumps({"input": q, "code": "", "target": float(a)}) + "\n" for q, a in qa),
        ),
        "svamp": ("SVAMP.json", json.dumps([{"Body": q, "Question": "", "Answer": float(a)} for q, a in qa])),
        "multiarith": (
            "MultiArith.json",
            json.dumps([{"sQuestion": f" {q} ", "lSolutions": [float(a)]} for q, a in qa]),
        ),
        "asdiv": (
            "ASDiv.xml",
            "<Machine-Reading-Corpus-File><ProblemSet>"
            + "".join(
                f"<Problem><Body>{q}</Body><Question></Question><Answer>{a} (things)</Answer></Problem>" for q, a in qa
            )
            + "</ProblemSet></Machine-Reading-Corpus-File>",
        ),
    }
    paths = {}
    for name, (file, text) in files.items():
        (folder / name).mkdir()
        paths[name] = folder / name / file
        paths[name].write_text(text)
    return paths


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, data_dir with the five benchmarks converted by coconut-data)."""
    run = tmp_path_factory.mktemp("run")
    train(tiny_cfg(run, "trainer.max_epochs=2", "test=false"))
    data_dir = tmp_path_factory.mktemp("data")
    for name, path in raw_files(data_dir / "raw").items():
        prepare.prepare(name, out=data_dir, source=path, split="test" if name == "gsm8k" else None)
    return run / "checkpoints" / "last.ckpt", data_dir


def suite_cfg(output_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="eval", overrides=[f"paths.output_dir={output_dir}", *overrides])


def test_suite_math_writes_a_report_per_benchmark_and_one_summary(setup, tmp_path):
    ckpt, data_dir = setup
    out = tmp_path / "suite"
    command = [
        sys.executable,
        "-m",
        "coconut.cli.evaluate",
        f"ckpt_path={ckpt}",
        "suite=math",
        f"paths.data_dir={data_dir}",
        "limit=2",
        f"hydra.run.dir={out}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # Legibility is what the user did not ask for in a suite: not measured, and the log says so.
    assert "legibility not measured in a suite" in done.stdout + done.stderr
    for name in MATH:
        report = json.loads((out / name / "report.json").read_text())
        assert report["dataset"] == name and report["n_total"] == 2 and report["legibility"]["ablation"] == {}
        assert report["legibility"]["measured"] is False and "decode_top1" not in report["legibility"]
        assert "legibility: not measured" in (out / name / "report.md").read_text()
        rows = [json.loads(line) for line in (out / name / "samples.jsonl").read_text().splitlines()]
        assert all(r["decoded_thoughts"] is None and r["generated"] is not None for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["benchmarks"]) == MATH and summary["method"] == "coconut" and summary["stage"] == 1
    # Every benchmark gets the stage's thoughts, with or without reference steps (gsm8k has one here).
    assert summary["thoughts_per_question"] == 1
    for name, row in summary["benchmarks"].items():
        assert row["n_total"] == row["n_answered"] == 2 and row["n_skipped"] == 0, name
        assert 0.0 <= row["accuracy"] <= 1.0 and row["thoughts"] == 1.0
        assert row["tokens"] > 0 and row["forward_passes"] >= row["tokens"] and row["questions_per_second"] > 0
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["benchmark"] for r in rows] == MATH and {"accuracy", "n_total", "questions_per_second"} <= set(rows[0])
    markdown = (out / "summary.md").read_text()
    assert all(f"| {name} | test |" in markdown for name in MATH)

    # A second checkpoint's summary (here: the same one without thoughts, on two benchmarks) and
    # compare.py prints methods x benchmarks.
    run_suite(
        suite_cfg(
            tmp_path / "zero",
            f"ckpt_path={ckpt}",
            "benchmarks=[svamp,asdiv]",
            f"paths.data_dir={data_dir}",
            "n_thoughts=0",
            "limit=2",
            "legibility.ablations=[]",
        )
    )
    compare = [sys.executable, str(ROOT / "scripts" / "compare.py"), str(out), str(tmp_path / "zero")]
    shown = subprocess.run([*compare, "--out", str(tmp_path / "cmp")], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    table = (tmp_path / "cmp" / "compare.md").read_text().splitlines()
    assert table[0] == "| run | method | stage | thoughts | " + " | ".join(MATH) + " |"
    zero = next(line for line in table if line.startswith("| zero |"))
    assert zero.startswith("| zero | coconut | 1 | 0 | - | - | ") and "(n=2" in zero


def test_a_benchmark_not_prepared_names_the_command_before_loading_the_model(setup, tmp_path):
    _, data_dir = setup
    empty = tmp_path / "data"
    (empty / "svamp").mkdir(parents=True)
    (empty / "svamp" / "test.json").write_text((data_dir / "svamp" / "test.json").read_text())
    cfg = suite_cfg(
        tmp_path / "out",
        "ckpt_path=/nonexistent.ckpt",
        "benchmarks=[svamp,multiarith,asdiv]",
        f"paths.data_dir={empty}",
    )
    with pytest.raises(ConfigError) as error:
        run_suite(cfg)
    message = str(error.value)
    # Another data root than the default: the command writes there.
    assert f"run `coconut-data multiarith --out {empty}`" in message and "run `coconut-data asdiv --out" in message
    assert "svamp:" not in message and "benchmarks=[svamp]" in message
    with pytest.raises(ConfigError, match="no data config 'svam'"):
        run_suite(suite_cfg(tmp_path / "out", "ckpt_path=x", "benchmarks=[svam]"))
