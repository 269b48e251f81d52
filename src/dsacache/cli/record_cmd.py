"""`dsacache record`: decode prompts with DSA top-k sparse attention and record a trace."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dsacache.cli.app import app
from dsacache.cli.progress import progress_bar
from dsacache.errors import DsacacheError

_DTYPES = ("float32", "bfloat16", "float16")


def _prompts(prompt: list[str] | None, prompt_file: Path | None) -> list[str]:
    if prompt and prompt_file is not None:
        raise DsacacheError("give --prompt or --prompt-file, not both")
    if prompt_file is not None:
        try:
            lines = prompt_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DsacacheError(f"{prompt_file}: cannot read prompt file ({e})") from None
        out = [ln for ln in lines if ln.strip()]
        if not out:
            raise DsacacheError(f"{prompt_file}: no prompt in the file (one per line)")
        return out
    if not prompt:
        raise DsacacheError("give --prompt TEXT (repeatable) or --prompt-file FILE")
    return list(prompt)


def _declared_dtype_bytes(model_dir: Path) -> int | None:
    """Bytes per element of the checkpoint's own dtype (config.json), the KV dtype it serves in."""
    import torch

    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    name = cfg.get("dtype") or cfg.get("torch_dtype")
    dt = getattr(torch, str(name), None) if name else None
    return dt.itemsize if isinstance(dt, torch.dtype) else None


def _load_indexer(indexer: Path | None, model_dir: Path, model, seed: int):  # noqa: ANN001, ANN202
    from dsacache.dsa.models import load_indexer

    ix, source = load_indexer(indexer, model_dir, model, seed)
    if source is None:
        print(
            f"dsacache: warning: no distilled indexer ({model_dir / 'indexer.safetensors'} not "
            f"found); using an untrained indexer (seed {seed}): selections are not meaningful",
            file=sys.stderr,
        )
    return ix, source


