"""Train the bundled backbone: a small Llama decoder, from scratch, on the corpus token ids.

    python -m dsacache.dsa.backbone.train --data DIR --out DIR --device cuda --max-minutes 3

DIR (--data) is what `python -m dsacache.dsa.backbone.corpus` wrote: train.npy / heldout.npy
(uint16 ids) and the tokenizer files. The output is a Hugging Face checkpoint directory
(config.json, model.safetensors in bf16, tokenizer files) plus training_log.json.

Robust by design: no network, no hub, no loggers. A wall-clock guard stops the loop cleanly;
the learning-rate schedule follows progress = max(step / steps, elapsed / budget), so the cosine
decay ends whichever limit is hit first. Any failure in the loop is printed and the weights that
exist are still saved with the log.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
EVAL_CONTEXTS = (1024, 2048)


def model_config(vocab_size: int, args: argparse.Namespace) -> object:
    """The Llama configuration of the backbone (GQA, tied embeddings, 4096 positions)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // args.head_dim,
        num_key_value_heads=args.kv_heads,
        head_dim=args.head_dim,
        max_position_embeddings=4096,
        rope_theta=args.rope_theta,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        attention_bias=False,
        mlp_bias=False,
    )


def lr_factor(progress: float, step: int, warmup: int, floor: float = 0.1) -> float:
    """Linear warm-up over `warmup` steps, then cosine from 1 down to `floor` as progress → 1."""
    if step < warmup:
        return (step + 1) / warmup
    p = min(max(progress, 0.0), 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * p))


