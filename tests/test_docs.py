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


# The README is a guide and docs/results.md opens with a summary: both stay short enough to read.
README_MAX_LINES = 160
SUMMARY_MAX_LINES = 40
# A commit hash: a 7-40 character hex word with at least one digit and one letter a-f. History
# belongs to git, not to the README, the docs or the config comments; a URL may name a commit.
COMMIT_HASH = re.compile(r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")
URL = re.compile(r"[a-z]+://\S+")
CONFIGS = sorted((ROOT / "coconut" / "conf").rglob("*.yaml"))


def summary_lines(text: str) -> list[str]:
    """The lines of a page before its second `## ` heading (headings inside code fences do not count)."""
    lines, seen, fenced = text.splitlines(), 0, False
    for i, line in enumerate(lines):
        fenced ^= line.startswith("```")
        if not fenced and line.startswith("## "):
            seen += 1
            if seen == 2:
                return lines[:i]
    return lines


def commit_hashes(text: str) -> list[str]:
    return COMMIT_HASH.findall(URL.sub("", text))


def test_the_readme_is_at_most_160_lines():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; move detail into docs/ (at most {README_MAX_LINES})"


def test_the_results_summary_is_at_most_40_lines():
    summary = summary_lines((ROOT / "docs" / "results.md").read_text())
    assert len(summary) <= SUMMARY_MAX_LINES, (
        f"docs/results.md's summary (before its second '## ' heading) has {len(summary)} lines, "
        f"at most {SUMMARY_MAX_LINES}"
    )


@pytest.mark.parametrize("page", PAGES + CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_commit_hashes(page):
    found = commit_hashes(page.read_text())
    assert not found, f"{page.relative_to(ROOT)} names commits {found}: history belongs to git"


def test_the_hash_check_sees_a_hash_and_spares_urls_and_words():
    text = "since 15c74b3, see https://github.com/o/r/tree/f0145b86; 1e-3 decade deadbeef 2500000 fe1a624."
    assert commit_hashes(text) == ["15c74b3", "fe1a624"]
    page = "## A\ntext\n```\n## not a heading\n```\n## B\nmore\n"
    assert summary_lines(page) == ["## A", "text", "```", "## not a heading", "```"]

