"""Rotary position embedding frequencies, as a Hugging Face config's rope settings define them.

The indexer-model generator (synth_indexer.py) rotates its index keys and queries with these, so
the positional part of a score depends only on the offset Δ = query position − key position.
Supported scalings: none ("default"), "linear", "yarn" (DeepSeek-V3 / V3.2) and "llama3".
Only the frequencies are modelled: yarn's magnitude factor (mscale = 0.1·ln(factor) + 1) scales
the main attention's softmax, not the indexer, whose score scale is index_head_dim^-0.5
(DeepSeek-V3.2 inference code).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dsacache.errors import DsacacheError

SCALINGS = ("default", "linear", "yarn", "llama3")


@dataclass(frozen=True)
class Rope:
    """RoPE on `dims` dimensions (dims/2 frequency pairs) with an optional context scaling.

    theta: base; scaling: one of SCALINGS; factor: context extension factor;
    original_max_position: the pre-extension context (yarn, llama3);
    beta_fast / beta_slow: yarn's ramp, in rotations over the original context;
    low_freq_factor / high_freq_factor: llama3's wavelength band.
    """

    dims: int = 64
    theta: float = 10000.0
    scaling: str = "default"
    factor: float = 1.0
    original_max_position: int = 4096
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0

    def __post_init__(self) -> None:
        if self.dims < 0 or self.dims % 2:
            raise DsacacheError(f"rope: dims must be even and >= 0, got {self.dims}")
        if self.scaling not in SCALINGS:
            raise DsacacheError(
                f"rope: unsupported scaling {self.scaling!r} (supported: {', '.join(SCALINGS)})"
            )
        if not (self.theta > 1 and self.factor > 0 and self.original_max_position > 0):
            raise DsacacheError("rope: theta must be > 1, factor and original context > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def inv_freq(self) -> np.ndarray:
        """Angular frequency (radians per position) of each of the dims/2 pairs, float64."""
        half = self.dims // 2
        base = self.theta ** (-np.arange(half, dtype=np.float64) * 2.0 / max(self.dims, 1))
        if self.scaling == "default" or self.factor == 1.0:
            return base
        if self.scaling == "linear":
            return base / self.factor
        if self.scaling == "yarn":
            # Pairs that turn more than beta_fast times over the original context keep their
            # frequency, pairs that turn fewer than beta_slow times are divided by the factor,
            # and a linear ramp over the pair index blends the two in between. The bounds are
            # clamped to [0, dims - 1], not to the last pair, as DeepSeek-V3's reference code
            # and transformers' yarn parameters clamp them (find_correction_range).
            lo = math.floor(self._yarn_pair(self.beta_fast))
            hi = math.ceil(self._yarn_pair(self.beta_slow))
            lo, hi = max(lo, 0), min(hi, self.dims - 1)
            if hi == lo:
                hi = lo + 0.001
            ramp = np.clip((np.arange(half) - lo) / (hi - lo), 0.0, 1.0)  # 1 = interpolate
            return base / self.factor * ramp + base * (1.0 - ramp)
        # llama3: wavelengths beyond original/low_freq_factor are divided by the factor, those
        # below original/high_freq_factor kept, a smooth blend in between.
        wavelen = 2 * math.pi / base
        low_wl = self.original_max_position / self.low_freq_factor
        high_wl = self.original_max_position / self.high_freq_factor
        smooth = (self.original_max_position / wavelen - self.low_freq_factor) / (
            self.high_freq_factor - self.low_freq_factor
        )
        blended = (1 - smooth) * base / self.factor + smooth * base
        out = np.where(wavelen > low_wl, base / self.factor, base)
        mid = (wavelen >= high_wl) & (wavelen <= low_wl)
        return np.where(mid, blended, out)

    def _yarn_pair(self, rotations: float) -> float:
        """The (fractional) pair index whose wavelength fits `rotations` times in the original
        context."""
        return (
            self.dims
            * math.log(self.original_max_position / (rotations * 2 * math.pi))
            / (2 * math.log(self.theta))
        )

    def tables(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """cos and sin [..., dims / 2] of every position's angles, float32 (for rotate)."""
        ang = np.asarray(positions, dtype=np.float64)[..., None] * self.inv_freq()
        return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)

    def rotate(
        self,
        x: np.ndarray,
        positions: np.ndarray,
        tables: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """x [..., dims] rotated by positions (broadcast against x's leading axes), float32;
        tables: `tables(positions)` when the caller rotates many inputs at the same positions.

        Pairs are (2i, 2i+1). DeepSeek-V3.2's indexer rotates the half-split layout (i,
        i + dims/2) instead: a fixed relabelling of the dims, applied to queries and keys alike,
        so q·k is the same for relabelled inputs (the generator's rope dims are exchangeable).
        """
        cos, sin = self.tables(positions) if tables is None else tables
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty(np.broadcast_shapes(x.shape, cos.shape[:-1] + x.shape[-1:]), np.float32)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out


def rope_from_hf_config(config: dict[str, Any], dims: int | None = None) -> Rope:
    """The indexer's rope from a Hugging Face config.json dict.

    Reads rope_theta (top level or in rope_parameters), rope_scaling / rope_parameters (type or
    rope_type, factor, original_max_position_embeddings, beta_fast, beta_slow, low/high freq
    factors) and qk_rope_head_dim (the rotated dims; `dims` overrides it).
    """
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    if not isinstance(params, dict) or not isinstance(scaling, dict):
        raise DsacacheError("hf config: rope_parameters / rope_scaling must be objects")
    merged = {**params, **scaling}
    theta = config.get("rope_theta", merged.get("rope_theta", 10000.0))
    kind = str(merged.get("rope_type", merged.get("type", "default")) or "default")
    if dims is None:
        dims = int(config.get("qk_rope_head_dim", 64))
    try:
        return Rope(
            dims=int(dims),
            theta=float(theta),
            scaling=kind,
            factor=float(merged.get("factor", 1.0)),
            original_max_position=int(
                merged.get(
                    "original_max_position_embeddings",
                    config.get("max_position_embeddings", 4096),
                )
            ),
            beta_fast=float(merged.get("beta_fast", 32.0)),
            beta_slow=float(merged.get("beta_slow", 1.0)),
            low_freq_factor=float(merged.get("low_freq_factor", 1.0)),
            high_freq_factor=float(merged.get("high_freq_factor", 4.0)),
        )
    except (TypeError, ValueError) as e:
        raise DsacacheError(f"hf config: bad rope settings ({e})") from None
