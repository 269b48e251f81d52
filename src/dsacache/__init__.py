"""dsacache: access patterns and LLC reservation for dynamic sparse attention decode."""

__version__ = "0.1.0"
