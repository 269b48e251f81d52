"""Run a sweep's runs as Ray tasks; the parent (the Ray driver) still commits every row.

`--executor ray` connects to `--address` (an existing cluster) or starts a private local Ray
with one CPU per worker. Each group of runs that share a simulation is one remote task with
`max_retries` so a task whose worker process dies is re-run (exceptions raised by the run
itself are not retried: they are bugs or bad input and surface as one-line errors). Rows come
back as tasks finish (ray.wait).

Ray is imported only here, and only when this executor is chosen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dsacache.errors import DsacacheError
from dsacache.sweep.config import Run

MAX_RETRIES = 3
# Test hook: "HASH:DIR" makes the task of run HASH kill its worker (os._exit) on its first
# attempt, noting the attempt in DIR/died-HASH; the retry then runs normally.
DIE_ONCE_ENV = "DSACACHE_SWEEP_TEST_DIE_ONCE"


def import_ray() -> Any:
    """The ray module, or a one-line error when it is not installed."""
    try:
        import ray
    except ImportError as e:
        raise DsacacheError(f"--executor ray needs the `ray` package ({e})") from None
    return ray


def _check_reachable(address: str) -> None:
    """Fail fast (one line) when a HOST:PORT address has nothing listening."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto", "ray://..." etc.: left to ray.init
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            pass
    except OSError as e:
        raise DsacacheError(f"--address {address!r}: no Ray head reachable ({e})") from None


def _connect(ray: Any, address: str | None, workers: int) -> None:
    opts: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address is not None:
        _check_reachable(address)
        opts["address"] = address
    else:
        opts.update(num_cpus=workers, include_dashboard=False)
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    try:
        ray.init(**opts)
    except Exception as e:  # ConnectionError, RuntimeError, ...: one line either way
        where = f"--address {address!r}" if address else "a local Ray"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DsacacheError(f"cannot start or reach {where}: {msg}") from None


def _run_task(runs: list[Run], die_once: str | None) -> list[dict[str, Any]]:
    if die_once:
        target, _, marker_dir = die_once.partition(":")
        marker = Path(marker_dir) / f"died-{target}"
        if any(r.config_hash == target for r in runs) and not marker.exists():
            marker.write_text("first attempt\n")
            os._exit(1)  # the worker process dies: Ray must retry the task
    from dsacache.sweep.runner import _execute_in_worker

    return _execute_in_worker(runs)


def ray_rows(
    groups: list[list[Run]], *, workers: int, address: str | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Yield the rows of each group of runs (one simulation, runner.group_runs) as its Ray task
    finishes (in completion order)."""
    ray = import_ray()
    _connect(ray, address, workers)
    pending: list[Any] = []
    try:
        task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(_run_task)
        die_once = os.environ.get(DIE_ONCE_ENV)
        # Workers of an existing cluster have their own cwd: resolve relative trace paths here.
        pending = [
            task.remote(
                [dataclasses.replace(r, base_dir=str(Path(r.base_dir).resolve())) for r in g],
                die_once,
            )
            for g in groups
        ]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    row = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    cause = getattr(e, "cause", None)
                    if isinstance(cause, DsacacheError):
                        raise DsacacheError(str(cause)) from None
                    raise
                except ray.exceptions.WorkerCrashedError:
                    raise DsacacheError(
                        f"a sweep run's Ray worker died {MAX_RETRIES + 1} times; giving up"
                    ) from None
                yield row
    finally:
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        ray.shutdown()
