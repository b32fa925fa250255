"""The README and docs/ point at things that exist: every relative link reaches a file (and, with a
`#fragment`, a heading of it), and every `coconut/...py` module path they name is a file of the package."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target); the text may span lines
MODULE_PATH = re.compile(r"(?<![\w./-])coconut/[\w/]+\.py\b")
# Inside the package the drawings name modules by layer: `data/collate.py` is coconut/data/collate.py.
LAYER_PATH = re.compile(r"(?<![\w./-])(?:core|data|eval|training|cli)/\w+\.py\b")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of `page`: lowercase, punctuation dropped, spaces -> '-'."""
    text = FENCE.sub("", page.read_text())
    headings = re.findall(r"^#+\s+(.*)$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(page.read_text()) if not re.match(r"[a-z]+:", t)]


def test_the_pages_exist():
    names = {p.name for p in PAGES}
    assert {"README.md", "architecture.md", "benchmarks.md", "legibility.md", "results.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_reach_a_file_and_heading(page):
    broken = []
    for target in relative_links(page):
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{target}: no heading #{fragment} in {file.name}")
    assert not broken, f"{page.name} has broken links: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_module_paths_exist(page):
    text = page.read_text()
    named = set(MODULE_PATH.findall(text)) | {f"coconut/{p}" for p in LAYER_PATH.findall(text)}
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert not missing, f"{page.name} names modules that do not exist: {missing}"


def test_the_checks_catch_a_stale_page(tmp_path):
    """A link to a missing file, a missing heading and a module from before the layers are all seen."""
    (tmp_path / "other.md").write_text("# A heading\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-heading) [gone](missing.md) [no heading](other.md#nope)\n"
        "[web](https://example.org) see `coconut/model.py` and coconut/core/model.py, data/x.py\n"
    )
    assert relative_links(page) == ["other.md#a-heading", "missing.md", "other.md#nope"]
    assert anchors(tmp_path / "other.md") == {"a-heading"}
    assert set(MODULE_PATH.findall(page.read_text())) == {"coconut/model.py", "coconut/core/model.py"}
    assert LAYER_PATH.findall(page.read_text()) == ["data/x.py"]
    assert not (ROOT / "coconut/model.py").exists()
