"""The evaluation-only math benchmarks (GSM-Hard, SVAMP, MultiArith, ASDiv, and GSM8K test): their
answer normalisation on real records, the converters on the staged files, offline downloads, and
that records without steps are expected there (no warning) and never trained on."""

import json
import logging

import pytest
from conftest import SHARED_DATA, needs_shared_data

from coconut.core.errors import UserInputError
from coconut.data import prepare
from coconut.data.benchmarks import NOT_ONE_NUMBER, number_answer
from coconut.data.records import DataError
from coconut.data.sources import load_records, read_converted
from coconut.data.splits import load_splits
from coconut.eval.answers import answers_match, extract_answer

EVAL_ONLY = ("gsm_hard", "svamp", "multiarith", "asdiv")
STAGED = {  # benchmark -> (file under ../shared/data, problems in it, problems kept)
    "svamp": ("svamp/SVAMP.json", 1000, 1000),
    "multiarith": ("multiarith/MultiArith.json", 600, 600),
    "asdiv": ("asdiv/ASDiv.xml", 2305, 2084),
}
# GSM-Hard is not staged: records written here in its published format (gsmhardv2.jsonl lines).
GSM_HARD = [
    {
        "input": "Janet's ducks lay 16 eggs per day. She sells the rest at $2 each. How much?",
        "code": "",
        "target": 18.0,
    },
    {"input": "A robe takes 2 bolts of blue fiber and half that much white fiber.", "code": "", "target": 3},
    {"input": "Josh buys a house for $80000 and puts in $50000 in repairs.", "code": "", "target": 70000.0},
    {"input": "James sprints 3 sprints 3 times a week, 60 meters each.", "code": "", "target": 540.5},
    {"input": "Every day, Wendi feeds each of her chickens three cups.", "code": "", "target": -20.0},
    {"input": "A target that is not a number.", "code": "", "target": None},
]


pytestmark = pytest.mark.usefixtures("offline")  # urlopen fails in every test (conftest.py)


def gsm_hard_file(folder):
    path = folder / "gsmhardv2.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in GSM_HARD))
    return path


@pytest.mark.parametrize(
    "raw, expected",
    [
        (5.0, "5"),
        (51.0, "51"),
        (0.25, "0.25"),
        (-20.0, "-20"),
        (70000.0, "70000"),
        (1e16, "10000000000000000"),
        (3, "3"),
        ("9 (apples)", "9"),
        ("14  (seats)", "14"),
        ("1,250 (dollars)", "1250"),
        ("3.5", "3.5"),
        ("383", "383"),
        ("3:30 p.m.", None),
        ("3:4", None),
        ("Mrs. Hilt", None),
        ("5 (years old); 15 (years old)", None),
        (float("nan"), None),
        (None, None),
        (True, None),
    ],
)
def test_number_answer_normalises_floats_units_and_separators(raw, expected):
    assert number_answer(raw) == expected


def generation(answer: str) -> str:
    """What a GSM8K-trained COCONUT model writes: the answer after `### `."""
    return f"### {answer}"


@needs_shared_data
@pytest.mark.parametrize("name", sorted(STAGED))
def test_real_records_normalise_and_score(name):
    path, total, kept = STAGED[name]
    records = load_records(SHARED_DATA / path)
    assert len(records) == kept and all(r.steps == () for r in records)
    for record, neighbour in zip(records, records[1:] + records[:1]):
        assert number_answer(record.answer) == record.answer  # canonical already
        assert answers_match(extract_answer(generation(record.answer)), record.answer, "number")
        as_float = f"{float(record.answer):,.2f}"  # "1,250.00": a model writing floats and separators
        assert answers_match(extract_answer(generation(as_float)), record.answer, "number") == (
            round(float(record.answer), 2) == float(record.answer)
        )
        if neighbour.answer != record.answer:
            assert not answers_match(extract_answer(generation(neighbour.answer)), record.answer, "number")


@needs_shared_data
def test_real_records_read_as_published():
    svamp = json.loads((SHARED_DATA / "svamp/SVAMP.json").read_text())
    first = load_records(SHARED_DATA / "svamp/SVAMP.json")[0]
    assert svamp[0]["Answer"] == 51.0 and first.answer == "51"
    assert first.question == f"{svamp[0]['Body']} {svamp[0]['Question']}"
    multiarith = load_records(SHARED_DATA / "multiarith/MultiArith.json")[0]
    assert multiarith.question.startswith("For Halloween Debby") and multiarith.answer == "39"
    assert not multiarith.question.endswith(" ")  # sQuestion is published with spaces around it
    asdiv = read_converted(SHARED_DATA / "asdiv/ASDiv.xml")
    assert asdiv.records[0].question == (
        "Seven red apples and two green apples are in the basket. How many apples are in the basket?"
    )
    assert asdiv.records[0].answer == "9"  # published as "9 (apples)"
    assert {r: len(i) for r, i in asdiv.left_out.items()} == {NOT_ONE_NUMBER: 221}
    # GSM8K: the final answer after `####`, thousands separators dropped; a model writing them still scores.
    lines = (SHARED_DATA / "gsm8k/train.jsonl").read_text().splitlines()
    gsm8k = load_records(SHARED_DATA / "gsm8k/train.jsonl")
    published = [json.loads(line)["answer"].rsplit("####", 1)[1].strip() for line in lines]
    with_separators = [(raw, r.answer) for raw, r in zip(published, gsm8k) if "," in raw]
    assert len(with_separators) > 10 and all("," not in r.answer for r in gsm8k)
    for raw, answer in with_separators:
        assert answer == raw.replace(",", "") and answers_match(extract_answer(f"### {raw}"), answer, "number")


