"""The key content of a reasoning step: what a reader must recover from a thought (or from a
written step) to follow the reasoning. One rule per task family:

  GSM8K / GSM8K-Aug / built-in arithmetic   "<<4-2=2>>"                       -> "2"  (the intermediate result)
  iCoT multiplication (digits reversed)      "0 0 6 4 9 0 ( 5 5 1 1 1 1 )"     -> "551111" (the running sum
                                             in brackets; the first partial product has none: its digits)
  ProsQA / ProntoQA                          "Every terpus is a brimpus."      -> "brimpus" (the entity the
                                             step reaches: its last word)
  built-in graph reachability (data=graph)   "A > F"                           -> "F" (the node the hop reaches,
                                             case kept: node names are letters of both cases)

A written step is correct when its key content equals the reference step's (`steps_match`).
"""

from __future__ import annotations

import re

_CALCULATION = re.compile(r"<<[^<>]*?=\s*([^<>]+?)\s*>>")
_DIGITS_STEP = re.compile(r"^[\d\s+()]+$")
_BRACKETED = re.compile(r"\(([\d\s]+)\)")
_HOP = re.compile(r"^(\w) > (\w)$")
_WORD = re.compile(r"[A-Za-z0-9]+(?:[.,][0-9]+)*")


def step_key(step: str) -> str | None:
    """The key content of `step`, or None when it has none (an empty or unreadable step)."""
    calculations = _CALCULATION.findall(step)
    if calculations:
        return _normalise_number(calculations[-1])
    stripped = step.strip()
    hop = _HOP.match(stripped)
    if hop:
        return hop[2]
    if stripped and _DIGITS_STEP.match(stripped):
        bracketed = _BRACKETED.findall(stripped)
        digits = bracketed[-1] if bracketed else stripped.split("+")[-1]
        return re.sub(r"\D", "", digits) or None
    words = _WORD.findall(stripped)
    return words[-1].lower() if words else None


def _normalise_number(text: str) -> str:
    cleaned = text.replace(",", "").strip()
    try:
        value = float(cleaned)
    except ValueError:
        return cleaned
    return str(int(value)) if value.is_integer() else repr(value).rstrip("0")


def written_steps(generated_text: str) -> list[str]:
    """The reasoning steps a model wrote before its answer line (one per line, as trained)."""
    before_answer = generated_text.split("###", 1)[0]
    return [line.strip() for line in before_answer.split("\n") if line.strip()]


def steps_match(written: str, reference: str) -> bool:
    key = step_key(reference)
    return key is not None and step_key(written) == key
