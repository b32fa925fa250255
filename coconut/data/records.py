"""The data contract: every task is a list of `{question, steps, answer}` records.

This is the one format of the official COCONUT code (facebookresearch/coconut, `dataset.py`):
`steps` are the chain-of-thought steps that the curriculum replaces by continuous thoughts one
stage at a time, and `answer` is what follows `### ` in the training text. Raw benchmark files are
converted to it by `coconut.data.sources`; `parse_record` is the single place that validates it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coconut.core.errors import UserInputError


class DataError(UserInputError, ValueError):
    """A data file that breaks the contract. The message names the file, the record (0-based
    index, plus the 1-based line for line-based files), the field, what is wrong and the fix.

    The message is the only positional argument so that the error pickles like any ValueError
    (dataloader workers re-raise errors across processes).
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        index: int | None = None,
        line: int | None = None,
        field: str | None = None,
    ):
        super().__init__(message)
        self.source, self.index, self.line, self.field = source, index, line, field

    @classmethod
    def at(
        cls,
        source: str,
        problem: str,
        fix: str,
        *,
        index: int | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> DataError:
        where = [str(source)]
        if line is not None:
            where.append(f"line {line}")
        if index is not None:
            where.append(f"record {index} (0-based)")
        if field is not None:
            where.append(f"field '{field}'")
        return cls(
            f"{', '.join(where)}: {problem}. Fix: {fix}",
            source=str(source),
            index=index,
            line=line,
            field=field,
        )


@dataclass(frozen=True)
class Record:
    """One problem. `steps` may be empty (a record with no reasoning trains only the answer).
    `published`: the question as its file wrote it, for a record re-encoded on reading (ProsQA's
    compact encoding, coconut/data/prosqa.py), so that answers can be shown as published."""

    question: str
    steps: tuple[str, ...]
    answer: str
    published: str | None = field(default=None, compare=False)

    def __post_init__(self):
        # Callers often hand a list; a tuple keeps the record hashable and truly frozen.
        if not isinstance(self.steps, tuple):
            object.__setattr__(self, "steps", tuple(self.steps))

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "steps": list(self.steps), "answer": self.answer}


def parse_record(raw: Any, *, source: str, index: int, line: int | None = None) -> Record:
    """Validates one raw record (a dict, as read from JSON) and returns it as a `Record`.

    Strict on purpose: a number given as the answer (`"answer": 72`) is an error rather than a
    silent `str()`, since `72.0` and `72` would then train different targets. Keys other than
    question/steps/answer (ProsQA's `idx_to_symbol`, `edges`, ...) are ignored.
    """

    def fail(problem: str, fix: str, field: str | None = None) -> DataError:
        return DataError.at(source, problem, fix, index=index, line=line, field=field)

    if not isinstance(raw, dict):
        raise fail(
            f"expected an object, got {type(raw).__name__}",
            'write each record as {"question": "...", "steps": ["..."], "answer": "..."}',
        )
    for name in ("question", "answer"):
        if name not in raw:
            raise fail("is missing", f'add "{name}": "<text>" to the record', field=name)
        value = raw[name]
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise fail(
                f"is the number {value!r}, not a string",
                f'quote it as text ("{name}": "{value}") so that the training target is exact',
                field=name,
            )
        if not isinstance(value, str):
            raise fail(f"is a {type(value).__name__}, not a string", f"give {name} as a non-empty string", field=name)
        if not value.strip():
            raise fail("is empty", f"give a non-empty {name}, or drop the record", field=name)
    if "steps" not in raw:
        raise fail("is missing", 'add "steps": [...] (a list of strings; [] if there is no reasoning)', field="steps")
    steps = raw["steps"]
    if not isinstance(steps, list | tuple):
        raise fail(
            f"is a {type(steps).__name__}, not a list",
            'give steps as a list of strings, e.g. ["<<2*3=6>>", "<<6+1=7>>"]',
            field="steps",
        )
    for i, step in enumerate(steps):
        if not isinstance(step, str):
            raise fail(f"is a {type(step).__name__}, not a string", "write every step as text", field=f"steps[{i}]")
        if not step.strip():
            raise fail("is empty or whitespace only", "remove the empty step", field=f"steps[{i}]")
    return Record(question=raw["question"], steps=tuple(steps), answer=raw["answer"])
