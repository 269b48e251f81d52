"""`dsacache distill`: train the lightning indexer from a frozen backbone's dense attention."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dsacache.cli.app import app
from dsacache.cli.progress import progress_bar
from dsacache.errors import DsacacheError


def _read_text(path: Path, option: str) -> str:
    if not path.is_file():
        raise DsacacheError(f"{option} {path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DsacacheError(f"{option} {path}: cannot read as UTF-8 text ({e})") from None
    if not text.strip():
        raise DsacacheError(f"{option} {path}: file is empty")
    return text


def _device(name: str | None):  # noqa: ANN202 - torch.device, imported lazily
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise DsacacheError(f"--device {name}: expected cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise DsacacheError("--device cuda: no CUDA device is available")
    return torch.device(name)


def _positive(option: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise DsacacheError(f"{option} must be >= 1, got {value}")


def _table(before: dict, after: dict, k: int) -> Table:
    table = Table(title=f"indexer recall@{k} vs dense attention's top-{k} (held-out)")
    for col in ("layer", "recall before", "recall after", "KL before", "KL after"):
        table.add_column(col, justify="right")
    cols = ("per_layer", "kl_per_layer")
    rows = zip(*(side[c] for c in cols for side in (before, after)), strict=True)
    for layer, (rb, ra, kb, ka) in enumerate(rows):
        table.add_row(str(layer), f"{rb:.3f}", f"{ra:.3f}", f"{kb:.4f}", f"{ka:.4f}")
    table.add_row(
        "all",
        f"{before['overall']:.3f}",
        f"{after['overall']:.3f}",
        f"{sum(before['kl_per_layer']):.4f}",
        f"{sum(after['kl_per_layer']):.4f}",
        style="bold",
    )
    return table


@app.command("distill")
def distill_command(
    model: str = typer.Option(
        "tiny", "--model", "-m", help="`tiny` (the bundled backbone) or a local HF checkpoint dir."
    ),
    text: Path | None = typer.Option(
        None, "--text", help="Training text (UTF-8). Default for `tiny`: its packaged sample."
    ),
    heldout: Path | None = typer.Option(
        None, "--heldout", help="Held-out text for recall. Default for `tiny`: its packaged one."
    ),
    steps: int = typer.Option(
        300, "--steps", help="Total optimizer steps (with --resume: train until this step)."
    ),
    seq: int | None = typer.Option(None, "--seq", help="Tokens per training window [512]."),
    batch: int | None = typer.Option(None, "--batch", help="Windows per step [4]."),
    lr: float | None = typer.Option(None, "--lr", help="Adam learning rate [1e-3]."),
    warmup: int | None = typer.Option(None, "--warmup", help="Linear warm-up steps [10]."),
    top_k: int = typer.Option(32, "--top-k", "-k", help="k of the recall@k report."),
    out: Path = typer.Option(
        Path("indexer.safetensors"), "--out", "-o", help="Indexer checkpoint (.safetensors)."
    ),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue from this checkpoint (its .train.safetensors beside it)."
    ),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda [cuda when available]."),
    seed: int | None = typer.Option(None, "--seed", help="Indexer init and batch order [0]."),
    checkpoint_every: int = typer.Option(
        100, "--checkpoint-every", help="Write a checkpoint every N steps (and at the end)."
    ),
    eval_windows: int = typer.Option(
        8, "--eval-windows", help="Held-out windows of --seq tokens for the recall report."
    ),
    index_heads: int | None = typer.Option(None, "--index-heads", help="Index heads H_I [4]."),
    index_dim: int | None = typer.Option(None, "--index-dim", help="Index dims d_I [32]."),
) -> None:
    """Distil the lightning indexer from the frozen backbone (DeepSeek-V3.2's dense warm-up).

    Per layer, the indexer learns KL(p || softmax(I)): p = the backbone's dense attention summed
    over heads and L1-normalised per query, I = the index scores, keys a query cannot see
    excluded from both; the loss sums the layers. Training windows of --seq tokens are drawn
    from --text. Before and after training it reports recall@k (how much of dense attention's
    own top-k the indexer's top-k finds) per layer on --heldout, printed as a table and written
    to OUT with the suffix .recall.json. Checkpoints (OUT and OUT's .train.safetensors) are
    written every --checkpoint-every steps; --resume continues one exactly.
    """
    import torch

    from dsacache.dsa import distill as D
    from dsacache.dsa.models import TINY, load_backbone, tiny_path

    for option, value in (
        ("--steps", steps),
        ("--top-k", top_k),
        ("--eval-windows", eval_windows),
        ("--seq", seq),
        ("--batch", batch),
        ("--index-heads", index_heads),
        ("--index-dim", index_dim),
    ):
        _positive(option, value)
    if checkpoint_every < 0:
        raise DsacacheError(f"--checkpoint-every must be >= 0, got {checkpoint_every}")
    if out.suffix != ".safetensors" or out.is_dir():
        raise DsacacheError(f"--out {out}: expected a FILE.safetensors path")
    if not out.parent.is_dir():
        raise DsacacheError(f"--out {out}: directory {out.parent} does not exist")
    if text is None:
        text = tiny_path() / "train.txt" if model == TINY else None
        if text is None or not text.is_file():
            raise DsacacheError(f"--text is required for --model {model}")
    if heldout is None:
        heldout = tiny_path() / "heldout.txt" if model == TINY else None
        if heldout is None:
            raise DsacacheError(f"--heldout is required for --model {model}")
    train_text, heldout_text = _read_text(text, "--text"), _read_text(heldout, "--heldout")
    dev = _device(device)

    # Settings: explicit options, else the checkpoint's (resume), else the defaults.
    base = D.read_state_meta(resume)["config"] if resume is not None else D.TrainConfig()
    icfg = base.indexer
    if index_heads is not None or index_dim is not None:
        dim = index_dim if index_dim is not None else icfg.dim
        icfg = replace(
            icfg,
            heads=index_heads if index_heads is not None else icfg.heads,
            dim=dim,
            rope_dims=min(icfg.rope_dims, dim - dim % 2),
        )
    cfg = D.TrainConfig(
        seq=seq if seq is not None else base.seq,
        batch=batch if batch is not None else base.batch,
        lr=lr if lr is not None else base.lr,
        warmup=warmup if warmup is not None else base.warmup,
        seed=seed if seed is not None else base.seed,
        clip=base.clip,
        indexer=icfg,
    )
    D.check_train_config(cfg)
    if top_k >= cfg.seq:
        raise DsacacheError(f"--top-k {top_k} must be smaller than --seq {cfg.seq}")

    backbone, tokenizer = load_backbone(model)
    D.prepare_backbone(backbone, dev)
    tokens = D.encode_text(tokenizer, train_text)
    if tokens.numel() < cfg.seq:
        raise DsacacheError(f"--text {text}: {tokens.numel()} tokens, fewer than --seq {cfg.seq}")
    windows = D.heldout_windows(D.encode_text(tokenizer, heldout_text), cfg.seq, eval_windows)
    sha = D.token_fingerprint(tokens)

    if resume is not None:
        state = D.load_checkpoint(resume, backbone, cfg, sha, dev)
        if steps <= state.step:
            raise DsacacheError(f"--steps {steps}: the checkpoint is already at step {state.step}")
    else:
        state = D.new_state(backbone, cfg, sha, dev)
    # "before" is always the untrained indexer (same seed -> the same initial weights).
    untrained = D.new_state(backbone, cfg, sha, dev).indexer

    def recall(indexer: torch.nn.Module, label: str) -> dict:
        with progress_bar(f"recall {label}", windows.shape[0]) as advance:
            return D.evaluate(
                backbone, indexer, windows, top_k, cfg.batch, dev, progress=advance
            ).to_dict()

    before = recall(untrained, "before")
    start = state.step
    with progress_bar("distill", steps - start) as advance:
        state = D.train(backbone, state, tokens, steps, dev, out, checkpoint_every, advance)
    after = recall(state.indexer, "after")

    report = {
        "model": model,
        "text": str(text),
        "heldout": str(heldout),
        "device": dev.type,
        "steps": state.step,
        "resumed_from_step": start if resume is not None else None,
        "train": cfg.to_dict(),
        "eval": {"windows": int(windows.shape[0]), "seq": cfg.seq},
        "top_k": top_k,
        "loss_first": state.losses[0] if state.losses else None,
        "loss_last_mean": _tail_mean(state.losses),
        "before": before,
        "after": after,
        "checkpoint": str(out),
    }
    report_path = out.with_name(out.stem + ".recall.json")
    tmp = report_path.with_name(report_path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, report_path)

    console = Console()
    console.print(_table(before, after, top_k))
    console.print(
        f"loss {report['loss_first']:.4f} -> {report['loss_last_mean']:.4f} "
        f"(mean of the last 10 steps); wrote {out} and {report_path}"
    )


def _tail_mean(losses: list[float], n: int = 10) -> float | None:
    tail = losses[-n:]
    return sum(tail) / len(tail) if tail else None
