"""Transformer building blocks shared by the tokenizers and the generators (torch only).

Shapes: sequences are ``(B, L, D)``. Attention runs through ``F.scaled_dot_product_attention`` with one fused QKV
projection whose output features are ordered ``[q | k | v]``, each split into heads contiguously.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from titok import precision


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

    def forward(self, x: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """``x`` (B, L, D) -> (B, L, D); with ``rows``, only those rows' outputs (B, R, D): every row is attended
        to, but queries (and the output projection) are computed for ``rows`` alone."""
        b, n, d = x.shape
        if rows is None or not isinstance(self.qkv.weight, torch.Tensor):  # (quantized layers: all rows, then slice)
            # (B, L, 3D) -> (3, B, heads, L, head_dim)
            q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q = q if rows is None else q[:, :, rows]
        else:
            weight, bias = self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, rows], weight[:d], None if bias is None else bias[:d])
            kv = F.linear(x, weight[d:], None if bias is None else bias[d:])
            q = q.view(b, -1, self.num_heads, self.head_dim).transpose(1, 2)
            k, v = kv.view(b, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        p = self.attn_dropout if self.training else 0.0
        x = attention(q, k, v, p)  # (B, heads, L or R, head_dim)
        return self.proj(x.transpose(1, 2).reshape(b, -1, d))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """``F.scaled_dot_product_attention``; bf16 inputs on a CPU whose bf16 attention kernel is slower than its
    float32 one (:func:`titok.precision.bf16_attention`, measured once per machine) are computed in float32."""
    if q.dtype == torch.bfloat16 and q.device.type == "cpu" and not _cpu_bf16_attention():
        with torch.autocast("cpu", enabled=False):  # CPU autocast would cast the inputs back to bf16
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), dropout_p=dropout_p)
        return out.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)


def _cpu_bf16_attention() -> bool:
    decided = precision.bf16_attention_decided()  # a module global: a guarded constant under torch.compile
    if decided is not None:
        return decided
    if torch.compiler.is_compiling():  # no measuring while tracing: float32 attention, the safe choice
        return False
    return precision.bf16_attention()


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

    def forward(self, x: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """``x`` (B, L, D) -> (B, L, D); with ``rows``, only those rows (B, R, D), computed as in the full block
        (a last block whose other rows are discarded need not compute them)."""
        x = x + self.attn(self.norm1(x)) if rows is None else x[:, rows] + self.attn(self.norm1(x), rows)
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


def run_block(block: nn.Module, *args: torch.Tensor, checkpointing: bool = False, **kwargs: object) -> torch.Tensor:
    """``block(*args, **kwargs)``; with ``checkpointing`` (and gradients on), its activations are recomputed in
    backward."""
    if checkpointing and torch.is_grad_enabled():
        from torch.utils.checkpoint import checkpoint

        return checkpoint(block, *args, use_reentrant=False, **kwargs)
    return block(*args, **kwargs)


class BlockStack(nn.ModuleList):
    """Blocks applied in order (state_dict keys as a ModuleList's: ``0.``, ``1.``, ...). Setting
    ``grad_checkpointing`` trades compute for memory in training."""

    grad_checkpointing: bool = False

    def forward(self, x: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """``x`` (B, L, D) through every block; with ``rows``, the output holds only those rows (B, R, D), and the
        last block computes no others."""
        for i, block in enumerate(self):
            last = rows if i == len(self) - 1 else None
            kwargs = {} if last is None else {"rows": last}
            x = run_block(block, x, checkpointing=self.grad_checkpointing, **kwargs)
        return x[:, rows] if rows is not None and not len(self) else x
