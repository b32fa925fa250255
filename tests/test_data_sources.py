"""Raw files -> records: every real benchmark file loads, and every bad input names its fix."""

import json
import re
from pathlib import Path

import pytest

from coconut.data.records import DataError, Record, parse_record
from coconut.data.sources import load_records, write_records

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED.exists(),
    reason="../shared/data not present (benchmark files are only staged on CI/dev machines)",
)


@needs_shared
def test_gsm8k_aug_valid_has_500_annotated_records():
    records = load_records(SHARED / "gsm8k_aug" / "valid.txt")
    assert len(records) == 500
    first = records[0]
    assert first.question.startswith("John cuts his grass to 2 inches.")
    assert first.steps == ("<<4-2=2>>", "<<2/.5=4>>", "<<12/4=3>>", "<<100*3=300>>")
    assert first.answer == "300"
    annotation = re.compile(r"<<[^<>]+=[^<>]+>>")
    assert all(annotation.fullmatch(s) for r in records for s in r.steps)
    # A few lines carry no reasoning at all; they load with no steps rather than one empty step.
    assert 490 <= sum(1 for r in records if r.steps) < 500


@needs_shared
def test_gsm8k_aug_prose_reasoning_splits_into_sentences():
    records = load_records(SHARED / "gsm8k_aug" / "train_no_aug.txt")
    assert len(records) == 6973  # one question holds U+2028; it must not split its line
    assert records[0].steps == (
        "The annual budget for policing is 32 / 2 = $16 million.",
        "The combined budget for education and policing is 16 + 12 = $28 million.",
        "There is 32 - 28 = $4 million to manage public spaces.",
    )
    assert all(r.steps for r in records)


@needs_shared
def test_gsm8k_original_steps_are_the_annotations():
    path = SHARED / "gsm8k" / "train.jsonl"
    records = load_records(path)
    assert len(records) == 7473
    assert records[0].steps == ("<<48/2=24>>", "<<48+24=72>>")
    assert records[0].answer == "72"
    assert all("," not in r.answer for r in records)
    assert load_records(path, "gsm8k")[:50] == records[:50]


@needs_shared
@pytest.mark.parametrize(
    "name, size, fmt",
    [("prosqa/prosqa_valid.json", 300, "prosqa"), ("prontoqa/prontoqa_valid.json", 200, "prontoqa")],
)
def test_prosqa_and_prontoqa_load_as_contract(name, size, fmt):
    raw = json.loads((SHARED / name).read_text())
    records = load_records(SHARED / name)
    assert len(records) == size
    assert records == load_records(SHARED / name, fmt)
    assert records[0] == Record(raw[0]["question"], tuple(raw[0]["steps"]), raw[0]["answer"])


@needs_shared
@pytest.mark.parametrize("digits", [4, 5, 7, 9])
def test_multiplication_steps_are_partial_products_as_written(digits):
    path = SHARED / "multiplication" / f"{digits}x{digits}_valid.txt"
    records = load_records(path)
    lines = [line for line in path.read_text().split("\n") if line]
    assert len(records) == len(lines) == 1000
    for record, line in zip(records, lines):
        assert len(record.steps) == digits
        # Joining the steps back gives the file's reasoning character for character.
        assert f"{record.question}||{' + '.join(record.steps)} #### {record.answer}" == line
    if digits == 4:
        assert records[0].steps[:2] == ("5 5 5 6 1", "0 0 6 4 9 0 ( 5 5 1 1 1 1 )")
        assert records[0].answer == "5 5 6 0 8 2 0 1"


def test_write_then_load_round_trips(tmp_path):
    records = [Record("What is 2*3?", ("<<2*3=6>>",), "6"), Record("Say hi.", (), "hi")]
    path = tmp_path / "sub" / "records.json"
    write_records(records, path)
    assert path.read_text().startswith("[\n {")
    assert load_records(path) == records
    jsonl = tmp_path / "records.jsonl"
    jsonl.write_text("\n".join(json.dumps(r.to_dict()) for r in records) + "\n\n")
    assert load_records(jsonl) == records
    jsonl.write_text("\ufeff" + jsonl.read_text())  # a byte-order mark is not part of the data
    assert load_records(jsonl) == records


