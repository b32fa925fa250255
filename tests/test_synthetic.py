"""Generators: seeded, correct by recomputation, and identical in format to the real iCoT files."""

import re
from pathlib import Path

import pytest

from coconut.data.sources import load_records
from coconut.data.synthetic import generate_arithmetic, generate_multiplication, multiplication_line

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED.exists(),
    reason="../shared/data not present (benchmark files are only staged on CI/dev machines)",
)
STEP = re.compile(r"<<(\d+)([+\-*])(\d+)=(\d+)>>")


def _evaluate(left: int, op: str, right: int) -> int:
    return {"+": left + right, "-": left - right, "*": left * right}[op]


def test_same_seed_same_records_other_seed_other_records():
    assert generate_arithmetic(50, seed=3) == generate_arithmetic(50, seed=3)
    assert generate_arithmetic(50, seed=3) != generate_arithmetic(50, seed=4)
    assert generate_multiplication(20, seed=3) == generate_multiplication(20, seed=3)
    assert generate_multiplication(20, seed=3) != generate_multiplication(20, seed=4)
    # A prefix of a larger request is the smaller request: sizes can change without reshuffling.
    assert generate_arithmetic(100, seed=1)[:30] == generate_arithmetic(30, seed=1)


@pytest.mark.parametrize("num_steps, operand_max", [(1, 9), (4, 9), (6, 20), (3, 2)])
def test_arithmetic_steps_recompute_and_chain(num_steps, operand_max):
    for record in generate_arithmetic(300, num_steps=num_steps, operand_max=operand_max, seed=7):
        assert len(record.steps) == num_steps
        parsed = [STEP.fullmatch(step) for step in record.steps]
        assert all(parsed), record.steps
        operands, previous = [], None
        for match in parsed:
            left, op, right, result = int(match[1]), match[2], int(match[3]), int(match[4])
            assert _evaluate(left, op, right) == result
            assert 0 < result <= 99  # the default result_max
            assert right <= operand_max
            if previous is None:
                operands += [left, right]
            else:
                assert left == previous  # each step continues from the last result
                operands.append(right)
            previous = result
        assert record.answer == str(previous)
        # The question states every operand, in the order the steps use them, and nothing else.
        assert [int(n) for n in re.findall(r"\d+", record.question)] == operands
        # Short enough for tiny models: under 200 characters at the default four steps.
        assert len(record.question) < 45 * (num_steps + 1)


def test_arithmetic_uses_every_operation_and_varied_questions():
    records = generate_arithmetic(2000, seed=0)
    ops = {STEP.fullmatch(s)[2] for r in records for s in r.steps}
    assert ops == {"+", "-", "*"}
    assert len({r.question for r in records}) > 1950


@pytest.mark.parametrize(
    "kwargs", [{"n": -1}, {"n": 1, "num_steps": 0}, {"n": 1, "operand_max": 1}, {"n": 1, "operand_max": 500}]
)
def test_arithmetic_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        generate_arithmetic(**kwargs)


def _reversed_number(digits: str) -> int:
    return int("".join(digits.split())[::-1])


@pytest.mark.parametrize("digits", [1, 2, 4, 6])
def test_multiplication_records_compute_the_product(digits):
    for record in generate_multiplication(100, digits=digits, seed=1):
        a_text, b_text = record.question.split(" * ")
        a, b = _reversed_number(a_text), _reversed_number(b_text)
        assert len(str(a)) == len(str(b)) == digits  # leading digit non-zero
        assert _reversed_number(record.answer) == a * b
        assert len(record.answer.split()) == 2 * digits
        assert len(record.steps) == digits


def test_generated_multiplication_equals_the_same_lines_loaded_from_a_file(tmp_path):
    records = generate_multiplication(50, digits=5, seed=2)
    lines = [f"{r.question}||{' + '.join(r.steps)} #### {r.answer}" for r in records]
    path = tmp_path / "5x5.txt"
    path.write_text("\n".join(lines) + "\n")
    assert load_records(path) == records


@needs_shared
@pytest.mark.parametrize("digits", [4, 5, 7, 9])
def test_multiplication_line_reproduces_the_real_files(digits):
    path = SHARED / "multiplication" / f"{digits}x{digits}_valid.txt"
    lines = [line for line in path.read_text().split("\n") if line]
    loaded = load_records(path)
    assert len(loaded) == len(lines)
    for line in lines:
        a_text, b_text = line.split("||")[0].split(" * ")
        a, b = _reversed_number(a_text), _reversed_number(b_text)
        assert multiplication_line(a, b, digits=digits) == line
    # And the generator's records have the loaded records' shape, string for string.
    generated = generate_multiplication(1, digits=digits, seed=0)[0]
    assert len(generated.steps) == len(loaded[0].steps)
    assert [len(s) for s in generated.steps] == [len(s) for s in loaded[0].steps]