@app.command("record")
def record(
    out: Path = typer.Option(..., "--out", "-o", help="Trace store to write (a directory)."),
    model_name: str = typer.Option(
        "tiny", "--model", "-m", help="`tiny` (bundled) or a local Hugging Face checkpoint dir."
    ),
    prompt: list[str] = typer.Option(
        None, "--prompt", "-p", help="Prompt text; repeat for several requests."
    ),
    prompt_file: Path | None = typer.Option(
        None, "--prompt-file", help="File with one prompt per line (one request each)."
    ),
    max_new_tokens: int = typer.Option(96, "--max-new-tokens", "-n", help="Tokens to generate."),
    top_k: int = typer.Option(32, "--top-k", "-k", help="Keys each layer attends per token."),
    near_miss: int = typer.Option(
        0, "--near-miss", help="Also store the next M indices by indexer score (ranks k..k+M-1)."
    ),
    indexer: Path | None = typer.Option(
        None,
        "--indexer",
        help="Distilled indexer (safetensors). Default: indexer.safetensors in the model dir "
        "(packaged for `tiny`); none: an untrained seeded indexer, with a warning.",
    ),
    block_tokens: int = typer.Option(64, "--block-tokens", help="Tokens per KV page (geometry)."),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy (default)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass (with --temperature)."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (and untrained-indexer seed)."),
    dtype: str = typer.Option(
        "float32", "--dtype", help="Compute dtype: float32|bfloat16|float16."
    ),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda."),
    eval_: bool = typer.Option(
        False, "--eval", help="Also report top-k recall vs dense attention and perplexity delta."
    ),
    eval_file: Path | None = typer.Option(
        None, "--eval-file", help="Held-out text for --eval (default: the model's heldout.txt)."
    ),
    eval_tokens: int = typer.Option(1024, "--eval-tokens", help="Tokens of held-out text to use."),
) -> None:
    """Decode prompts with top-k sparse attention (DSA) and record every layer's selections.

    A lightning indexer scores the cached tokens at each layer and step; attention reads only
    the top-k (one set per token, shared by all heads). Step i records the forward that
    produced generated token i (step 0 = the prompt's last position); slots are in descending
    index-score order, -1 when the context is shorter than k. Several prompts give several
    requests. Geometry: KV bytes = KV heads x head dim x 2 x the checkpoint's dtype bytes;
    index bytes = the indexer's bf16 key size. --eval adds, on held-out text (teacher-forced),
    the indexer's top-k recall of dense attention's own top-k and the perplexity of sparse vs
    dense attention; the figures are printed and stored in the trace's meta.

    Example: dsacache record --model tiny -p "def main():" -n 96 --top-k 32 --out t
    """
    import torch

    from dsacache.dsa.decode import Sampling
    from dsacache.dsa.hooks import attach
    from dsacache.dsa.models import TINY, load_backbone, resolve_model_path
    from dsacache.dsa.record import encode, record
    from dsacache.trace.store import _check_destination

    prompts = _prompts(prompt, prompt_file)
    for name, value, low in (
        ("--max-new-tokens", max_new_tokens, 1),
        ("--top-k", top_k, 1),
        ("--near-miss", near_miss, 0),
        ("--block-tokens", block_tokens, 1),
        ("--eval-tokens", eval_tokens, 2),
    ):
        if value < low:
            raise DsacacheError(f"{name} must be >= {low}, got {value}")
    if dtype not in _DTYPES:
        raise DsacacheError(f"--dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    sampling = Sampling(temperature, top_p, seed)
    if eval_file is not None and not eval_file.is_file():
        raise DsacacheError(f"{eval_file}: eval file not found")
    if indexer is not None and not indexer.is_file():
        raise DsacacheError(f"{indexer}: indexer file not found")
    # Fail before decoding, not after: only a trace store (or nothing) may be replaced.
    _check_destination(out)
    try:
        dev = torch.device(device)
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as e:
        raise DsacacheError(f"--device {device!r}: {' '.join(str(e).split())}") from None

    model_dir = resolve_model_path(model_name)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bar on stderr, not transformers' loader bars
    hf_logging.set_verbosity_error()
    model, tokenizer = load_backbone(model_name, dtype=getattr(torch, dtype))
    model.to(dev)
    ix, ix_source = _load_indexer(indexer, model_dir, model, seed)
    ix.to(dev)
    att = attach(model, ix, top_k)
    meta = {
        "model": model_name if model_name == TINY else str(model_dir.resolve()),
        "indexer_file": ix_source,
        "indexer_trained": ix_source is not None,
        "device": str(dev),
    }
    total = len(prompts) * max_new_tokens
    try:
        with progress_bar("record", total) as advance:
            rec = record(
                model, tokenizer, att, prompts, max_new_tokens, top_k, near_miss=near_miss,
                sampling=sampling, block_tokens=block_tokens, meta=meta, progress=advance,
                kv_dtype_bytes=_declared_dtype_bytes(model_dir),
            )  # fmt: skip
        result = None
        if eval_:
            from dsacache.dsa.evaluate import evaluate

            text_path = eval_file or model_dir / "heldout.txt"
            if not text_path.is_file():
                raise DsacacheError(f"{text_path}: no held-out text for --eval (use --eval-file)")
            text = text_path.read_text(encoding="utf-8", errors="replace")
            ids = encode(tokenizer, text[: 32 * eval_tokens])  # a prefix is plenty of tokens
            x = torch.tensor([ids[:eval_tokens]], dtype=torch.long, device=dev)
            with progress_bar("eval", 1) as advance:
                result = evaluate(model, att, x, top_k)
                advance(1)
            rec.trace.meta["eval"] = {**result.to_dict(), "file": str(text_path)}
    finally:
        att.detach()
    rec.trace.save(out)
    _report(out, rec, result)


def _report(out: Path, rec, result) -> None:  # noqa: ANN001
    t = rec.trace
    g = t.geometry
    ctx = [int(r.context_lens[0]) for r in t.requests] + [int(r.max_context) for r in t.requests]
    typer.echo(
        f"wrote {out}: {len(t.requests)} request(s) x {t.steps} steps x {g.layers} layers x "
        f"k={g.top_k}, context {min(ctx)}..{max(ctx)}, {g.kv_bytes_per_token} B KV + "
        f"{g.index_bytes_per_token} B index key per token per layer"
    )
    for i, text in enumerate(rec.texts):
        snippet = " ".join(text.split())
        typer.echo(f"  request {i}: ...{snippet[:100]}")
    if result is None:
        return
    table = Table("eval (held-out, teacher-forced)", "value")
    table.add_row("tokens", str(result.tokens))
    table.add_row(f"top-{result.top_k} recall vs dense top-{result.top_k}", f"{result.recall:.3f}")
    table.add_row("  per layer", " ".join(f"{r:.2f}" for r in result.recall_per_layer))
    table.add_row("perplexity dense", f"{result.ppl_dense:.3f}")
    table.add_row(f"perplexity sparse (k={result.top_k})", f"{result.ppl_sparse:.3f}")
    table.add_row("perplexity delta", f"{result.ppl_delta:+.3f}")
    Console().print(table)
