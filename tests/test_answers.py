"""Answer extraction and matching, per task family, on hand cases and on real records."""

from pathlib import Path

import pytest

from coconut.data.sources import load_records
from coconut.eval.answers import (
    answers_match,
    extract_answer,
    normalize_digits,
    normalize_number,
    normalize_statement,
)

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED.exists(),
    reason="../shared/data not present (benchmark files are only staged on CI/dev machines)",
)


def _generation(record, answer=None) -> str:
    """What a model trained on the COCONUT format writes after the question (eos stripped)."""
    steps = "".join(step + "\n" for step in record.steps)
    return f"{steps}### {record.answer if answer is None else answer}"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<<2*3=6>>\n### 6", "6"),
        ("### 41\n### 42 ", "42"),
        ("#### 1,000", "1,000"),
        ("### Tom is a lempus.\nrambling on", "Tom is a lempus."),
        ("no marker\nlast line  \n\n", "last line"),
        ("###", ""),
        ("", ""),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("72", "72"),
        ("72.0", "72"),
        ("1,000", "1000"),
        ("$18.", "18"),
        ("$0.50", "0.5"),
        ("-3", "-3"),
        (" 1e3 ", "1000"),
        ("0.0000001", "0.0000001"),
        ("seven", "seven"),
        (" nan ", "nan"),
    ],
)
def test_normalize_number(raw, expected):
    assert normalize_number(raw) == expected


def test_normalize_statement_and_digits():
    assert normalize_statement("  Tom  is a\nlempus. ") == "Tom is a lempus"
    assert normalize_statement("True") == "True" != normalize_statement("true")
    assert normalize_digits(" 5 5 6\t0 ") == "5560"


@pytest.mark.parametrize(
    "predicted, reference, kind, expected",
    [
        ("72.0", "72", "number", True),
        ("1,000", "1000", "auto", True),
        ("71", "72", "auto", False),
        ("", "72", "auto", False),
        ("Tom is a lempus", "Tom is a lempus.", "auto", True),
        ("Tom is a scrompus.", "Tom is a lempus.", "statement", False),
        ("5560 8201", "5 5 6 0 8 2 0 1", "digits", True),
        ("5 5 6 0 8 2 0 2", "5 5 6 0 8 2 0 1", "digits", False),
        ("False", "True", "auto", False),
    ],
)
def test_answers_match(predicted, reference, kind, expected):
    assert answers_match(predicted, reference, kind) is expected


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown answer kind"):
        answers_match("1", "1", "exact")


@needs_shared
@pytest.mark.parametrize(
    "name, kind",
    [
        ("gsm8k_aug/valid.txt", "auto"),
        ("gsm8k_aug/valid.txt", "number"),
        ("prosqa/prosqa_valid.json", "auto"),
        ("prontoqa/prontoqa_valid.json", "statement"),
        ("multiplication/4x4_valid.txt", "digits"),
    ],
)
def test_real_records_match_themselves_and_not_their_neighbours(name, kind):
    records = load_records(SHARED / name)
    for record, neighbour in zip(records, records[1:] + records[:1]):
        assert answers_match(extract_answer(_generation(record)), record.answer, kind)
        if kind != "number" and normalize_statement(neighbour.answer) != normalize_statement(record.answer):
            assert not answers_match(extract_answer(_generation(record, neighbour.answer)), record.answer, kind)


@needs_shared
def test_gsm8k_answers_match_by_value():
    for record in load_records(SHARED / "gsm8k_aug" / "valid.txt")[:100]:
        value = int(record.answer)
        assert answers_match(extract_answer(_generation(record, f"{value:,}.0")), record.answer)
        assert not answers_match(extract_answer(_generation(record, str(value + 1))), record.answer)