def sample_batch(
    data: torch.Tensor, batch: int, seq: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch` random windows of seq+1 tokens from the stream: (inputs, next-token targets)."""
    starts = torch.randint(0, data.numel() - seq - 1, (batch,), generator=gen)
    idx = starts.to(data.device)[:, None] + torch.arange(seq + 1, device=data.device)[None, :]
    win = data[idx].long()
    return win[:, :-1], win[:, 1:]


@torch.no_grad()
def heldout_perplexity(
    model: torch.nn.Module, ids: torch.Tensor, ctx: int, batch: int, max_windows: int
) -> dict:
    """Perplexity over non-overlapping ctx-token windows of the held-out stream (all positions)."""
    n = min((ids.numel() - 1) // ctx, max_windows)
    if n < 1:
        return {"context": ctx, "windows": 0, "tokens": 0, "loss": None, "perplexity": None}
    total, count = 0.0, 0
    dev = next(model.parameters()).device
    use_bf16 = dev.type == "cuda"
    for i in range(0, n, batch):
        j = min(i + batch, n)
        idx = torch.arange(i * ctx, j * ctx + 1, device=ids.device)
        x = ids[idx[:-1]].view(j - i, ctx).long().to(dev)
        y = ids[idx[1:]].view(j - i, ctx).long().to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(input_ids=x).logits
        total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    loss = total / count
    return {
        "context": ctx,
        "windows": n,
        "tokens": count,
        "loss": loss,
        "perplexity": math.exp(loss),
    }


def save_checkpoint(model: torch.nn.Module, data_dir: Path, out: Path) -> None:
    """The model in bf16 safetensors plus the tokenizer files, as one HF checkpoint dir."""
    out.mkdir(parents=True, exist_ok=True)
    half = copy.deepcopy(model).to("cpu", torch.bfloat16)  # the fp32 master stays intact
    half.save_pretrained(str(out), safe_serialization=True)
    (out / "model.safetensors").chmod(0o644)
    for name in TOKENIZER_FILES:
        if (data_dir / name).exists():
            shutil.copy2(data_dir / name, out / name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults: the shipped backbone, sized for ~3 min on one H200)."""
    ap = argparse.ArgumentParser(description="Train the bundled Llama backbone from scratch.")
    ap.add_argument("--data", type=Path, required=True, help="corpus dir (train.npy, tokenizer)")
    ap.add_argument("--out", type=Path, required=True, help="output checkpoint dir")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--steps", type=int, default=4000, help="maximum optimizer steps")
    ap.add_argument("--batch", type=int, default=32, help="sequences per step")
    ap.add_argument("--seq", type=int, default=2048, help="training context (tokens)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-minutes", type=float, default=None, help="wall-clock guard (loop)")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    ap.add_argument("--warmup", type=int, default=100, help="warm-up steps")
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--save-every", type=int, default=1000, help="checkpoint every N steps (0 off)")
    ap.add_argument("--eval-windows", type=int, default=256, help="held-out windows per context")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--intermediate", type=int, default=768)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    return ap.parse_args(argv)


def train(args: argparse.Namespace) -> dict:
    """Run the training; always returns (and writes) the log, saving whatever weights exist."""
    from transformers import LlamaForCausalLM

    t_start = time.perf_counter()
    log: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "history": []}
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        log["device_name"] = torch.cuda.get_device_name(dev)
    log["torch"] = torch.__version__
    train_ids = torch.from_numpy(np.load(args.data / "train.npy").astype(np.int32)).to(dev)
    held_ids = torch.from_numpy(np.load(args.data / "heldout.npy").astype(np.int32)).to(dev)
    vocab = int(json.loads((args.data / "manifest.json").read_text())["vocab_size"])
    config = model_config(vocab, args)
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    log.update(params=n_params, train_tokens=train_ids.numel(), heldout_tokens=held_ids.numel())
    print(f"model: {n_params / 1e6:.2f} M parameters; train {train_ids.numel()} tokens", flush=True)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay}],
        lr=args.lr,
        betas=(0.9, 0.95),
        weight_decay=0.0,
        fused=dev.type == "cuda",
    )
    step_fn = torch.compile(model) if args.compile else model
    gen = torch.Generator().manual_seed(args.seed)
    budget = args.max_minutes * 60.0 if args.max_minutes else math.inf
    use_bf16 = dev.type == "cuda"
    step, tokens, stop, loss_val = 0, 0, "steps", float("nan")
    t0 = time.perf_counter()
    t_log, tok_log = t0, 0
    try:
        model.train()
        while step < args.steps:
            elapsed = time.perf_counter() - t0
            if elapsed >= budget:
                stop = "wall-clock"
                break
            f = lr_factor(max(step / args.steps, elapsed / budget), step, args.warmup)
            for g in opt.param_groups:
                g["lr"] = args.lr * f
            x, y = sample_batch(train_ids, args.batch, args.seq, gen)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = step_fn(input_ids=x).logits
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            tokens += x.numel()
            if step % args.log_every == 0 or step == 1 or step == args.steps:
                loss_val = loss.item()  # syncs the device: only at log points
                now = time.perf_counter()
                tps = (tokens - tok_log) / max(now - t_log, 1e-9)
                t_log, tok_log = now, tokens
                row = {"step": step, "loss": loss_val, "lr": args.lr * f, "tokens_per_s": tps}
                row["elapsed_s"] = now - t0
                log["history"].append(row)
                print(
                    f"step {step} loss {loss_val:.4f} lr {args.lr * f:.2e} "
                    f"tok/s {tps:,.0f} elapsed {now - t0:.0f}s",
                    flush=True,
                )
            if args.save_every and step % args.save_every == 0:
                save_checkpoint(model, args.data, args.out)
    except BaseException as exc:  # noqa: BLE001 - print, then save what exists
        stop = f"error: {type(exc).__name__}: {exc}"
        traceback.print_exc()
    train_s = time.perf_counter() - t0
    log.update(
        steps_run=step,
        tokens_seen=tokens,
        train_seconds=train_s,
        tokens_per_s=tokens / max(train_s, 1e-9),
        stop_reason=stop,
        final_logged_loss=loss_val,
        epochs=tokens / max(train_ids.numel(), 1),
    )
    try:
        save_checkpoint(model, args.data, args.out)
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        log["save_error"] = str(exc)
    try:
        model.eval()
        log["heldout"] = [
            heldout_perplexity(model, held_ids, c, max(1, args.batch // 2), args.eval_windows)
            for c in EVAL_CONTEXTS
        ]
        for r in log["heldout"]:
            print(f"held-out ctx {r['context']}: ppl {r['perplexity']}", flush=True)
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        log["eval_error"] = str(exc)
    log["total_seconds"] = time.perf_counter() - t_start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "training_log.json").write_text(json.dumps(log, indent=1))
    print(f"saved {args.out} ({step} steps, stop: {stop})", flush=True)
    return log


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m dsacache.dsa.backbone.train`."""
    log = train(parse_args(argv))
    return 0 if not str(log["stop_reason"]).startswith("error") else 1


if __name__ == "__main__":
    raise SystemExit(main())
