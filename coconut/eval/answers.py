"""Answer extraction and normalisation, one rule per task family.

The COCONUT format ends every sample with `### <answer>` then eos (facebookresearch/coconut,
`dataset.py`); its `run.py` scores `text.split("#")[-1].replace(",", "").strip()` against the
reference by string equality. We follow it, made robust in two documented ways: numbers compare by
value ("72.0" == "72", GSM8K's convention of a numeric final answer after `####`), and text after
the answer's line (a model that fails to stop) is ignored.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

MARKER = "###"
KINDS = ("number", "statement", "digits", "auto")
_WHITESPACE = re.compile(r"\s+")


def extract_answer(generated_text: str) -> str:
    """The answer line after the last `###` (stripped); with no marker, the last non-empty line.

    `#### 42` (GSM8K's own marker) also works: the last `###` inside it is followed by " 42".
    """
    position = generated_text.rfind(MARKER)
    if position >= 0:
        after = generated_text[position + len(MARKER) :].strip()
        return after.split("\n", 1)[0].strip()
    lines = [line.strip() for line in generated_text.strip().split("\n") if line.strip()]
    return lines[-1] if lines else ""


def _as_decimal(s: str) -> Decimal | None:
    cleaned = s.strip().replace(",", "").replace("$", "").rstrip(".").strip()
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def normalize_number(s: str) -> str:
    """GSM8K-style numbers: commas, `$` and a trailing `.` dropped, and written canonically so
    that equal values give equal strings ("1,000" -> "1000", "72.0" -> "72", "$0.50" -> "0.5").
    A string that is not a number comes back stripped."""
    value = _as_decimal(s)
    if value is None:
        return s.strip()
    if value == value.to_integral_value():
        return str(int(value))
    # normalize() drops trailing zeros; "f" avoids exponent notation ("1E-7").
    return format(value.normalize(), "f")


def normalize_statement(s: str) -> str:
    """ProsQA / ProntoQA answers ("Tom is a lempus.", "True"): stripped, inner whitespace
    collapsed, one trailing period dropped; case is kept (the official scoring is exact match)."""
    return _WHITESPACE.sub(" ", s.strip()).removesuffix(".").rstrip()


def normalize_digits(s: str) -> str:
    """iCoT multiplication answers ("5 5 6 0 8 2 0 1"): all whitespace removed."""
    return _WHITESPACE.sub("", s)


def answers_match(predicted: str, reference: str, kind: str = "auto") -> bool:
    """Whether `predicted` (already extracted) matches `reference` under `kind`:
    number (by value), statement, digits (spaces ignored), or auto (number when the reference
    parses as one, else statement)."""
    if kind not in KINDS:
        raise ValueError(f"unknown answer kind {kind!r}; use one of {', '.join(KINDS)} (data.answer_kind)")
    if kind == "auto":
        kind = "number" if _as_decimal(reference) is not None else "statement"
    if kind == "number":
        return normalize_number(predicted) == normalize_number(reference)
    if kind == "digits":
        return normalize_digits(predicted) == normalize_digits(reference)
    return normalize_statement(predicted) == normalize_statement(reference)
