"""analysis/: access-pattern metrics of a trace."""

from dsacache.analysis.metrics import AnalysisResult, analyze, check_params
from dsacache.analysis.paper import PAPER, PAPER_WINDOW

__all__ = ["PAPER", "PAPER_WINDOW", "AnalysisResult", "analyze", "check_params"]
