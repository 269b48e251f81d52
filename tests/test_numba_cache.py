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


def test_old_caches_are_pruned(tmp_path: Path) -> None:
    import os
    import time

    from dsacache._numba_cache import _prune

    for i in range(5):
        d = tmp_path / f"v{i}"
        d.mkdir()
        os.utime(d, (time.time() - 100 + i, time.time() - 100 + i))
    _prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v3", "v4"]
