"""The paper's reference values (Levy 2026, arXiv 2603.13430, H200 traces).

docs/architecture.md "Access-pattern metrics" prints the same table (a test keeps them equal).
"""

from __future__ import annotations

# Keys match AnalysisResult.to_dict(). working_set_ratio is for W = 50 steps.
PAPER: dict[str, float] = {
    "new_lookup_fraction": 0.55,
    "new_lookup_fraction_p95": 0.90,
    "persistence_mean_steps": 1.82,
    "lookback_mean_steps": 3.29,
    "interlayer_overlap": 0.36,
    "working_set_ratio": 5.15,
    "working_set_ratio_p95": 7.2,
    "page_utilization": 0.35,  # Fig. 9
}

# The window the paper's working-set ratio was measured with.
PAPER_WINDOW = 50

# Real DeepSeek-V3.2 decode selections (NVIDIA TensorRT-LLM tech blog "Temporal Correlation
# Meets Sparse Attention", arXiv 2604.22312: SWE-bench, ~64 K context, top-2048): mean overlap
# of consecutive steps' top-k sets per layer range, and with the previous step's positions
# shifted by one. Ranges are (low, high) of the quoted span.
PUBLIC_DSV32: dict[str, tuple[float, float]] = {
    "consecutive_overlap layers 0-1": (0.01, 0.02),
    "consecutive_overlap layers 20-60": (0.35, 0.50),
    "shifted_overlap": (0.60, 0.60),  # "keeps ~60 %"
}
