"""Recording overhead: DSA sparse decode with and without recording, same model, same run.

Model: the bundled `tiny` backbone (or --model DIR), fp32 on CPU by default, with its packaged
indexer (a seeded untrained one if none is packaged: the cost is the same). Both arms decode the
same prompt greedily for --new tokens with top-k --k through the same attached model; the
recording arm also fills a Recorder (indices + --near-miss ranks) and converts it to numpy as
`record` does. Arms alternate, --repeats pairs; the figure is the median of per-pair ratios.
Target (issue 3): recording costs <= 15 % (ratio <= 1.15).

    .venv/bin/python benchmarks/bench_record.py [--new 256 --k 32 --near-miss 8 --repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dsacache.dsa.decode import decode
from dsacache.dsa.hooks import attach, attention_modules
from dsacache.dsa.indexer import IndexerConfig, LightningIndexer
from dsacache.dsa.models import load_backbone, resolve_model_path
from dsacache.dsa.record import encode
from dsacache.dsa.sparse import Recorder

TARGET = 1.15
PROMPT = "def parse_args(argv):\n    parser = argparse.ArgumentParser(description="


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--new", type=int, default=256, help="new tokens per decode")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--near-miss", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch default)")
    args = ap.parse_args()
    if args.threads:  # one thread: a tiny model gains nothing from more, and timings steady
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    model, tok = load_backbone(args.model)
    model.to(dev)
    layers = len(attention_modules(model))
    ix_path = resolve_model_path(args.model) / "indexer.safetensors"
    if ix_path.is_file():
        ix = LightningIndexer.load(ix_path)
    else:
        ix = LightningIndexer(IndexerConfig(), model.config.hidden_size, layers, seed=0)
    att = attach(model, ix.to(dev), args.k)
    ids = torch.tensor([encode(tok, PROMPT)], device=dev)

    def plain() -> None:
        decode(model, ids, args.new, attached=att)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def recorded() -> None:
        rec = Recorder(args.new, layers, args.k, args.near_miss, device=dev)
        decode(model, ids, args.new, attached=att, recorder=rec)
        rec.indices.cpu().numpy(), rec.near.cpu().numpy(), rec.context_lens.numpy()

    plain(), recorded()  # warm-up: allocator, first-call paths
    times: dict[str, list[float]] = {"plain": [], "record": []}
    for i in range(args.repeats):
        order = (("plain", plain), ("record", recorded))
        for name, fn in order if i % 2 == 0 else order[::-1]:  # alternate: no order bias
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    p, r = statistics.median(times["plain"]), statistics.median(times["record"])
    # Adjacent runs share the machine's load at that moment: the median of pair ratios.
    ratio = statistics.median(b / a for a, b in zip(times["plain"], times["record"], strict=True))
    print(
        f"model={args.model} layers={layers} prompt={ids.shape[1]} tokens new={args.new} "
        f"k={args.k} near_miss={args.near_miss} device={dev} threads={torch.get_num_threads()}"
    )
    print(f"sparse decode, no recording: median {p:.3f} s ({args.new / p:.1f} tok/s)")
    print(f"sparse decode, recording:    median {r:.3f} s ({args.new / r:.1f} tok/s)")
    print(f"recording overhead ratio {ratio:.3f} (target <= {TARGET}): "
          f"{'PASS' if ratio <= TARGET else 'FAIL'}")  # fmt: skip


if __name__ == "__main__":
    main()
