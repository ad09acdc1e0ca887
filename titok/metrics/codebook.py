"""How a VQ tokenizer uses its codebook: a histogram of emitted codes and the usage, entropy and dead codes of it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def code_histogram(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Counts (K,) int64 of the codes (any shape, int64 in [0, K)), on the codes' device."""
    return torch.bincount(codes.reshape(-1).long(), minlength=codebook_size)[:codebook_size]


@dataclass(frozen=True)
class CodebookStats:
    usage: float  # fraction of the K codes emitted at least once, in [0, 1]
    entropy: float  # entropy of the code histogram in bits, in [0, log2 K]
    dead: int  # codes never emitted

    def as_dict(self, prefix: str = "codebook_") -> dict[str, float]:
        return {f"{prefix}usage": self.usage, f"{prefix}entropy": self.entropy, f"{prefix}dead": float(self.dead)}


def codebook_stats(counts: torch.Tensor) -> CodebookStats:
    """Usage, entropy (bits) and dead codes of a histogram ``counts`` (K,); an empty histogram has entropy 0."""
    counts = counts.detach().double().cpu()
    used = int((counts > 0).sum())
    total = float(counts.sum())
    p = counts / total if total > 0 else counts
    entropy = float(-torch.special.xlogy(p, p).sum()) / math.log(2)
    return CodebookStats(used / len(counts), entropy, len(counts) - used)
