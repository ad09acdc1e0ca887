"""Transformer building blocks shared by the tokenizers and the generators (torch only).

Shapes: sequences are ``(B, L, D)``. Attention runs through ``F.scaled_dot_product_attention`` with one fused QKV
projection whose output features are ordered ``[q | k | v]``, each split into heads contiguously.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from titok.precision import cpu_has_amx


class Attention(nn.Module):
    """Multi-head self-attention over the whole sequence (no mask), scaled by ``1/sqrt(head_dim)``."""

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True, attn_dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_dropout = attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        # (B, L, 3D) -> (3, B, heads, L, head_dim)
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        p = self.attn_dropout if self.training else 0.0
        x = attention(q, k, v, p)  # (B, heads, L, head_dim)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """``F.scaled_dot_product_attention``; bf16 inputs on a CPU without AMX are computed in float32, where torch's
    CPU kernels are faster (bf16 attention measured 1.3-1.8x slower there in inference, 1.2-6x in training)."""
    if q.dtype == torch.bfloat16 and q.device.type == "cpu" and not CPU_BF16_ATTENTION:
        with torch.autocast("cpu", enabled=False):  # CPU autocast would cast the inputs back to bf16
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), dropout_p=dropout_p)
        return out.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)


CPU_BF16_ATTENTION = cpu_has_amx()  # read once: a constant under torch.compile


class MLP(nn.Module):
    """Linear -> exact (erf) GELU -> Linear, with optional dropout on the output."""

    def __init__(self, dim: int, hidden_dim: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, *, qkv_bias: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PostNormBlock(nn.Module):
    """BERT's post-norm block: ``norm1(x + drop(attn(x)))``, then ``norm2(x + mlp(x))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        eps: float = 1e-12,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.attn = Attention(dim, num_heads, attn_dropout=attn_dropout)
        self.drop = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, mlp_dim, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.attn(x)))
        return self.norm2(x + self.mlp(x))


def run_block(block: nn.Module, *args: torch.Tensor, checkpointing: bool = False) -> torch.Tensor:
    """``block(*args)``; with ``checkpointing`` (and gradients on), its activations are recomputed in backward."""
    if checkpointing and torch.is_grad_enabled():
        from torch.utils.checkpoint import checkpoint

        return checkpoint(block, *args, use_reentrant=False)
    return block(*args)


class BlockStack(nn.ModuleList):
    """Blocks applied in order (state_dict keys as a ModuleList's: ``0.``, ``1.``, ...). Setting
    ``grad_checkpointing`` trades compute for memory in training."""

    grad_checkpointing: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self:
            x = run_block(block, x, checkpointing=self.grad_checkpointing)
        return x