def test_record_takes_a_list_of_steps_and_stays_hashable():
    record = Record("q", ["a"], "1")
    assert record.steps == ("a",) and hash(record)


# (file name, content, format, fragments the message must contain)
BAD_FILES = [
    ("empty.json", "  \n", "auto", ["empty.json", "the file is empty"]),
    ("empty_list.json", " [ ]\n", "auto", ["empty_list.json", "the JSON list is empty", "at least one record"]),
    (
        "bad.jsonl",
        '{"question": "q", "steps": [], "answer": "1"}\n{"question": oops}\n',
        "auto",
        ["bad.jsonl", "line 2", "record 1", "not JSON", "one JSON object per line"],
    ),
    (
        "bad.json",
        '[{"question": "q",\n "steps": [], "answer": 1,]',
        "auto",
        ["bad.json", "line 2", "not valid JSON"],
    ),
    (
        "nobar.txt",
        "q||<<1+1=2>> #### 2\nwhat is it <<1+1=2>> #### 2\n",
        "auto",
        ["nobar.txt", "line 2", "record 1", "'||'"],
    ),
    (
        "nohash.txt",
        "q||<<1+1=2>> 2\n",
        "gsm8k_aug",
        ["nohash.txt", "line 1", "record 0", "'####'", "'answer'"],
    ),
    (
        "gsm.jsonl",
        '{"question": "q", "answer": "1 #### 1"}\n{"question": "q", "answer": "no marker"}\n',
        "gsm8k",
        ["gsm.jsonl", "line 2", "record 1", "'answer'", "####"],
    ),
    ("data.csv", "q,a\n", "auto", ["data.csv", "'.csv'", "data.format"]),
    ("ok.json", "[]", "yaml", ["ok.json", "unknown format", "contract"]),
]


@pytest.mark.parametrize("name, content, fmt, fragments", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_raise_data_error_naming_file_and_place(tmp_path, name, content, fmt, fragments):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError) as error:
        load_records(path, fmt)
    for fragment in fragments:
        assert fragment in str(error.value)
    assert "Fix:" in str(error.value)


def test_missing_file_names_path_and_config_key(tmp_path):
    with pytest.raises(DataError, match=r"nope\.json: no such file.*data\.train_path="):
        load_records(tmp_path / "nope.json")


BAD_RECORDS = [
    (["q"], None, "expected an object"),
    ({"steps": [], "answer": "1"}, "question", "is missing"),
    ({"question": "  ", "steps": [], "answer": "1"}, "question", "is empty"),
    ({"question": "q", "steps": [], "answer": 72}, "answer", "quote it"),
    ({"question": "q", "steps": [], "answer": 7.5}, "answer", "not a string"),
    ({"question": "q", "answer": "1"}, "steps", "is missing"),
    ({"question": "q", "steps": "<<1+1=2>>", "answer": "2"}, "steps", "not a list"),
    ({"question": "q", "steps": ["<<1+1=2>>", " "], "answer": "2"}, "steps[1]", "whitespace"),
    ({"question": "q", "steps": [3], "answer": "3"}, "steps[0]", "not a string"),
    ({"question": "q", "steps": [], "answer": ""}, "answer", "is empty"),
]


@pytest.mark.parametrize("raw, field, problem", BAD_RECORDS)
def test_bad_records_name_index_line_and_field(raw, field, problem):
    with pytest.raises(DataError) as error:
        parse_record(raw, source="train.jsonl", index=4, line=5)
    message = str(error.value)
    assert message.startswith("train.jsonl, line 5, record 4 (0-based)")
    assert problem in message
    assert error.value.field == field
    if field:
        assert f"field '{field}'" in message


def test_bad_record_in_a_file_names_it(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps([{"question": "q", "steps": [], "answer": "1"}, {"question": "q", "steps": [""]}]))
    with pytest.raises(DataError, match=r"train\.json, record 1 \(0-based\), field 'answer': is missing"):
        load_records(path)


def test_extra_keys_are_ignored():
    raw = {"question": "q", "steps": ["s"], "answer": "a", "edges": [[0, 1]], "root": 0}
    assert parse_record(raw, source="x", index=0) == Record("q", ("s",), "a")
