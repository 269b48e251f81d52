"""Trace metrics of the bundled `tiny` backbone next to the paper's: record -> analyze, end to end.

Prompts: four passages of the packaged held-out text (`assets/tiny/heldout.txt`, never trained
on): two Python standard-library modules and two Debian documents, each cut to --prompt-tokens
tokens. For each decoding mode (greedy, `record`'s default; sampled, T 0.8 / top-p 0.95 / seed 0)
it runs the real CLI as subprocesses:

    dsacache record --model tiny --prompt P1 ... --prompt P4 -n NEW --top-k K --out DIR/MODE
    dsacache analyze DIR/MODE --json

then writes docs/dsa-tiny-metrics.json (settings, prompts, both analyses, the paper's values,
the backbone's training log and distillation figures as shipped) and prints a markdown table of
our values next to the paper's (`dsacache.analysis.paper.PAPER`, docs/architecture.md).

    .venv/bin/python benchmarks/dsa_tiny_report.py [--prompt-tokens 1024 --new 512 --k 64]

Torch runs one thread per process by default (--threads): on a small model, intra-op threads only
add synchronisation, and on a shared 2-core machine they made decoding ~4x slower.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dsacache.analysis.paper import PAPER, PAPER_WINDOW
from dsacache.dsa.models import tiny_path

ROOT = Path(__file__).resolve().parent.parent
OUT_JSON = ROOT / "docs" / "dsa-tiny-metrics.json"

# (kind, source document, the text the passage starts with in heldout.txt)
PROMPTS = (
    ("python", "stdlib/csv.py", '"""\ncsv.py - read/write/investigate CSV files'),
    ("python", "stdlib/multiprocessing/connection.py", "#\n# A higher level module for using"),
    ("prose", "doc/git/RelNotes/2.0.0.txt", "Git v2.0 Release Notes"),
    ("prose", "doc/dpkg/README.bug-usertags.gz", "To make management of bugs against the dpkg"),
)
MODES = {
    "greedy": [],
    "sampled": ["--temperature", "0.8", "--top-p", "0.95", "--seed", "0"],
}
ROWS = (  # (metric key, label)
    ("new_lookup_fraction", "new-lookup fraction (mean)"),
    ("new_lookup_fraction_p95", "new-lookup fraction (P95)"),
    ("persistence_mean_steps", "persistence (mean steps)"),
    ("lookback_mean_steps", "lookback (mean steps)"),
    ("interlayer_overlap", "inter-layer overlap"),
    ("working_set_ratio", f"working-set ratio (W={PAPER_WINDOW})"),
    ("working_set_ratio_p95", f"working-set ratio P95 (W={PAPER_WINDOW})"),
    ("page_utilization", "page utilization (P=64)"),
)


