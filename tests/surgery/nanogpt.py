"""A hand-written nanoGPT-style model: plain PyTorch, no config, blocks in an `nn.ModuleList`.

It follows the contract of src/leantrain/models/README.md for blocks leantrain converts without
a registered family: the block takes the hidden states [B, S, D] first and returns hidden states
of the same shape (here a tensor), adds its work to a residual stream, and needs nothing else
that is sized by the sequence (causal attention comes from `is_causal`, positions are added to
the embeddings before the first block).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["NanoGPT"]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention through SDPA's `is_causal` (no mask tensor)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, seq, dim = x.shape
        q, k, v = self.qkv(x).split(dim, dim=2)  # [B, S, D] each
        q, k, v = (t.view(batch, seq, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, S, D/H]
        return self.proj(y.transpose(1, 2).reshape(batch, seq, dim))


class Block(nn.Module):
    """Pre-LN block: x + attn(ln(x)), then + mlp(ln(x))."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    """Token + position embeddings, `transformer.h` blocks, final norm, tied LM head."""

    def __init__(
        self,
        vocab_size: int = 97,
        block_size: int = 64,
        dim: int = 32,
        heads: int = 4,
        layers: int = 3,
    ) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(vocab_size, dim),
                "wpe": nn.Embedding(block_size, dim),
                "h": nn.ModuleList(Block(dim, heads) for _ in range(layers)),
                "ln_f": nn.LayerNorm(dim),
            }
        )
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        self.lm_head.weight = self.transformer["wte"].weight

    def forward(
        self, input_ids: Tensor, labels: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """(logits [B, S, V], next-token loss or None)."""
        t = self.transformer
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = t["wte"](input_ids) + t["wpe"](pos)  # [B, S, D]
        for block in t["h"]:
            x = block(x)
        logits = self.lm_head(t["ln_f"](x))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())
        return logits, loss
