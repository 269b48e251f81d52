"""The traces of the policy frontier (benchmarks/policy_frontier.py), built once into a cache dir.

Recorded (the bundled `tiny` backbone, greedy, 256 steps, prompts of 1024 tokens cut from
different passages of the packaged held-out text `assets/tiny/heldout.txt`, which the backbone
was never trained on), synthetic from the statistics generator (DeepSeek-V3.2 and Llama-3.1-70B
geometry, at the paper's statistics and at new-lookup 0.3 / 0.7) and from the indexer-model
generator (`-indexer` traces: DeepSeek-V3.2 at 64K and 128K context, Llama-3.1-70B-like
geometry with k = 256 at 64K and with k = 2048 at 128K, 20 layers: a reduced model whose layers
sample the 80; docs/indexer-model.md). Each trace is
built by the real CLI as a subprocess (`dsacache record` / `dsacache synth`) and kept in
DIR/<name>; an existing one is reused.

Split: the "tune" traces are the ones the policies' constants were chosen on; every other trace
is "eval" (reported, never tuned on).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dsacache.dsa.models import tiny_path

PROMPT_TOKENS = 1024
STEPS = 256


@dataclass(frozen=True)
class Spec:
    name: str
    split: str  # "tune" or "eval"
    args: tuple[str, ...]  # dsacache synth arguments, or () for a recording
    k: int = 0
    passages: tuple[float, ...] = ()  # where each prompt starts, as a fraction of heldout.txt


def ds(*extra: str) -> tuple[str, ...]:
    """DeepSeek-V3.2 geometry (61 layers, k=2048), 40 steps from a 32K context (statistics)."""
    return ("--generator", "stats", "--preset", "deepseek-v3.2", "--steps", "40", *extra)


def llama(*extra: str) -> tuple[str, ...]:
    """Llama-3.1-70B geometry as the paper's roofline (20 layers per GPU), k=256, 200 steps
    (statistics)."""
    return ("--generator", "stats", "--preset", "llama-3.1-70b", "--steps", "200", "--layers",
            "20", "--top-k", "256", *extra)  # fmt: skip


def ds_ix(context: int) -> tuple[str, ...]:
    """DeepSeek-V3.2 geometry, indexer model, 48 steps from a long context."""
    return ("--preset", "deepseek-v3.2", "--steps", "48", "--context", str(context))


def llama_ix(k: int, steps: int, context: int) -> tuple[str, ...]:
    """Llama-3.1-70B-like geometry (20 layers sampling the 80, DeepSeek-style indexer on Llama's
    rope), indexer model."""
    return ("--preset", "llama-3.1-70b", "--layers", "20", "--top-k", str(k), "--steps",
            str(steps), "--context", str(context))  # fmt: skip


SPECS = (
    Spec("tiny-k64-p10", "tune", (), 64, (0.10,)),
    Spec("tiny-k32-p25", "tune", (), 32, (0.25,)),
    Spec("tiny-k64-p40", "eval", (), 64, (0.40,)),
    Spec("tiny-k128-p55", "eval", (), 128, (0.55,)),
    Spec("tiny-k32-p70", "eval", (), 32, (0.70,)),
    Spec("tiny-k128-p85", "eval", (), 128, (0.85,)),
    Spec("tiny-k64-batch4", "eval", (), 64, (0.05, 0.33, 0.62, 0.92)),
    Spec("ds32-paper", "tune", ds()),
    Spec("ds32-nl0.3", "eval", ds("--new-lookup", "0.3")),
    Spec("ds32-nl0.7", "eval", ds("--new-lookup", "0.7")),
    Spec("llama70-paper", "tune", llama()),
    Spec("llama70-nl0.3", "eval", llama("--new-lookup", "0.3")),
    Spec("llama70-nl0.5", "eval", llama("--new-lookup", "0.5", "--requests", "2")),
    Spec("llama70-nl0.7", "eval", llama("--new-lookup", "0.7")),
    Spec("ds64-indexer", "eval", ds_ix(65536)),
    Spec("ds128-indexer", "eval", ds_ix(131072)),
    Spec("llama70-indexer", "eval", llama_ix(256, 200, 65536)),
    Spec("llama70-k2048-indexer", "eval", llama_ix(2048, 64, 131072)),
)


def passage(frac: float) -> str:
    """PROMPT_TOKENS tokens of heldout.txt from the first line start at or after `frac`."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny_path() / "tokenizer.json"))
    text = (tiny_path() / "heldout.txt").read_text(encoding="utf-8")
    start = text.find("\n", int(frac * len(text))) + 1
    ids = tok.encode(text[start : start + 8 * PROMPT_TOKENS]).ids[:PROMPT_TOKENS]
    if len(ids) < PROMPT_TOKENS:
        sys.exit(f"passage at {frac} has only {len(ids)} tokens")
    return tok.decode(ids)


def command(spec: Spec, out: Path) -> list[str]:
    cli = [sys.executable, "-m", "dsacache"]
    if spec.args:
        return [*cli, "synth", *spec.args, "--out", str(out)]
    cmd = [*cli, "record", "--model", "tiny", "-n", str(STEPS), "--top-k", str(spec.k)]
    for frac in spec.passages:
        cmd += ["--prompt", passage(frac)]
    return [*cmd, "--out", str(out)]


def shown(spec: Spec) -> str:
    """The command line as documentation (prompts named by where they start)."""
    if spec.args:
        return "dsacache synth " + " ".join(spec.args)
    ps = " ".join(f"--prompt <heldout.txt @{f:.2f}>" for f in spec.passages)
    return f"dsacache record --model tiny -n {STEPS} --top-k {spec.k} {ps}"


def build(cache: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Every trace of SPECS (or of `names`) in `cache`, recorded / generated if missing."""
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for spec in SPECS:
        if names is not None and spec.name not in names:
            continue
        path = cache / spec.name
        if not (path / "zarr.json").exists():
            t0 = time.perf_counter()
            tmp = cache / (spec.name + ".part")
            subprocess.run(["rm", "-rf", str(tmp)], check=True)
            # Recordings run torch on one thread; the indexer generator wants BLAS threads.
            env = {**os.environ} if spec.args else {**os.environ, "OMP_NUM_THREADS": "1"}
            subprocess.run(command(spec, tmp), env=env, check=True, stdout=subprocess.DEVNULL)
            tmp.rename(path)
            print(f"built {spec.name} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        out[spec.name] = path
    return out


if __name__ == "__main__":
    build(Path(sys.argv[1] if len(sys.argv) > 1 else "frontier-traces"))
