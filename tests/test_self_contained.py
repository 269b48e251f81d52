"""The repository stands alone: nothing it ships points at documents outside it."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Built by concatenation so this file does not match itself.
FORBIDDEN = ("../" + "shared", "DESIGN" + ".md")
TEXT = {".py", ".md", ".toml", ".txt", ".json", ".cfg", ".sh", ".html", ".yml", ".yaml", ".csv"}
SKIP_DIRS = {"__pycache__", ".pytest_cache"}
# The bundled model's files (weights, tokenizer, training text) and GPU measurement records are
# data, kept as they were produced.
SKIP_TREES = (ROOT / "src" / "dsacache" / "dsa" / "assets", ROOT / "benchmarks" / "gpu" / "results")


def _shipped_text_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml"]
    for top in ("src", "docs", "benchmarks", "tests"):
        for path in sorted((ROOT / top).rglob("*")):
            if not path.is_file() or path.suffix not in TEXT:
                continue
            parts = path.relative_to(ROOT).parts
            if SKIP_DIRS & set(parts) or any(part.endswith(".egg-info") for part in parts):
                continue  # caches and build metadata, not shipped text
            if any(path.is_relative_to(tree) for tree in SKIP_TREES):
                continue
            files.append(path)
    return files


def test_scan_covers_the_repository() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in _shipped_text_files()}
    # The scan must reach the places that once pointed outside (guards against a walk that
    # silently finds nothing).
    for must in ("README.md", "docs/architecture.md", "src/dsacache/sim/llc/hardware.py",
                 "docs/perf-model.md", "tests/test_metrics.py"):  # fmt: skip
        assert must in names


@pytest.mark.parametrize("needle", FORBIDDEN)
def test_nothing_refers_outside_the_repository(needle: str) -> None:
    hits = []
    for path in _shipped_text_files():
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if needle in line:
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_readme_links_the_architecture_doc() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "(docs/architecture.md)" in readme
    assert (ROOT / "docs" / "architecture.md").is_file()
