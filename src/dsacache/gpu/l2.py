"""The persisting-L2 reservation through cuda-bindings' runtime API.

set-aside: cudaDeviceSetLimit(cudaLimitPersistingL2CacheSize, bytes) carves persisting lines
out of L2 (at most cudaDevAttrMaxPersistingL2CacheSize). window: an access-policy window on a
stream (cudaStreamSetAttribute, cudaStreamAttributeAccessPolicyWindow) marks [base, base +
num_bytes) persisting on hit with probability hitRatio; hitRatio = min(1, set_aside / num_bytes)
so the persisting part of the window fits the set-aside (the CUDA guide's advice; a larger
ratio thrashes the set-aside). Misses stream. Every call's return code is checked.

The argument arithmetic is plain Python (tested on CPU); each CUDA call is a small function.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsacache.errors import DsacacheError


@dataclass(frozen=True)
class WindowPlan:
    base_ptr: int
    num_bytes: int
    hit_ratio: float
    set_aside: int


def plan_window(
    base_ptr: int, buffer_bytes: int, set_aside: int, max_set_aside: int, max_window: int
) -> WindowPlan:
    """Clip the set-aside to the device maximum and the window to its maximum size; hitRatio
    so that num_bytes x hitRatio <= set_aside."""
    if buffer_bytes < 0 or set_aside < 0:
        raise DsacacheError(
            f"L2 window: negative size (buffer {buffer_bytes}, set-aside {set_aside})"
        )
    aside = min(set_aside, max(max_set_aside, 0))
    num = min(buffer_bytes, max(max_window, 0))
    ratio = 0.0 if num == 0 else min(1.0, aside / num)
    return WindowPlan(int(base_ptr), int(num), float(ratio), int(aside))


def _rt():  # noqa: ANN202 - the cuda.bindings.runtime module
    try:
        from cuda.bindings import runtime
    except ImportError as e:
        raise DsacacheError(
            f"cuda-bindings is not installed ({e}); pip install cuda-bindings"
        ) from None
    return runtime


def _check(result: tuple, what: str) -> tuple:
    """cuda-bindings returns (err, *values); raise on any error."""
    rt = _rt()
    err = result[0]
    if err != rt.cudaError_t.cudaSuccess:
        _, msg = rt.cudaGetErrorString(err)
        text = msg.decode() if isinstance(msg, bytes) else str(msg)
        raise DsacacheError(f"{what} failed: {err.name if hasattr(err, 'name') else err} ({text})")
    return result[1:]


def device_attr(name: str, device: int = 0) -> int:
    """A cudaDeviceAttr by its short name (e.g. 'MaxPersistingL2CacheSize', 'L2CacheSize')."""
    rt = _rt()
    attr = getattr(rt.cudaDeviceAttr, f"cudaDevAttr{name}")
    (val,) = _check(rt.cudaDeviceGetAttribute(attr, device), f"cudaDeviceGetAttribute({name})")
    return int(val)


def set_persisting_limit(nbytes: int) -> int:
    """Set the persisting set-aside; return what the device reports back."""
    rt = _rt()
    lim = rt.cudaLimit.cudaLimitPersistingL2CacheSize
    _check(rt.cudaDeviceSetLimit(lim, int(nbytes)), f"cudaDeviceSetLimit(persisting L2, {nbytes})")
    (got,) = _check(rt.cudaDeviceGetLimit(lim), "cudaDeviceGetLimit(persisting L2)")
    return int(got)


def set_window(stream_handle: int, plan: WindowPlan) -> None:
    """Access-policy window on the stream (num_bytes 0 removes it)."""
    rt = _rt()
    val = rt.cudaStreamAttrValue()
    win = val.accessPolicyWindow
    win.base_ptr = plan.base_ptr
    win.num_bytes = plan.num_bytes
    win.hitRatio = plan.hit_ratio
    win.hitProp = rt.cudaAccessProperty.cudaAccessPropertyPersisting
    win.missProp = rt.cudaAccessProperty.cudaAccessPropertyStreaming
    val.accessPolicyWindow = win
    attr = rt.cudaStreamAttrID.cudaLaunchAttributeAccessPolicyWindow
    stream = rt.cudaStream_t(int(stream_handle))
    _check(rt.cudaStreamSetAttribute(stream, attr, val), "cudaStreamSetAttribute(window)")


def reset_persisting() -> None:
    rt = _rt()
    _check(rt.cudaCtxResetPersistingL2Cache(), "cudaCtxResetPersistingL2Cache")


def reserve(stream_handle: int, plan: WindowPlan) -> int:
    """Set-aside + window; returns the set-aside the device reports."""
    got = set_persisting_limit(plan.set_aside)
    set_window(stream_handle, plan)
    return got


def release(stream_handle: int) -> None:
    """Window off, persisting lines back to normal, set-aside 0."""
    set_window(stream_handle, WindowPlan(0, 0, 0.0, 0))
    reset_persisting()
    set_persisting_limit(0)
