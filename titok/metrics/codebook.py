"""How a VQ tokenizer uses its codebook: a histogram of emitted codes and the usage, entropy and dead codes of it.

:func:`code_histogram` and :func:`codebook_stats` serve the training loop (one batch at a time);
:class:`CodebookUsage` keeps a running histogram for evaluation, mergeable across processes.
"""

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


class CodebookUsage:
    """A running histogram (K,) of codes; mergeable across processes like the feature statistics."""

    def __init__(self, codebook_size: int, device: torch.device | str = "cpu") -> None:
        self.codebook_size = codebook_size
        self.counts = torch.zeros(codebook_size, dtype=torch.int64, device=device)

    def update(self, codes: torch.Tensor) -> None:
        """Add codes of any shape (int64 in [0, K))."""
        codes = codes.reshape(-1).to(self.counts.device, torch.int64)
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size}), got {int(codes.min())}..{int(codes.max())}")
        self.counts += code_histogram(codes, self.codebook_size)

    def merge(self, other: CodebookUsage) -> CodebookUsage:
        self.counts += other.counts.to(self.counts.device)
        return self

    def all_reduce(self) -> CodebookUsage:
        from titok.metrics.fid import all_reduce_sum

        all_reduce_sum([self.counts])
        return self

    def stats(self) -> CodebookStats:
        return codebook_stats(self.counts)

    def usage(self) -> float:
        """Fraction of the K codes used at least once, in [0, 1]."""
        return self.stats().usage

    def dead(self) -> int:
        """Codes never emitted."""
        return self.stats().dead

    def entropy(self) -> float:
        """Entropy of the code histogram in bits, in [0, log2 K]."""
        if int(self.counts.sum()) == 0:
            raise ValueError("codebook entropy of an empty histogram")
        return self.stats().entropy
