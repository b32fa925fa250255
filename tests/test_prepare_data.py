"""coconut-data: converts the staged benchmark files, generates the synthetic sets, and says what to
download by hand when offline. The network is never touched: `urlopen` fails in every test."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED_DATA, needs_shared_data

from coconut.data import prepare
from coconut.data.records import Record
from coconut.data.sources import load_records
from coconut.data.synthetic import generate_multiplication, multiplication_line

pytestmark = pytest.mark.usefixtures("offline")  # urlopen fails in every test (conftest.py)


def written(folder, split):
    return load_records(folder / f"{split}.json", "contract")


@needs_shared_data
@pytest.mark.parametrize(
    "benchmark, source, split, count, first_question, first_steps, answer",
    [
        (
            "gsm8k_aug",
            "gsm8k_aug",
            "valid",
            500,
            "John cuts his grass to 2 inches.",
            ["<<4-2=2>>", "<<2/.5=4>>"],
            "300",
        ),
        (
            "gsm8k_aug",
            "gsm8k_aug/train_no_aug.txt",
            "train",
            6973,
            "The town’s annual budget",
            ["The annual budget for policing is 32 / 2 = $16 million."],
            "4",
        ),
        ("gsm8k", "gsm8k", "train", 7473 - 500, "Natalia sold clips", ["<<48/2=24>>", "<<48+24=72>>"], "72"),
        ("prosqa", "prosqa", "valid", 300, "Every shumpus is a rempus.", ["Tom is a terpus."], "Tom is a lempus."),
        (
            "prontoqa",
            "prontoqa/prontoqa_valid.json",
            "valid",
            200,
            "Tumpuses are floral.",
            ["Alex is a tumpus. Tumpuses are gorpuses."],
            "True",
        ),
    ],
)
def test_converts_the_staged_files(tmp_path, benchmark, source, split, count, first_question, first_steps, answer):
    folder = prepare.prepare(benchmark, out=tmp_path, source=SHARED_DATA / source)
    assert folder == tmp_path / benchmark
    records = written(folder, split)
    assert len(records) == count
    assert records[0].question.startswith(first_question)
    assert list(records[0].steps[: len(first_steps)]) == first_steps
    assert records[0].answer == answer
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["splits"][split]["count"] == count
    assert manifest["splits"][split]["from"]["file"].startswith(str(SHARED_DATA))
    # The written file is what training reads with data.<split>_path=: same records as the raw file.
    raw = load_records(
        SHARED_DATA / source if (SHARED_DATA / source).is_file() else manifest["splits"][split]["from"]["file"]
    )
    assert records == (raw[:count] if benchmark == "gsm8k" else raw)


@needs_shared_data
def test_gsm8k_holds_out_the_last_problems_as_valid(tmp_path):
    folder = prepare.prepare("gsm8k", out=tmp_path, source=SHARED_DATA / "gsm8k")
    raw = load_records(SHARED_DATA / "gsm8k" / "train.jsonl")
    assert written(folder, "train") + written(folder, "valid") == raw
    assert len(written(folder, "valid")) == prepare.GSM8K_VALID_SIZE
    assert not (folder / "test.json").exists()


@needs_shared_data
@pytest.mark.parametrize("digits", [4, 5])
def test_generated_multiplication_matches_the_staged_files(tmp_path, digits):
    shared = SHARED_DATA / "multiplication" / f"{digits}x{digits}_valid.txt"
    converted = prepare.prepare("multiplication", out=tmp_path / "c", source=shared, digits=digits)
    staged = written(converted, "valid")
    assert staged == load_records(shared) and len(staged) == 1000
    generated = prepare.prepare(
        "multiplication", out=tmp_path / "g", digits=digits, sizes={"train": 50, "valid": 20, "test": 20}
    )
    assert generated.name == f"multiplication_{digits}x{digits}"
    records = written(generated, "train")
    # Same layout string for string: step count, step widths, answer width.
    shape = [(len(r.steps), [len(s) for s in r.steps], len(r.answer)) for r in staged]
    assert all((len(r.steps), [len(s) for s in r.steps], len(r.answer)) == shape[0] for r in records)
    # And each generated line is the line the iCoT files hold for its operands.
    for record in records:
        line = f"{record.question}||{' + '.join(record.steps)} #### {record.answer}"
        a, b = (int(x.replace(" ", "")[::-1]) for x in record.question.split(" * "))
        assert multiplication_line(a, b, digits=digits) == line


def test_generated_sets_equal_the_in_run_generator_and_do_not_overlap(tmp_path):
    folder = prepare.prepare(
        "multiplication", out=tmp_path, digits=3, sizes={"train": 40, "valid": 10, "test": 10}, seed=7
    )
    splits = {s: written(folder, s) for s in prepare.SPLITS}
    assert [len(splits[s]) for s in prepare.SPLITS] == [40, 10, 10]
    assert splits["train"] == generate_multiplication(80, digits=3, seed=7000)[:40]
    questions = [{r.question for r in splits[s]} for s in prepare.SPLITS]
    assert not (questions[0] & questions[1]) and not (questions[0] & questions[2])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["source"] == {"generated": "multiplication", "seed": 7, "digits": 3}

    arithmetic = prepare.prepare("arithmetic", out=tmp_path, sizes={"train": 30, "valid": 5, "test": 5})
    records = written(arithmetic, "train")
    assert len(records) == 30 and all(isinstance(r, Record) and len(r.steps) == 4 for r in records)


def test_offline_download_names_the_url_the_files_and_the_source_command(tmp_path, offline, capsys):
    with pytest.raises(SystemExit) as exit_info:
        prepare.main(["gsm8k_aug", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert offline == [prepare.BENCHMARKS["gsm8k_aug"].urls["train.txt"]]
    assert f"could not download {offline[0]}" in message and "offline" in message
    for url in prepare.BENCHMARKS["gsm8k_aug"].urls.values():
        assert url in message
    assert f"coconut-data gsm8k_aug --source {tmp_path / 'gsm8k_aug' / 'raw'}" in message
    assert "Traceback" not in message
    assert not list((tmp_path / "gsm8k_aug" / "raw").iterdir())  # no half-written file left behind


def test_prontoqa_has_no_download_and_says_how_to_generate_it(tmp_path, capsys):
    with pytest.raises(SystemExit):
        prepare.main(["prontoqa", "--out", str(tmp_path)])
    message = capsys.readouterr().err
    assert "asaparov/prontoqa" in message and "coconut-data prontoqa --source" in message


def test_files_already_downloaded_are_converted_without_the_network(tmp_path, offline):
    raw = tmp_path / "prosqa" / "raw"
    raw.mkdir(parents=True)
    for split in prepare.SPLITS:
        record = {"question": f"Is Tom a {split}pus?", "steps": ["Tom is a wumpus."], "answer": "yes", "edges": []}
        (raw / f"prosqa_{split}.json").write_text(json.dumps([record]))
    folder = prepare.prepare("prosqa", out=tmp_path)
    assert offline == []
    assert [written(folder, s)[0].question for s in prepare.SPLITS] == [f"Is Tom a {s}pus?" for s in prepare.SPLITS]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["source"]["downloaded"][0].endswith("prosqa_train.json")


def test_raw_prontoqa_is_split_as_the_official_preprocessing(tmp_path):
    chain = ["Alex is a tumpus.", "Tumpuses are gorpuses.", "Alex is a gorpus."]
    raw = {
        f"example{i}": {
            "test_example": {
                "question": f"Q{i}.",
                "query": "True or false: X.",
                "chain_of_thought": chain,
                "answer": "True",
            }
        }
        for i in range(9205)
    }
    path = tmp_path / prepare.PRONTOQA_RAW
    path.write_text(json.dumps(raw))
    folder = prepare.prepare("prontoqa", out=tmp_path / "out", source=path)
    splits = {s: written(folder, s) for s in prepare.SPLITS}
    assert [len(splits[s]) for s in prepare.SPLITS] == [9000, 200, 5]
    assert splits["valid"][0] == Record(
        "Q9000. True or false: X.", ("Alex is a tumpus. Tumpuses are gorpuses.", "Alex is a gorpus."), "True"
    )


def test_bad_source_gets_one_line_with_the_fix(tmp_path, capsys):
    (tmp_path / "notes.json").write_text("[]")
    with pytest.raises(SystemExit):
        prepare.main(["prosqa", "--source", str(tmp_path / "notes.json"), "--out", str(tmp_path)])
    message = capsys.readouterr().err
    assert "notes.json" in message and "does not say which split" in message and "--split" in message
    with pytest.raises(SystemExit):
        prepare.main(["prosqa", "--source", str(tmp_path), "--out", str(tmp_path / "o")])
    assert "prosqa_train.json" in capsys.readouterr().err


def test_console_script_and_module_entry_points(tmp_path):
    for command in ([sys.executable, "-m", "coconut.data"], [str(Path(sys.executable).parent / "coconut-data")]):
        done = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "gsm8k_aug" in done.stdout and "--source" in done.stdout


@needs_shared_data
def test_holdout_carves_valid_and_test_off_a_single_file(tmp_path):
    source = SHARED_DATA / "prosqa" / "prosqa_valid.json"
    prepare.main(
        ["prosqa", "--source", str(source), "--split", "train", "--holdout", "30", "20", "--out", str(tmp_path)]
    )
    folder = tmp_path / "prosqa"
    raw = load_records(source)
    assert written(folder, "train") == raw[:-50]
    assert written(folder, "valid") == raw[-50:-20]
    assert written(folder, "test") == raw[-20:]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["splits"]["test"]["from"]["held_out"] == f"records {len(raw) - 20}..{len(raw) - 1} of train"


def test_holdout_refuses_what_cannot_work(tmp_path, capsys):
    records = [{"question": f"q{i}", "steps": ["s"], "answer": str(i)} for i in range(10)]
    (tmp_path / "all.json").write_text(json.dumps(records))
    (tmp_path / "prosqa_valid.json").write_text(json.dumps(records))
    cases = [
        (
            ["--source", str(tmp_path / "all.json"), "--split", "train", "--holdout", "6", "4"],
            "asks for 10 records but train has 10",
        ),
        (["--source", str(tmp_path / "prosqa_valid.json"), "--holdout", "2", "2"], "already holds valid"),
        (
            ["--source", str(tmp_path / "prosqa_valid.json"), "--holdout", "0", "2"],
            "the source has none: add --split train",
        ),
        (["--holdout", "2", "2"], "give --source too"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit):
            prepare.main(["prosqa", *args, "--out", str(tmp_path / "out")])
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
