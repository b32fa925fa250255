"""The package's layers and the direction of their imports: core <- data <- eval/training <- commands <- cli.

A module may import coconut modules of its own layer and of the layers before it, never after.
Only `core` is held to "no Lightning, no Hydra": it is the library a researcher can lift out.
Each cli/ module is a thin shell over commands/: no cli/ module imports another, and no function in
cli/ or commands/ is longer than a screen (MAX_FUNCTION_LINES).
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "coconut"
# The layers a module of each layer may import from. eval and training are peers; training's
# validation generates answers through eval, so training may import eval, not the reverse.
ALLOWED = {
    "core": {"core"},
    "data": {"core", "data"},
    "eval": {"core", "data", "eval"},
    "training": {"core", "data", "eval", "training"},
    "commands": {"core", "data", "eval", "training", "commands"},
    "cli": {"core", "data", "eval", "training", "commands", "cli"},
}
# Functions that fit on a screen: an orchestrator longer than this is doing several jobs.
MAX_FUNCTION_LINES = 60
SHORT_FUNCTION_LAYERS = ("cli", "commands")
FRAMEWORKS = ("lightning", "pytorch_lightning", "hydra", "omegaconf")


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def layer_of(path: Path) -> str | None:
    relative = path.relative_to(PACKAGE).parts
    return relative[0] if len(relative) > 1 else None


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_lives_in_a_layer():
    loose = [p.name for p in modules() if layer_of(p) is None and p.name != "__init__.py"]
    assert not loose, f"modules outside a layer: {loose}"
    assert {p.parts[-2] for p in modules() if layer_of(p)} == set(ALLOWED)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path):
    layer = layer_of(path)
    if layer is None:
        return
    against = sorted(
        name
        for name in imported_modules(path)
        if name.startswith("coconut.") and name.split(".")[1] not in ALLOWED[layer]
    )
    assert not against, f"{path.relative_to(PACKAGE)} ({layer}) imports {against}: allowed {sorted(ALLOWED[layer])}"


def test_core_imports_no_framework():
    found = {
        str(path.relative_to(PACKAGE)): sorted(n for n in imported_modules(path) if n.split(".")[0] in FRAMEWORKS)
        for path in PACKAGE.joinpath("core").rglob("*.py")
    }
    assert not {k: v for k, v in found.items() if v}, f"core imports a framework: {found}"


def test_the_checker_sees_a_violation(tmp_path):
    """The checks above would catch `import lightning` or a core -> training import."""
    bad = tmp_path / "bad.py"
    bad.write_text("import lightning as L\nfrom coconut.training.runs import upgraded\n")
    assert {"lightning", "coconut.training.runs"} <= imported_modules(bad)


def cli_imports(path: Path) -> list[str]:
    """The coconut.cli modules `path` imports (`from coconut.cli import x` names the module x)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("coconut.cli.")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "coconut.cli":
                found += [f"coconut.cli.{a.name}" for a in node.names]
            elif node.module.startswith("coconut.cli."):
                found.append(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:  # a relative import inside cli/
            found.append("." * node.level + (node.module or ""))
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.joinpath("cli").glob("*.py")), ids=lambda p: p.name)
def test_no_cli_module_imports_another(path):
    """Each command is a thin shell over coconut.commands; the work they share lives there."""
    assert not cli_imports(path), f"cli/{path.name} imports {cli_imports(path)}: move what it needs to commands/"


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """`name (N lines)` for each function or method in `path` longer than `limit` lines (its
    decorators and docstring included)."""
    return [
        f"{node.name} ({node.end_lineno - min([node.lineno, *(d.lineno for d in node.decorator_list)]) + 1} lines)"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - min([node.lineno, *(d.lineno for d in node.decorator_list)]) + 1 > limit
    ]


@pytest.mark.parametrize(
    "path",
    [p for layer in SHORT_FUNCTION_LAYERS for p in sorted(PACKAGE.joinpath(layer).rglob("*.py"))],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_functions_fit_on_a_screen(path):
    assert not long_functions(path), (
        f"{path.relative_to(PACKAGE)}: {long_functions(path)} over {MAX_FUNCTION_LINES} lines; split into named steps"
    )


def test_the_shape_checks_see_a_violation(tmp_path):
    """The two checks above would catch a cli/ module importing another and a 61-line function."""
    shell = tmp_path / "shell.py"
    shell.write_text("from coconut.cli.train import train\nfrom coconut.cli import evaluate\nfrom . import export\n")
    assert cli_imports(shell) == ["coconut.cli.train", "coconut.cli.evaluate", "."]
    long = tmp_path / "long.py"
    long.write_text("def f():\n" + "    x = 1\n" * 60 + "\n\ndef g():\n" + "    x = 1\n" * 59)
    assert long_functions(long) == ["f (61 lines)"]
