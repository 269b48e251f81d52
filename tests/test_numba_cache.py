"""The numba cache is keyed by the package source, so edits never run stale kernels."""

from __future__ import annotations

from pathlib import Path

import numba

import dsacache
from dsacache._numba_cache import source_hash


def test_cache_dir_follows_the_source(tmp_path: Path) -> None:
    assert numba.config.CACHE_DIR == str(dsacache.NUMBA_CACHE_DIR)
    assert dsacache.NUMBA_CACHE_DIR.name == source_hash(Path(dsacache.__file__).parent)
    (tmp_path / "a.py").write_text("x = 1\n")
    before = source_hash(tmp_path)
    (tmp_path / "a.py").write_text("x = 2\n")
    assert source_hash(tmp_path) != before
