"""Raw benchmark files -> `Record`s (the `{question, steps, answer}` contract of `records.py`).

Formats, as their authors publish them:
- `contract`: a JSON list of records, or JSONL with one record per line (the official COCONUT
  format; facebookresearch/coconut). `prosqa` and `prontoqa` are this format (ProsQA and
  ProntoQA as preprocessed in facebookresearch/coconut); extra keys such as `edges` are ignored.
- `gsm8k_aug`: iCoT text lines `question||<<a=b>> <<c=d>> #### answer` (GSM8K-Aug, from
  da03/Internalize_CoT_Step_by_Step). One step per `<<...>>` annotation, as the official
  `preprocessing/gsm_icot.py` splits them. Lines whose reasoning is prose (`train_no_aug.txt`)
  are split into sentences, and multiplication lines (below) are recognised by their question.
- `multiplication`: the iCoT multi-digit multiplication lines of the same repository,
  `5 6 3 2 * 7 4 3 4||5 5 5 6 1 + 0 0 6 4 9 0 ( 5 5 1 1 1 1 ) + ... #### 5 5 6 0 8 2 0 1`.
  The reasoning is split on ` + `, so each step is one partial product (followed by the running
  sum in parentheses); digits stay exactly as written (reversed, least significant first).
- `gsm8k`: the original JSONL of openai/grade-school-math, `{question, answer}` where `answer`
  is prose with `<<48/2=24>>` calculator annotations ending `#### 72`. Steps are the annotations
  in order; the answer is the text after `####` with thousands commas removed.
- `gsm_hard`, `svamp`, `multiarith`, `asdiv`: the evaluation-only math benchmarks as published
  (`coconut.data.benchmarks`): question and a canonical numeric answer, no steps.

Every problem is raised as a `DataError` that names the file and the line or record to fix.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

from coconut.data import benchmarks
from coconut.data.records import DataError, Record, parse_record

log = logging.getLogger(__name__)

FORMATS = ("auto", "contract", "gsm8k_aug", "multiplication", "gsm8k", "prosqa", "prontoqa", *benchmarks.FORMATS)

# An iCoT multiplication question: reversed digits of two operands, `5 6 3 2 * 7 4 3 4`.
_MULTIPLICATION_QUESTION = re.compile(r"\d(?: \d)* \* \d(?: \d)*")
# Reasoning made only of calculator annotations (GSM8K-Aug): `<<4-2=2>> <<2/.5=4>>`.
_ANNOTATIONS_ONLY = re.compile(r"(?:<<[^<>]*>>\s*)+")
_ANNOTATION = re.compile(r"<<.*?>>")
# Prose reasoning (train_no_aug.txt) ends a step at a sentence end or at an equation's result
# (`... = $6 The total ...` has no full stop), in both cases before a capital letter.
_STEP_BOUNDARY = re.compile(r"\s+(?=[A-Z])")
_STEP_END = re.compile(r"(?:[.!?]|=\s*\$?-?\d[\d,]*(?:\.\d+)?%?)$")


def load_records(path: str | os.PathLike, format: str = "auto") -> list[Record]:
    """Reads `path` in `format` (see the module docstring); `auto` picks it from the extension
    (.txt: GSM8K-Aug or multiplication by the first line; .json/.jsonl: contract, or GSM8K when
    records hold an `answer` with `####` and no `steps`, or a math benchmark by its keys; .xml:
    ASDiv). Benchmark problems without one numeric answer are left out with a counted warning."""
    converted = read_converted(path, format)
    if converted.left_out:
        log.warning("%s: %s", path, converted.summary())
    return converted.records


def read_converted(path: str | os.PathLike, format: str = "auto") -> benchmarks.Converted:
    """`load_records` with what was left out (only the math benchmarks leave problems out)."""
    path = Path(path)
    source = str(path)
    if format not in FORMATS:
        raise DataError.at(source, f"unknown format {format!r}", f"set data.format to one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise DataError.at(
            source,
            "no such file" if not path.exists() else "is not a file",
            f"check the path given as data.train_path= / data.val_path= / data.test_path= "
            f"(a relative path is read from {os.getcwd()})",
        )
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: files saved by Windows tools start with a BOM
    except UnicodeDecodeError as error:
        raise DataError.at(
            source, f"is not UTF-8 text ({error.reason} at byte {error.start})", "save it as UTF-8"
        ) from None
    if not text.strip():
        raise DataError.at(source, "the file is empty", "give a file with at least one record")
    if format == "auto":
        format = _detect_format(path, text)
    if format == "asdiv":
        return benchmarks.read_benchmark(text, format, source)
    if format in ("gsm8k_aug", "multiplication"):
        records = _load_icot_lines(text, source, multiplication=True if format == "multiplication" else None)
        return benchmarks.Converted(records)
    rows = _read_json_rows(text, source)
    if format in benchmarks.FORMATS:
        return benchmarks.read_benchmark(rows, format, source)
    if format == "gsm8k":
        return benchmarks.Converted(
            [_parse_gsm8k(raw, source=source, index=i, line=line) for i, (raw, line) in enumerate(rows)]
        )
    return benchmarks.Converted(
        [parse_record(raw, source=source, index=i, line=line) for i, (raw, line) in enumerate(rows)]
    )


def _detect_format(path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        first = next(line for line in _lines(text) if line.strip())
        return "multiplication" if _MULTIPLICATION_QUESTION.fullmatch(first.split("||", 1)[0].strip()) else "gsm8k_aug"
    if suffix == ".xml":
        return "asdiv"
    if suffix in (".json", ".jsonl"):
        first = _read_json_rows(text, str(path))[0][0]
        benchmark = benchmarks.detect(first, suffix)
        if benchmark is not None:
            return benchmark
        is_gsm8k = (
            isinstance(first, dict)
            and "steps" not in first
            and isinstance(first.get("answer"), str)
            and "####" in first["answer"]
        )
        return "gsm8k" if is_gsm8k else "contract"
    raise DataError.at(
        str(path),
        f"cannot tell the format of a '{suffix}' file",
        "give a .json/.jsonl (contract, GSM8K, GSM-Hard, SVAMP, MultiArith), .txt (GSM8K-Aug or iCoT "
        "multiplication) or .xml (ASDiv) file, "
        f"or set data.format to one of {', '.join(FORMATS[1:])}",
    )


def _lines(text: str) -> list[str]:
    # Not str.splitlines: it also breaks at U+2028 and similar, which GSM8K questions contain.
    return [line.removesuffix("\r") for line in text.split("\n")]


def _read_json_rows(text: str, source: str) -> list[tuple[object, int | None]]:
    """(raw record, 1-based line or None) for a JSON list, or for JSONL (blank lines skipped)."""
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError.at(
                source,
                f"is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})",
                "repair the JSON list there (a list of {question, steps, answer} objects)",
            ) from None
        if not rows:
            raise DataError.at(source, "the JSON list is empty", "give at least one record")
        return [(row, None) for row in rows]
    rows = []
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            rows.append((json.loads(line), number))
        except json.JSONDecodeError as error:
            raise DataError.at(
                source,
                f"is not JSON ({error.msg} at column {error.colno})",
                "write one JSON object per line (JSONL), or make the whole file one JSON list",
                index=len(rows),
                line=number,
            ) from None
    return rows


def _load_icot_lines(text: str, source: str, *, multiplication: bool | None) -> list[Record]:
    records = []
    for number, line in enumerate(_lines(text), start=1):
        if line.strip():
            records.append(
                parse_icot_line(
                    line, source=source, index=len(records), line_number=number, multiplication=multiplication
                )
            )
    return records


def parse_icot_line(
    line: str, *, source: str, index: int, line_number: int | None = None, multiplication: bool | None = None
) -> Record:
    """One iCoT line `question||reasoning #### answer` -> Record. `multiplication=None` decides
    from the question (two reversed-digit operands); True/False forces the step splitting."""

    def fail(problem: str, fix: str, field: str | None = None) -> DataError:
        return DataError.at(source, problem, fix, index=index, line=line_number, field=field)

    if "||" not in line:
        raise fail("has no '||' between question and reasoning", "write the line as question||reasoning #### answer")
    question, rest = line.split("||", 1)
    if "####" not in rest:
        raise fail("has no '####' before the answer", "end the line with ' #### <answer>'", field="answer")
    reasoning, answer = rest.rsplit("####", 1)
    question, reasoning = question.strip(), reasoning.strip()
    if multiplication is None:
        multiplication = bool(_MULTIPLICATION_QUESTION.fullmatch(question))
    if multiplication:
        if not _MULTIPLICATION_QUESTION.fullmatch(question):
            raise fail(
                "is not an iCoT multiplication question ('d d d * d d d', reversed digits)",
                "use data.format=gsm8k_aug for word problems",
                field="question",
            )
        steps = reasoning.split(" + ") if reasoning else []
    elif not reasoning:
        steps = []
    elif _ANNOTATIONS_ONLY.fullmatch(reasoning):
        steps = _ANNOTATION.findall(reasoning)
    else:
        steps = split_prose_steps(reasoning)
    raw = {"question": question, "steps": steps, "answer": answer.strip()}
    return parse_record(raw, source=source, index=index, line=line_number)


def split_prose_steps(reasoning: str) -> list[str]:
    """Prose reasoning -> one step per sentence or per equation result (a heuristic for
    `train_no_aug.txt`, whose steps are sentences that sometimes lack a full stop)."""
    steps, start = [], 0
    for boundary in _STEP_BOUNDARY.finditer(reasoning):
        if _STEP_END.search(reasoning, start, boundary.start()):
            steps.append(reasoning[start : boundary.start()])
            start = boundary.end()
    steps.append(reasoning[start:])
    return [s for s in steps if s.strip()]


def _parse_gsm8k(raw: object, *, source: str, index: int, line: int | None) -> Record:
    """An openai/grade-school-math record: steps are the `<<...>>` annotations in order."""
    if not isinstance(raw, dict):
        return parse_record(raw, source=source, index=index, line=line)  # raises the not-an-object error
    solution = raw.get("answer")
    if not isinstance(solution, str) or "####" not in solution:
        raise DataError.at(
            source,
            "has no '#### <number>' final line (not an openai/grade-school-math record)",
            "use data.format=contract for {question, steps, answer} records",
            index=index,
            line=line,
            field="answer",
        )
    reasoning, final = solution.rsplit("####", 1)
    converted = {
        "question": raw.get("question"),
        "steps": _ANNOTATION.findall(reasoning),
        "answer": final.strip().replace(",", ""),
    }
    return parse_record(converted, source=source, index=index, line=line)


def write_records(records: Iterable[Record], path: str | os.PathLike) -> None:
    """Writes the contract format: one JSON list, `indent=1` like the official data files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        json.dump([r.to_dict() for r in records], f, indent=1, ensure_ascii=False)
        f.write("\n")