def test_gsm_hard_in_its_published_format(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        records = load_records(gsm_hard_file(tmp_path))
    assert [r.answer for r in records] == ["18", "3", "70000", "540.5", "-20"]
    assert records[0].question.startswith("Janet's ducks") and all(r.steps == () for r in records)
    assert "1 left out" in caplog.text and "records 5" in caplog.text
    assert answers_match(extract_answer("### 540.50"), records[3].answer, "number")
    assert not answers_match(extract_answer("### 540"), records[3].answer, "number")


def test_a_benchmark_file_of_the_wrong_shape_names_record_and_field(tmp_path):
    path = tmp_path / "SVAMP.json"
    path.write_text(json.dumps([{"Body": "b", "Question": "q", "Answer": 1.0}, {"Body": "b", "Answer": 2.0}]))
    with pytest.raises(DataError, match=r"record 1 \(0-based\), field 'Question'"):
        load_records(path)
    bad_xml = tmp_path / "ASDiv.xml"
    bad_xml.write_text("<Machine-Reading-Corpus-File><ProblemSet><Problem>")
    with pytest.raises(DataError, match="is not valid XML"):
        load_records(bad_xml)


@needs_shared_data
@pytest.mark.parametrize("name", sorted(STAGED))
def test_converts_the_staged_file(tmp_path, name, capsys):
    path, total, kept = STAGED[name]
    folder = prepare.prepare(name, out=tmp_path, source=SHARED_DATA / path)
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "test.json"]
    records = load_records(folder / "test.json", "contract")
    assert records == load_records(SHARED_DATA / path) and len(records) == kept
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["splits"]["test"]["count"] == kept
    left_out = manifest["splits"]["test"]["from"].get("left_out", {})
    assert sum(left_out.values()) == total - kept
    printed = capsys.readouterr().out
    assert f"test {kept}" in printed and (("left out" in printed) == (total > kept))


def test_gsm_hard_converts_from_a_folder_or_a_file(tmp_path):
    source = gsm_hard_file(tmp_path)
    for given in (tmp_path, source):
        folder = prepare.prepare("gsm_hard", out=tmp_path / "out", source=given)
        assert len(load_records(folder / "test.json")) == 5
    with pytest.raises(UserInputError, match="only a test split"):
        prepare.prepare("gsm_hard", out=tmp_path / "out", source=source, split="train")


@pytest.mark.parametrize("name", EVAL_ONLY)
def test_offline_download_names_the_url_and_the_source_command(tmp_path, offline, capsys, name):
    with pytest.raises(SystemExit) as exit_info:
        prepare.main([name, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    (url,) = prepare.BENCHMARKS[name].urls.values()
    assert offline == [url] and f"could not download {url}" in message and "offline" in message
    assert f"coconut-data {name} --source {tmp_path / name / 'raw'}" in message
    assert "Traceback" not in message


def data_cfg(name: str, data_dir):
    from hydra import compose, initialize_config_dir

    from coconut import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("eval", overrides=[f"data={name}", f"paths.data_dir={data_dir}", "ckpt_path=x"]).data


def test_eval_only_data_loads_without_the_no_steps_warning_and_refuses_training(tmp_path, caplog):
    prepare.prepare("gsm_hard", out=tmp_path, source=gsm_hard_file(tmp_path))
    cfg = data_cfg("gsm_hard", tmp_path)
    with caplog.at_level(logging.WARNING):
        test = load_splits(cfg, ("test",))["test"]
    assert len(test) == 5 and "no reasoning steps" not in caplog.text
    with pytest.raises(UserInputError, match=r"is an evaluation set .* `coconut-eval ckpt_path=\.\.\. data=gsm_hard`"):
        load_splits(cfg)
    # The same records as training data (data=files) still get the warning: there they train only the answer.
    files = data_cfg("files", tmp_path)
    files.test_path = str(tmp_path / "gsm_hard" / "test.json")
    with caplog.at_level(logging.WARNING):
        load_splits(files, ("test",))
    assert "5 of 5 records have no reasoning steps" in caplog.text


def test_a_file_already_downloaded_is_converted_without_the_network(tmp_path, offline):
    raw = tmp_path / "gsm_hard" / "raw"
    raw.mkdir(parents=True)
    gsm_hard_file(raw)
    folder = prepare.prepare("gsm_hard", out=tmp_path)
    assert offline == [] and len(load_records(folder / "test.json")) == 5
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["source"] == {"downloaded": [prepare.BENCHMARKS["gsm_hard"].urls["gsmhardv2.jsonl"]]}
    assert manifest["splits"]["test"]["from"]["left_out"] == {NOT_ONE_NUMBER: 1}
