"""analysis/: access-pattern metrics of a trace, and what an online policy could learn."""

from dsacache.analysis.metrics import AnalysisResult, analyze, check_params
from dsacache.analysis.paper import PAPER, PAPER_WINDOW, PUBLIC_DSV32
from dsacache.analysis.predictability import PredictabilityResult

__all__ = [
    "PAPER",
    "PAPER_WINDOW",
    "PUBLIC_DSV32",
    "AnalysisResult",
    "PredictabilityResult",
    "analyze",
    "check_params",
]
