"""Evaluation-only math benchmarks: raw files -> `Record`s with the question, the answer and no steps.

Latent-reasoning papers report GSM8K test in distribution and these out of distribution (CODI reports
GSM-Hard, SVAMP and MultiArith; ASDiv is the other common one). None ships reasoning steps in the
`steps` sense, so `steps` is empty: they are evaluation sets (`data.eval_only: true`), never trained on.

- `gsm_hard`: gsmhardv2.jsonl (reasoning-machines/gsm-hard; Gao et al. 2023, PAL), one
  `{input, code, target}` per line: question = input, answer = target, a float (`5.0`).
- `svamp`: SVAMP.json (arkilpatel/SVAMP; Patel et al. 2021), a list of `{ID, Body, Question,
  Equation, Answer, Type}`: question = Body + " " + Question, answer = Answer, a float.
- `multiarith`: MultiArith.json (Roy and Roth 2015, as kojima-takeshi188/zero_shot_cot ships it),
  a list of `{iIndex, sQuestion, lEquations, lSolutions, lAlignments}`: question = sQuestion,
  answer = the one entry of lSolutions.
- `asdiv`: ASDiv.xml (chaochun/nlu-asdiv-dataset; Miao et al. 2020), `<Problem>` elements with
  `<Body>`, `<Question>` and `<Answer>9 (apples)</Answer>`: question = Body + " " + Question, answer =
  the number, its unit dropped.

Answers are written canonically as numbers (`number_answer`): `5.0` -> `5`, `1,000` -> `1000`,
`9 (apples)` -> `9`, `0.5` stays `0.5`; scoring then compares by value (`coconut.eval.answers`, kind
`number`). A problem whose answer is not one number (ASDiv's times `3:30 p.m.`, ratios `3:4`, names,
several answers `5 (years old); 15 (years old)`) is left out, counted by reason in `Converted.left_out`
(`coconut-data` prints it and writes it to manifest.json; `data=files` warns).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from coconut.data.records import DataError, Record, parse_record

FORMATS = ("gsm_hard", "svamp", "multiarith", "asdiv")
NOT_ONE_NUMBER = "the answer is not one number (a time, a ratio, a name, or several answers)"
# `9 (apples)`, `-3.5`, `1,250 (dollars)`, `.5`: one number, then at most one unit in parentheses.
_NUMBER_WITH_UNIT = re.compile(r"\s*(-?(?:\d[\d,]*)?\.?\d+)\s*(?:\([^()]*\))?\s*")


@dataclass
class Converted:
    records: list[Record]
    left_out: dict[str, list[int]] = field(default_factory=dict)  # reason -> 0-based indices in the raw file

    def leave_out(self, reason: str, index: int) -> None:
        self.left_out.setdefault(reason, []).append(index)

    def summary(self) -> str:
        """`221 left out: <reason> (records 3, 17, ...)` for messages; "" when nothing was left out."""
        parts = []
        for reason, indices in self.left_out.items():
            shown = ", ".join(map(str, indices[:5])) + (", ..." if len(indices) > 5 else "")
            parts.append(f"{len(indices)} left out: {reason} (records {shown}, 0-based)")
        return "; ".join(parts)


def number_answer(value: object) -> str | None:
    """A benchmark's answer written canonically, or None when it is not one number: floats and ints
    (`5.0` -> `5`, `0.25` -> `0.25`), and text with thousands separators or a unit in parentheses
    (`1,000` -> `1000`, `9 (apples)` -> `9`)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        text = repr(value)  # the shortest text that reads back as the same float
    elif isinstance(value, str):
        match = _NUMBER_WITH_UNIT.fullmatch(value)
        if match is None:
            return None
        text = match.group(1).replace(",", "")
    else:
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    if number == number.to_integral_value():
        return str(int(number))
    return format(number.normalize(), "f")


def _record(question: str, answer: str, *, source: str, index: int, line: int | None) -> Record:
    return parse_record({"question": question, "steps": [], "answer": answer}, source=source, index=index, line=line)


def _text(value: object) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""


def _join(body: object, question: object) -> str:
    """SVAMP's and ASDiv's Body and Question as one question ("... each pack. How much ...?")."""
    return " ".join(part for part in (_text(body), _text(question)) if part)


def read_benchmark(rows: list[tuple[object, int | None]] | str, format: str, source: str) -> Converted:
    """Raw rows (JSON objects with their 1-based line, or the XML text for `asdiv`) -> records."""
    if format == "asdiv":
        return _read_asdiv(rows, source)
    keys = {
        "gsm_hard": ("input", "target"),
        "svamp": ("Body", "Question", "Answer"),
        "multiarith": ("sQuestion", "lSolutions"),
    }
    converted = Converted([])
    for index, (raw, line) in enumerate(rows):
        if not isinstance(raw, dict):
            raise DataError.at(
                source,
                f"expected an object, got {type(raw).__name__}",
                f"give the {format} file",
                index=index,
                line=line,
            )
        for key in keys[format]:
            if key not in raw:
                raise DataError.at(
                    source,
                    "is missing",
                    f"give the {format} file as published (objects with {', '.join(keys[format])})",
                    index=index,
                    line=line,
                    field=key,
                )
        if format == "gsm_hard":
            question, answer = _text(raw["input"]), raw["target"]
        elif format == "svamp":
            question, answer = _join(raw["Body"], raw["Question"]), raw["Answer"]
        else:
            solutions = raw["lSolutions"]
            question = _text(raw["sQuestion"])
            answer = solutions[0] if isinstance(solutions, list) and len(solutions) == 1 else None
        canonical = number_answer(answer)
        if canonical is None:
            converted.leave_out(NOT_ONE_NUMBER, index)
            continue
        converted.records.append(_record(question, canonical, source=source, index=index, line=line))
    return converted


def _read_asdiv(text: str, source: str) -> Converted:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as error:
        raise DataError.at(source, f"is not valid XML ({error})", "give ASDiv.xml as published") from None
    problems = root.findall(".//Problem")
    if not problems:
        raise DataError.at(source, "holds no <Problem> element", "give ASDiv.xml (chaochun/nlu-asdiv-dataset)")
    converted = Converted([])
    for index, problem in enumerate(problems):
        parts = {name: problem.findtext(name) for name in ("Body", "Question", "Answer")}
        for name, value in parts.items():
            if value is None:
                raise DataError.at(
                    source,
                    f"problem {problem.get('ID')!r} has no <{name}>",
                    "give ASDiv.xml as published",
                    index=index,
                    field=name,
                )
        canonical = number_answer(parts["Answer"])
        if canonical is None:
            converted.leave_out(NOT_ONE_NUMBER, index)
            continue
        question = _join(parts["Body"], parts["Question"])
        converted.records.append(_record(question, canonical, source=source, index=index, line=None))
    return converted


def detect(first: object, suffix: str) -> str | None:
    """The benchmark format of a file from its suffix and first JSON row, or None."""
    if suffix == ".xml":
        return "asdiv"
    if not isinstance(first, dict) or "steps" in first:
        return None
    if {"input", "target"} <= first.keys():
        return "gsm_hard"
    if {"Body", "Question", "Answer"} <= first.keys():
        return "svamp"
    if {"sQuestion", "lSolutions"} <= first.keys():
        return "multiarith"
    return None
