"""The results store of a sweep folder: one committed parquet file per finished run, and
results.parquet consolidated from them.

Commit protocol (crash-safe at any instant, SIGKILL included): a run's row is written to
`rows/.<hash>.<pid>.tmp` and renamed to `rows/<hash>.parquet` (os.replace is atomic), so a row
file either exists whole or not at all. results.parquet is rebuilt the same way (temp file +
os.replace) from the row files of the current grid, in grid order: a row is never lost (its
file stays) and never duplicated (one file per hash).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dsacache.errors import DsacacheError

RESULTS = "results.parquet"
ROWS = "rows"

SCHEMA = pa.schema(
    [
        ("config_hash", pa.string()),
        ("simulation_hash", pa.string()),
        ("trace", pa.string()),
        ("trace_identity", pa.string()),
        ("config_json", pa.string()),
        ("policy", pa.string()),
        ("near_miss_source", pa.string()),
        ("capacity_mib", pa.float64()),
        ("capacity_tokens_requested", pa.int64()),
        ("partition", pa.string()),
        ("hardware", pa.string()),
        ("batch", pa.int64()),
        ("layers_per_gpu", pa.int64()),
        ("weights_bytes_per_layer", pa.int64()),
        ("layers", pa.int64()),
        ("top_k", pa.int64()),
        ("steps", pa.int64()),
        ("requests", pa.int64()),
        ("kv_bytes_per_token", pa.int64()),
        ("capacity_tokens", pa.int64()),
        ("effective_capacity_tokens", pa.int64()),
        ("effective_capacity_mib", pa.float64()),
        ("accesses", pa.int64()),
        ("hits", pa.int64()),
        ("misses", pa.int64()),
        ("hit_rate", pa.float64()),
        ("gather_hit_rate", pa.float64()),
        ("prefetches", pa.int64()),
        ("buffer_tokens", pa.int64()),
        ("buffer_policy", pa.string()),
        ("host_link", pa.string()),
        ("buffer_hits", pa.int64()),
        ("buffer_misses", pa.int64()),
        ("buffer_cold_misses", pa.int64()),
        ("buffer_hit_rate", pa.float64()),
        ("host_bytes", pa.int64()),
        ("host_bytes_per_step_mean", pa.float64()),
        ("host_bytes_per_step_p50", pa.float64()),
        ("host_bytes_per_step_p99", pa.float64()),
        ("host_bytes_per_step_max", pa.float64()),
        ("host_time_s", pa.float64()),
        ("step_time_s", pa.float64()),
        ("ideal_step_time_s", pa.float64()),
        ("slowdown", pa.float64()),
        ("tokens_per_s_per_user", pa.float64()),
        ("tokens_per_s_per_gpu", pa.float64()),
        ("engine_seconds", pa.float64()),
        ("trace_build_seconds", pa.float64()),
        ("run_seconds", pa.float64()),
    ]
)
TIMING_COLUMNS = [n for n in SCHEMA.names if "seconds" in n]
# the HBM level's columns: null in a run without buffer_tokens
BUFFER_COLUMNS = SCHEMA.names[
    SCHEMA.names.index("buffer_tokens") : SCHEMA.names.index("step_time_s")
]


def _atomic_write(table: pa.Table, path: Path) -> None:
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, path)


class ResultStore:
    """DIR/rows/<hash>.parquet (one committed row per finished run) and DIR/results.parquet."""

    def __init__(self, out: str | Path) -> None:
        self.dir = Path(out)
        self.rows_dir = self.dir / ROWS
        self.results = self.dir / RESULTS

    def open(self, resume: bool) -> None:
        """Create the folder; without resume, refuse one that already holds rows."""
        if self.dir.exists() and not self.dir.is_dir():
            raise DsacacheError(f"--out {str(self.dir)!r} is a file, not a folder")
        if not resume and (self.committed() or self.results.exists()):
            raise DsacacheError(
                f"--out {str(self.dir)!r} already holds sweep results: pass --resume to finish "
                "that sweep, or choose another folder"
            )
        try:
            self.rows_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DsacacheError(f"cannot create {str(self.rows_dir)!r}: {e.strerror}") from None
        for stale in self.rows_dir.glob(".*.tmp"):  # a killed writer's leftovers
            stale.unlink(missing_ok=True)

    def committed(self) -> set[str]:
        if not self.rows_dir.is_dir():
            return set()
        return {p.stem for p in self.rows_dir.glob("*.parquet")}

    def commit(self, row: dict[str, Any]) -> None:
        table = pa.Table.from_pylist([row], schema=SCHEMA)
        _atomic_write(table, self.rows_dir / f"{row['config_hash']}.parquet")

    def consolidate(self, order: list[str]) -> int:
        """Rebuild results.parquet from the committed rows of `order` (hashes, grid order);
        return the number of rows."""
        have = self.committed()
        tables = [pq.read_table(self.rows_dir / f"{h}.parquet") for h in order if h in have]
        table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
        _atomic_write(table.cast(SCHEMA), self.results)
        return table.num_rows
