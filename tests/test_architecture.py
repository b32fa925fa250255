"""The package's layers and the direction of their imports: core <- data <- eval/training <- cli.

A module may import coconut modules of its own layer and of the layers before it, never after.
Only `core` is held to "no Lightning, no Hydra": it is the library a researcher can lift out.
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