def passages(prompt_tokens: int) -> list[dict]:
    """The four prompts: each passage from its anchor, cut to `prompt_tokens` tokens."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny_path() / "tokenizer.json"))
    text = (tiny_path() / "heldout.txt").read_text(encoding="utf-8")
    out = []
    for kind, source, anchor in PROMPTS:
        start = text.find(anchor)
        if start < 0:
            sys.exit(f"anchor of {source} not found in heldout.txt: {anchor!r}")
        ids = tok.encode(text[start : start + 8 * prompt_tokens]).ids[:prompt_tokens]
        out.append({"kind": kind, "source": source, "text": tok.decode(ids)})
    return out


def run(cmd: list[str], env: dict[str, str]) -> str:
    """Run a dsacache command; its progress bar goes to our stderr, its stdout is returned."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd[:4])} ... failed with exit code {proc.returncode}")
    print(f"  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return proc.stdout


def shown(cmd: list[str], prompts: list[dict], base: Path) -> str:
    """The command line, prompt texts (long) as <source>, the trace directory as DIR."""
    texts = {p["text"]: f"<{p['source']}>" for p in prompts}
    return " ".join(texts.get(a, a) for a in cmd[3:]).replace(str(base), "DIR")


def markdown(runs: dict[str, dict]) -> str:
    head = "| metric | paper (H200 traces) | " + " | ".join(f"tiny, {m}" for m in runs)
    lines = [head + " |", "| --- " * (2 + len(runs)) + "|"]
    for key, label in ROWS:
        ours = " | ".join(f"{runs[m]['analyze'][key]:.2f}" for m in runs)
        lines.append(f"| {label} | {PAPER[key]:.2f} | {ours} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt-tokens", type=int, default=1024)
    ap.add_argument("--new", type=int, default=512, help="new tokens per prompt")
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--modes", default=",".join(MODES), help="comma list of " + "/".join(MODES))
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--out-json", type=Path, default=OUT_JSON)
    ap.add_argument("--keep", type=Path, default=None, help="keep the traces in this directory")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        sys.exit(f"--modes: expected a comma list of {'/'.join(MODES)}, got {args.modes!r}")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    prompts = passages(args.prompt_tokens)
    cli = [sys.executable, "-m", "dsacache"]
    tmp = tempfile.TemporaryDirectory(prefix="dsa-tiny-")
    base = args.keep or Path(tmp.name)
    base.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict] = {}
    for mode in modes:
        trace = base / mode
        rec = [*cli, "record", "--model", "tiny"]
        for p in prompts:
            rec += ["--prompt", p["text"]]
        rec += ["-n", str(args.new), "--top-k", str(args.k), *MODES[mode], "--out", str(trace)]
        print(f"[{mode}] dsacache {shown(rec, prompts, base)}", file=sys.stderr)
        t0 = time.perf_counter()
        record_out = run(rec, env)
        record_s = time.perf_counter() - t0
        ana = [*cli, "analyze", str(trace), "--json"]
        print(f"[{mode}] dsacache {shown(ana, prompts, base)}", file=sys.stderr)
        result = json.loads(run(ana, env))
        meta = json.loads((trace / "zarr.json").read_text())["attributes"].get("meta", {})
        runs[mode] = {
            "record_command": shown(rec, prompts, base),
            "record_stdout": record_out.splitlines()[0].replace(str(base), "DIR"),
            "record_seconds": round(record_s, 1),
            "prompt_tokens": meta.get("prompt_tokens"),
            "generated_head": [g[:160] for g in meta.get("generated", [])],
            "analyze": {k: v for k, v in result.items() if k != "source"},
        }
    tmp.cleanup()
    ship = tiny_path()
    log = json.loads((ship / "training_log.json").read_text())
    recall = json.loads((ship / "indexer.recall.json").read_text())
    report = {
        "generated_by": "benchmarks/dsa_tiny_report.py "
        + f"--prompt-tokens {args.prompt_tokens} --new {args.new} --k {args.k} "
        + f"--modes {','.join(modes)} --threads {args.threads}",
        "settings": {
            "model": "tiny",
            "top_k": args.k,
            "prompt_tokens": args.prompt_tokens,
            "new_tokens": args.new,
            "window": PAPER_WINDOW,
            "page_tokens": 64,
            "modes": {m: MODES[m] for m in modes},
        },
        "prompts": [{"kind": p["kind"], "source": p["source"]} for p in prompts],
        "runs": runs,
        "paper": PAPER,
        "backbone_as_shipped": {  # copied from the asset files, not measured here
            "device": log.get("device_name"),
            "params": log.get("params"),
            "steps_run": log.get("steps_run"),
            "tokens_per_s": log.get("tokens_per_s"),
            "heldout": log.get("heldout"),
            "indexer_recall_at_32": {
                "before": recall["before"]["overall"],
                "after": recall["after"]["overall"],
            },
        },
    }
    args.out_json.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    print(f"wrote {args.out_json}", file=sys.stderr)
    first = runs[modes[0]]["analyze"]
    print(
        f"\n`tiny` backbone, {len(prompts)} held-out prompts of {args.prompt_tokens} tokens "
        f"(2 Python, 2 Debian prose), {args.new} new tokens each, k = {args.k}, "
        f"{first['layers']} layers, {first['accesses']} accesses per mode:\n"
    )
    print(markdown(runs))


if __name__ == "__main__":
    main()
