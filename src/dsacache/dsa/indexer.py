"""The lightning indexer of DeepSeek-V3.2, one small scorer per layer of any causal LM.

Index queries, per-head weights and index keys are small linear projections of the attention
module's own input (the hidden state after the layer's input norm): that input exists in every
family, carries what the layer attends with, and costs one tiny matmul per layer. Index keys
(`dim` dims, shared by all index heads) are cached per layer like KV; one key costs
`IndexerConfig.key_bytes()` bytes per token per layer (bf16).

Score: I(t, s) = sum_j w(t, j) * relu(q(t, j) . k(s)), w = ww(h_t) * heads**-0.5,
q = wq(h_t) * dim**-0.5 (per head), k = LayerNorm(wk(h_s)); rotary on the first `rope_dims`
dims of q and k so the scorer can see relative position.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from dsacache.errors import DsacacheError


@dataclass(frozen=True)
class IndexerConfig:
    """Shape of the indexer: `heads` index heads of `dim` dims, rotary on `rope_dims` of them."""

    heads: int = 4
    dim: int = 32
    rope_dims: int = 16
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        if self.heads < 1 or self.dim < 1:
            raise DsacacheError(
                f"indexer: heads and dim must be >= 1, got {self.heads}, {self.dim}"
            )
        if self.rope_dims < 0 or self.rope_dims > self.dim or self.rope_dims % 2:
            raise DsacacheError(
                f"indexer: rope_dims must be even and in 0..dim, got {self.rope_dims}"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> IndexerConfig:
        known = {"heads", "dim", "rope_dims", "rope_theta"}
        unknown = set(d) - known
        if unknown:
            raise DsacacheError(f"indexer config: unknown field(s) {sorted(unknown)}")
        return cls(
            heads=int(d.get("heads", 4)),
            dim=int(d.get("dim", 32)),
            rope_dims=int(d.get("rope_dims", 16)),
            rope_theta=float(d.get("rope_theta", 10000.0)),
        )

    def key_bytes(self) -> int:
        """Bytes of one cached index key per token per layer (bf16)."""
        return self.dim * 2


class _LayerIndexer(nn.Module):
    """The projections of one layer (DeepSeek-V3.2's lightning-indexer shape)."""

    def __init__(self, config: IndexerConfig, hidden_size: int) -> None:
        super().__init__()
        self.wq = nn.Linear(hidden_size, config.heads * config.dim, bias=False)
        self.wk = nn.Linear(hidden_size, config.dim, bias=False)
        self.wk_norm = nn.LayerNorm(config.dim)
        self.ww = nn.Linear(hidden_size, config.heads, bias=False)


class LightningIndexer(nn.Module):
    """One `_LayerIndexer` per layer: `keys` makes index keys, `scores` scores queries."""

    def __init__(
        self, config: IndexerConfig, hidden_size: int, num_layers: int, seed: int | None = None
    ) -> None:
        super().__init__()
        if hidden_size < 1 or num_layers < 1:
            raise DsacacheError(
                f"indexer: hidden_size and num_layers must be >= 1, got {hidden_size}, {num_layers}"
            )
        self.config = config
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        if seed is None:
            self.layers = nn.ModuleList(
                _LayerIndexer(config, hidden_size) for _ in range(num_layers)
            )
        else:
            # A private RNG stream: same seed, same indexer; the caller's RNG is untouched.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.layers = nn.ModuleList(
                    _LayerIndexer(config, hidden_size) for _ in range(num_layers)
                )
        half = config.rope_dims // 2
        inv_freq = 1.0 / (
            config.rope_theta
            ** (torch.arange(0, half, dtype=torch.float64) * 2 / max(1, config.rope_dims))
        )
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)

    def _rope(self, x: Tensor, positions: Tensor) -> Tensor:
        """Rotate the first rope_dims dims of x [B, T, (H,) D] by positions [B, T] or [T]."""
        r = self.config.rope_dims
        if r == 0:
            return x
        pos = positions.to(device=x.device, dtype=torch.float32)
        if pos.dim() == 1:
            pos = pos.unsqueeze(0)
        ang = pos.unsqueeze(-1) * self.inv_freq.to(x.device)  # [B, T, r/2]
        if x.dim() == 4:  # per-head queries: broadcast over heads
            ang = ang.unsqueeze(2)
        cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
        half = r // 2
        x1, x2, rest = x[..., :half], x[..., half:r], x[..., r:]
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest), dim=-1)

    def _check_layer(self, layer: int) -> _LayerIndexer:
        if not 0 <= layer < self.num_layers:
            raise DsacacheError(f"indexer: layer {layer} out of range 0..{self.num_layers - 1}")
        return self.layers[layer]

    def _input(self, hidden: Tensor) -> Tensor:
        w = self.layers[0].wq.weight
        return hidden.to(device=w.device, dtype=w.dtype)

    def keys(self, layer: int, hidden: Tensor, positions: Tensor) -> Tensor:
        """Index keys [B, T, dim] (rotary applied) of hidden [B, T, hidden] at `positions`."""
        m = self._check_layer(layer)
        k = m.wk_norm(m.wk(self._input(hidden)))
        return self._rope(k, positions)

    def scores(self, layer: int, hidden: Tensor, positions: Tensor, keys: Tensor) -> Tensor:
        """Index scores I [B, Tq, Tk] fp32 of query tokens against `keys`; no causal mask."""
        m = self._check_layer(layer)
        cfg = self.config
        h = self._input(hidden)
        b, tq, _ = h.shape
        q = m.wq(h).view(b, tq, cfg.heads, cfg.dim)
        q = self._rope(q, positions) * cfg.dim**-0.5
        w = m.ww(h).float() * cfg.heads**-0.5  # [B, Tq, H]
        logits = torch.einsum("bthd,bsd->bths", q.float(), keys.to(q.device).float()).relu_()
        return torch.einsum("bths,bth->bts", logits, w)

    def save(self, path: str | Path) -> None:
        """Write the weights as safetensors; config, hidden_size and num_layers in the metadata."""
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        meta = {
            "format": "dsacache-lightning-indexer",
            "config": json.dumps(self.config.to_dict()),
            "hidden_size": str(self.hidden_size),
            "num_layers": str(self.num_layers),
        }
        save_file(state, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> LightningIndexer:
        """Read an indexer written by `save`; a missing or foreign file raises DsacacheError."""
        from safetensors import safe_open

        p = Path(path)
        if not p.is_file():
            raise DsacacheError(f"{p}: indexer file not found")
        try:
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
            config = IndexerConfig.from_dict(json.loads(meta["config"]))
            hidden_size, num_layers = int(meta["hidden_size"]), int(meta["num_layers"])
        except DsacacheError:
            raise
        except Exception as e:  # corrupt file, missing metadata: one line naming the file
            raise DsacacheError(f"{p}: not a dsacache indexer ({type(e).__name__}: {e})") from None
        model = cls(config, hidden_size, num_layers)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise DsacacheError(f"{p}: indexer weights do not match its metadata: {e}") from None
        return model
