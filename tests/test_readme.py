"""README.md stays a front door: short, examples first, and a file map that matches the tree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PACKAGE_ROOTS = ("market_pipeline", "market_api", "market_core", "tools")
MAP_HEADING = "## Where things live"
MAX_LINES = 250
CURL_WITHIN = 80
MIN_CURLS = 5
DOCS_LINK = re.compile(r"\]\((docs/[^)#\s]+\.md)(?:#[^)\s]*)?\)")


def file_map(text: str) -> list[str]:
    """The paths the map names: the first word of each line of the first code block after its
    heading."""
    after = text.split(MAP_HEADING, 1)
    if len(after) < 2:
        raise AssertionError(f"README.md has no {MAP_HEADING!r} section")
    block = re.search(r"^```[^\n]*\n(.*?)^```", after[1], re.S | re.M)
    if block is None:
        raise AssertionError(f"README.md's {MAP_HEADING!r} section has no code block")
    return [line.split()[0] for line in block.group(1).splitlines() if line.strip()]


def package_folders(root: Path) -> set[str]:
    """Every folder holding an ``__init__.py`` under the product's packages, as ``a/b/``."""
    return {
        init.parent.relative_to(root).as_posix() + "/"
        for top in PACKAGE_ROOTS
        for init in (root / top).rglob("__init__.py")
    }


@pytest.fixture(scope="module")
def text() -> str:
    return README.read_text(encoding="utf-8")


def test_every_package_folder_is_in_the_map(text: str) -> None:
    missing = sorted(package_folders(ROOT) - set(file_map(text)))
    assert not missing, f"package folders missing from README.md's file map: {missing}"


def test_every_path_in_the_map_exists(text: str) -> None:
    gone = [path for path in file_map(text) if not (ROOT / path).exists()]
    assert not gone, f"README.md's file map names paths that do not exist: {gone}"


def test_map_names_folders_with_a_trailing_slash(text: str) -> None:
    named = [p for p in file_map(text) if (ROOT / p).exists()]
    wrong = [p for p in named if (ROOT / p).is_dir() != p.endswith("/")]
    assert not wrong, f"folders end with '/', files do not: {wrong}"


def test_readme_is_short(text: str) -> None:
    lines = len(text.splitlines())
    assert lines <= MAX_LINES, f"README.md has {lines} lines; move the detail to docs/"


def test_curl_examples_come_first(text: str) -> None:
    head = text.splitlines()[:CURL_WITHIN]
    curls = [line for line in head if line.startswith("curl ")]
    assert len(curls) >= MIN_CURLS, f"{len(curls)} curl examples in the first {CURL_WITHIN} lines"


def test_docs_links_resolve(text: str) -> None:
    links = DOCS_LINK.findall(text)
    assert links, "README.md links into no docs/*.md"
    broken = sorted({link for link in links if not (ROOT / link).is_file()})
    assert not broken, f"README.md links to missing docs: {broken}"


def test_file_map_parser_sees_what_is_missing(tmp_path: Path) -> None:
    """The checks above can fail: a package the map leaves out, a path that is gone."""
    (tmp_path / "tools" / "extra").mkdir(parents=True)
    (tmp_path / "tools" / "__init__.py").touch()
    (tmp_path / "tools" / "extra" / "__init__.py").touch()
    text = f"# x\n\n{MAP_HEADING}\n\n```\ntools/   launchers\ngone/    nothing\n```\n"
    assert package_folders(tmp_path) - set(file_map(text)) == {"tools/extra/"}
    assert [p for p in file_map(text) if not (tmp_path / p).exists()] == ["gone/"]
