"""Rotary frequencies (default, linear, yarn, llama3), rotation, and reading a HF config."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsacache.errors import DsacacheError
from dsacache.trace.geometry import INDEXERS
from dsacache.trace.rope import Rope, rope_from_hf_config


def test_default_frequencies_are_theta_powers() -> None:
    f = Rope(8, 100.0).inv_freq()
    assert np.allclose(f, [1.0, 100**-0.25, 100**-0.5, 100**-0.75])


def test_linear_scaling_divides_every_frequency() -> None:
    assert np.allclose(Rope(8, 100.0, "linear", 4.0).inv_freq(), Rope(8, 100.0).inv_freq() / 4)


def test_yarn_of_deepseek_v32_by_hand() -> None:
    """dims 64, theta 1e4, factor 40 over 4096, beta 32 / 1: the pair that turns 32 times over
    4096 positions is 64·ln(4096 / (32·2π)) / (2·ln 1e4) = 10.47 (floor 10), the one that turns
    once 22.51 (ceil 23): pairs up to 10 keep their frequency, pairs from 23 on are divided by
    40, and in between the share divided grows linearly by 1/13 per pair."""
    rope = INDEXERS["deepseek-v3.2"].rope
    base = Rope(64, 10000.0).inv_freq()
    f = rope.inv_freq()
    assert np.allclose(f[:11], base[:11])
    assert np.allclose(f[23:], base[23:] / 40)
    for i in range(11, 23):
        ramp = (i - 10) / 13
        assert math.isclose(f[i], base[i] / 40 * ramp + base[i] * (1 - ramp), rel_tol=1e-12)


def test_yarn_ramp_bounds_clamp_at_dims_minus_one_by_hand() -> None:
    """dims 8, theta 100, factor 4 over 4096, beta 32 / 1: the low bound is
    floor(8·ln(4096 / (32·2π)) / (2·ln 100)) = floor(2.62) = 2, the high bound
    ceil(8·ln(4096 / 2π) / (2·ln 100)) = ceil(5.63) = 6, past the last pair (3) but within
    dims - 1 = 7, where DeepSeek-V3's and transformers' find_correction_range clamp it. So the
    ramp over pairs 0..3 is clip((i - 2) / 4) = 0, 0, 0, 1/4: only pair 3 is blended, a quarter
    divided by 4 (clamping at the last pair would divide it by 4 entirely)."""
    f = Rope(8, 100.0, "yarn", 4.0, original_max_position=4096).inv_freq()
    expected = [1.0, 100**-0.25, 100**-0.5, 100**-0.75 * (0.25 / 4 + 0.75)]
    assert np.allclose(f, expected, rtol=1e-12, atol=0)


def test_llama3_scaling_by_hand() -> None:
    """theta 5e5, factor 8 over 8192, low / high freq factor 1 / 4: wavelengths above 8192 are
    divided by 8, below 2048 kept, in between blended by (8192 / wavelength - 1) / 3."""
    rope = INDEXERS["llama-3.1-70b"].rope
    base = Rope(64, 500000.0).inv_freq()
    f = rope.inv_freq()
    wl = 2 * np.pi / base
    for i in range(32):
        if wl[i] < 2048:
            assert f[i] == base[i]
        elif wl[i] > 8192:
            assert math.isclose(f[i], base[i] / 8)
        else:
            s = (8192 / wl[i] - 1) / 3
            assert math.isclose(f[i], (1 - s) * base[i] / 8 + s * base[i])
    assert (wl < 2048).any() and (wl > 8192).any()


@settings(max_examples=30, deadline=None)
@given(a=st.integers(0, 200_000), b=st.integers(0, 200_000), shift=st.integers(-5000, 5000))
def test_rotated_dot_product_depends_only_on_the_offset(a: int, b: int, shift: int) -> None:
    rope = INDEXERS["deepseek-v3.2"].rope
    rng = np.random.default_rng(a ^ b)
    q, k = rng.standard_normal((2, 64)).astype(np.float32)
    s = max(shift, -min(a, b))  # both positions stay >= 0
    d1 = rope.rotate(q, np.array(a)) @ rope.rotate(k, np.array(b))
    d2 = rope.rotate(q, np.array(a + s)) @ rope.rotate(k, np.array(b + s))
    assert math.isclose(d1, d2, rel_tol=1e-3, abs_tol=2e-3)
    assert math.isclose(
        np.linalg.norm(rope.rotate(q, np.array(a))), np.linalg.norm(q), rel_tol=1e-5
    )


def test_hf_config_deepseek_v32_gives_the_preset() -> None:
    cfg = {
        "qk_rope_head_dim": 64,
        "rope_theta": 10000,
        "rope_scaling": {
            "type": "yarn",
            "factor": 40,
            "original_max_position_embeddings": 4096,
            "beta_fast": 32,
            "beta_slow": 1,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
        },  # fmt: skip
    }
    assert rope_from_hf_config(cfg) == INDEXERS["deepseek-v3.2"].rope


def test_hf_config_transformers_v5_rope_parameters() -> None:
    cfg = {"qk_rope_head_dim": 64, "rope_parameters": {"rope_theta": 1e6, "rope_type": "default"}}
    assert rope_from_hf_config(cfg) == INDEXERS["glm-5"].rope


def test_hf_config_unknown_scaling_is_an_error() -> None:
    with pytest.raises(DsacacheError, match="unsupported scaling 'longrope'"):
        rope_from_hf_config({"rope_scaling": {"rope_type": "longrope", "factor": 2}})
    with pytest.raises(DsacacheError, match="dims must be even"):
        Rope(7)
