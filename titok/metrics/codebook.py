"""Codebook usage and entropy of a VQ tokenizer, from the histogram of the codes it emits."""

from __future__ import annotations

import math

import torch

from titok.metrics.fid import all_reduce_sum


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
        self.counts += torch.bincount(codes, minlength=self.codebook_size)

    def merge(self, other: CodebookUsage) -> CodebookUsage:
        self.counts += other.counts.to(self.counts.device)
        return self

    def all_reduce(self) -> CodebookUsage:
        all_reduce_sum([self.counts])
        return self

    def usage(self) -> float:
        """Fraction of the K codes used at least once, in [0, 1]."""
        return float((self.counts > 0).double().mean())

    def entropy(self) -> float:
        """Entropy of the code histogram in bits, in [0, log2 K]."""
        total = int(self.counts.sum())
        if total == 0:
            raise ValueError("codebook entropy of an empty histogram")
        p = self.counts.double() / total
        return float(-torch.special.xlogy(p, p).sum() / math.log(2))
