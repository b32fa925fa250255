"""Seeded generators of training data, pure Python, so that a run needs no download.

- `generate_arithmetic`: multi-step arithmetic word problems whose steps are GSM8K-Aug calculator
  annotations (`<<3*4=12>>`, the step format of da03/Internalize_CoT_Step_by_Step that COCONUT
  trains on for GSM8K). Each step works on the previous step's result, so the reasoning is a real
  chain; every number of the question appears in the order the steps use it.
- `generate_multiplication`: iCoT multi-digit multiplication (Deng et al. 2023, "Implicit Chain of
  Thought Reasoning via Knowledge Distillation"; same repository), in exactly the line format of
  its `4x4_valid.txt` etc., converted to records by the same code that reads those files.

The same (arguments, seed) always gives the same records, on any machine.
"""

from __future__ import annotations

import random

from coconut.core.errors import ConfigError
from coconut.data.records import Record
from coconut.data.sources import parse_icot_line

GENERATED = "<generated>"
# The default bound on every intermediate result: two digits keep each step a one-lookup fact
# (2-digit +- 1-digit, or a product <= 99) that a small model learns fast, while answering without
# the steps still needs every one of them composed in a single pass.
RESULT_MAX = 99

_NAMES = ("Ann", "Ben", "Cal", "Dora", "Eve", "Finn", "Gia", "Hal", "Ivy", "Jo", "Kai", "Lea", "Max", "Nia")
_PRONOUN = {
    name: ("She" if name in {"Ann", "Dora", "Eve", "Gia", "Ivy", "Jo", "Lea", "Nia"} else "He") for name in _NAMES
}
_ITEMS = ("pens", "apples", "cards", "coins", "shells", "stamps", "books", "marbles", "eggs", "toys")

# The first step states both operands; `{a}` then `{b}` in that order.
_FIRST = {
    "+": ("{name} has {a} {items} and gets {b} more.", "{name} finds {a} {items}, then {b} more."),
    "-": ("{name} has {a} {items} and gives away {b}.", "{name} buys {a} {items} and loses {b}."),
    "*": ("{name} has {a} boxes of {b} {items}.", "{name} buys {a} bags with {b} {items} in each."),
}
# Later steps apply `{x}` to the running total (the previous step's result).
_NEXT = {
    "+": ("{p} gets {x} more.", "Then {p_low} finds {x} more.", "A friend gives {o} {x} more."),
    "-": ("{p} gives away {x}.", "Then {p_low} loses {x}.", "{p} sells {x} of them."),
    "*": (
        "{p} ends up with {x} times as many.",
        "Then the number grows {x} times.",
        "{p} now has {x} times that.",
    ),
}
_OBJECT = {"She": "her", "He": "him"}


def _apply(op: str, left: int, right: int) -> int:
    return left + right if op == "+" else left - right if op == "-" else left * right


def _allowed(left: int, right: int, result_max: int) -> list[str]:
    """Operations that keep the result a positive integer no larger than `result_max`."""
    ops = []
    if left + right <= result_max:
        ops.append("+")
    if right < left:  # strictly: a zero total would make every later step trivial
        ops.append("-")
    if right >= 2 and left * right <= result_max:  # x1 is no step at all
        ops.append("*")
    return ops


def generate_arithmetic(
    n: int, *, num_steps: int = 4, operand_max: int = 9, result_max: int = RESULT_MAX, seed: int = 0
) -> list[Record]:
    """`n` word problems of `num_steps` chained operations on operands in 1..operand_max, every
    intermediate result in 1..result_max.

    Example (num_steps=3): "Ann has 3 boxes of 4 pens. She gives away 5. Then the number grows 2
    times. How many pens does Ann have now?" -> steps `<<3*4=12>> <<12-5=7>> <<7*2=14>>`, answer "14".
    """
    if n < 0 or num_steps < 1 or not 2 <= operand_max <= result_max // 2:
        raise ConfigError(
            f"data.generator needs n >= 0, num_steps >= 1, 2 <= operand_max <= result_max // 2; "
            f"got {n=}, {num_steps=}, {operand_max=}, {result_max=}"
        )
    rng = random.Random(seed)
    return [_arithmetic_problem(rng, num_steps, operand_max, result_max) for _ in range(n)]


