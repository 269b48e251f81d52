"""dsacache: access patterns and LLC reservation for dynamic sparse attention decode."""

from pathlib import Path

from dsacache import _numba_cache

__version__ = "0.1.0"

NUMBA_CACHE_DIR = _numba_cache.configure(Path(__file__).parent)
