"""Key numba's on-disk cache by the package's source, so a stale kernel is never loaded.

numba's cache=True checks only the decorated function's own file: when a function it inlines
from another module changes, the old machine code keeps running. Pointing numba at a cache
directory named after a hash of every source file of the package makes any edit start a fresh
cache. Must run before any kernel module is imported (dsacache/__init__.py does it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numba


def source_hash(root: Path) -> str:
    h = hashlib.sha1()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def configure(root: Path) -> Path:
    """Set numba's cache directory for this source tree (NUMBA_CACHE_DIR, if set, wins)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache = base / "dsacache" / "numba" / source_hash(root)
    numba.config.CACHE_DIR = str(cache)
    _prune(cache.parent, keep=KEEP_CACHES)
    return cache


KEEP_CACHES = 8  # caches of other source versions (a few MB each) kept for switching back


def _prune(parent: Path, keep: int) -> None:
    """Drop all but the `keep` most recently used caches of older source versions."""
    try:
        dirs = sorted(parent.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    for old in dirs[keep:]:
        shutil.rmtree(old, ignore_errors=True)