def _arithmetic_problem(rng: random.Random, num_steps: int, operand_max: int, result_max: int) -> Record:
    name, items = rng.choice(_NAMES), rng.choice(_ITEMS)
    pronoun = _PRONOUN[name]
    a, b = rng.randint(1, operand_max), rng.randint(1, operand_max)
    # `+` is always allowed here (a + b <= 2 * operand_max), so the choice is never empty;
    # `*` also needs a >= 2 ("1 boxes of ..." reads badly).
    op = rng.choice([o for o in _allowed(a, b, result_max) if o != "*" or a >= 2])
    total = _apply(op, a, b)
    sentences = [rng.choice(_FIRST[op]).format(name=name, a=a, b=b, items=items)]
    steps = [f"<<{a}{op}{b}={total}>>"]
    for _ in range(num_steps - 1):
        x = rng.randint(1, operand_max)
        # Never empty: x < total allows `-`, else total + x <= 2 * operand_max <= result_max allows `+`.
        op = rng.choice(_allowed(total, x, result_max))
        result = _apply(op, total, x)
        template = rng.choice(_NEXT[op])
        sentences.append(template.format(p=pronoun, p_low=pronoun.lower(), o=_OBJECT[pronoun], x=x))
        steps.append(f"<<{total}{op}{x}={result}>>")
        total = result
    sentences.append(f"How many {items} does {name} have now?")
    return Record(question=" ".join(sentences), steps=tuple(steps), answer=str(total))


def multiplication_line(a: int, b: int, *, digits: int | None = None) -> str:
    """The iCoT line for a*b: operands, partial products and product written as reversed digits.

    For `digits`-digit operands, partial product i (a times digit i of b, shifted i places) is
    written with digits+1+i digits, followed (except the last) by the running sum of partial
    products 0..i in parentheses at the same width; the product has 2*digits digits:
        2365*4347 -> "5 6 3 2 * 7 4 3 4||5 5 5 6 1 + 0 0 6 4 9 0 ( 5 5 1 1 1 1 ) + ... #### 5 5 6 0 8 2 0 1"
    """
    width_a = digits or len(str(a))
    width_b = digits or len(str(b))

    def rev(value: int, width: int) -> str:
        return " ".join(str(value).zfill(width)[::-1])

    b_digits = [int(d) for d in str(b).zfill(width_b)[::-1]]  # least significant first
    pieces, running = [], 0
    for i, digit in enumerate(b_digits):
        partial = a * digit * 10**i
        running += partial
        piece = rev(partial, width_a + 1 + i)
        if 0 < i < len(b_digits) - 1:
            piece += f" ( {rev(running, width_a + 1 + i)} )"
        pieces.append(piece)
    return f"{rev(a, width_a)} * {rev(b, width_b)}||{' + '.join(pieces)} #### {rev(a * b, width_a + width_b)}"


def generate_multiplication(n: int, *, digits: int = 4, seed: int = 0) -> list[Record]:
    """`n` products of two `digits`-digit numbers (leading digit non-zero), as iCoT records:
    question "a0 a1 .. * b0 b1 ..", one step per partial product, answer the reversed product."""
    if n < 0 or digits < 1:
        raise ValueError(f"need n >= 0 and digits >= 1; got {n=}, {digits=}")
    rng = random.Random(seed)
    low, high = 10 ** (digits - 1), 10**digits - 1
    records = []
    for index in range(n):
        line = multiplication_line(rng.randint(low, high), rng.randint(low, high), digits=digits)
        # The reader of the real files converts it, so generated and converted records agree.
        records.append(parse_icot_line(line, source=GENERATED, index=index, multiplication=True))
    return records
