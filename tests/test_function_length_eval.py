"""No function in coconut/eval/ is over 60 lines (STYLE.md: an orchestrator that needs more is doing
several jobs). Measured with `ast`, from the `def` line (decorators included) to the last line."""

import ast
from pathlib import Path

EVAL = Path(__file__).resolve().parent.parent / "coconut" / "eval"
MAX_LINES = 60


def long_functions(folder: Path, limit: int = MAX_LINES) -> list[str]:
    """`path:name (n lines)` of every function or method in `folder` longer than `limit` lines."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines = node.end_lineno - first + 1
                if lines > limit:
                    found.append(f"{path.relative_to(folder.parent)}:{node.name} ({lines} lines)")
    return found


def test_no_function_in_eval_is_over_60_lines():
    assert not long_functions(EVAL), long_functions(EVAL)


def test_the_measure_sees_a_long_function(tmp_path):
    (tmp_path / "pkg").mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "pkg" / "m.py").write_text(f"def short():\n    return 1\n\n\n@staticmethod\ndef long():\n{body}\n")
    assert long_functions(tmp_path / "pkg") == [f"pkg/m.py:long ({MAX_LINES + 2} lines)"]
