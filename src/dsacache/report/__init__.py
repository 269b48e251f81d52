"""report/: figures and a self-contained HTML report of a sweep folder."""

from dsacache.report.build import build_report
from dsacache.report.figures import new_lookup_matrix

__all__ = ["build_report", "new_lookup_matrix"]
