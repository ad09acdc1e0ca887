"""Fréchet distance and Inception Score from streamed features, mergeable across processes.

Features and class probabilities are accumulated in float64 as running sums (count, sum, sum of outer products;
per-split sums of probabilities and of ``p log p``), so 50,000 samples never need to be held at once, partial
results from several processes merge exactly (``merge`` or ``all_reduce``), and the order of batches does not
matter. Covariances are unbiased (divided by ``n - 1``), as in pytorch-fid, torch-fidelity and the ADM evaluator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from titok.io import atomic_write, read_npz


def all_reduce_sum(tensors: list[torch.Tensor]) -> None:
    """Sum each tensor in place over all processes of the default group; nothing when not distributed."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2): means (D,), covariances (D, D), in float64.

    ``|mu1 - mu2|^2 + tr(s1) + tr(s2) - 2 tr((s1 s2)^1/2)``, where ``tr((s1 s2)^1/2)`` is the sum of the square roots
    of the eigenvalues of the symmetric ``s1^1/2 s2 s1^1/2`` (the same eigenvalues as ``s1 s2``): exact for singular
    covariances too, with no offset added and no imaginary parts to discard.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    if mu1.shape != mu2.shape or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            f"Fréchet distance needs means (D,) and covariances (D, D) of one D; got {mu1.shape}, {s1.shape}, "
            f"{mu2.shape}, {s2.shape}"
        )
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(w.clip(min=0))) @ v.T
    middle = root1 @ s2 @ root1
    tr_covmean = np.sqrt(np.linalg.eigvalsh((middle + middle.T) / 2).clip(min=0)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


@dataclass
class Statistics:
    """Mean (D,) and covariance (D, D) of features, float64, with the facts needed to compare two of them.

    ``meta`` records at least ``extractor`` (name), ``extractor_sha256`` (its weights), ``resolution`` (pixels) and
    ``preprocessing``; statistics are only comparable when the extractors agree.
    """

    mu: np.ndarray
    sigma: np.ndarray
    count: int
    meta: dict[str, str] = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        """Write ``mu``, ``sigma``, ``count`` and ``meta`` (a JSON string) to an ``.npz``, atomically."""
        arrays = {
            "mu": self.mu,
            "sigma": self.sigma,
            "count": np.array(self.count),
            "meta": np.array(json.dumps(self.meta)),
        }

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        atomic_write(path, write)

    @classmethod
    def load(cls, path: str | Path) -> Statistics:
        """Read an ``.npz`` holding ``mu`` and ``sigma`` (titok's, pytorch-fid's or torch-fidelity's); the count and
        metadata are empty when the file has none."""
        data = read_npz(path)
        if "mu" not in data or "sigma" not in data:
            raise ValueError(f"{path} holds no 'mu' and 'sigma' (it has {sorted(data)})")
        try:
            meta = json.loads(str(data["meta"])) if "meta" in data else {}
            count = int(data["count"]) if "count" in data else 0
            mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
        except (TypeError, ValueError) as e:  # JSONDecodeError is a ValueError
            raise ValueError(f"cannot read statistics from {path}: {e}") from None
        if not isinstance(meta, dict):
            raise ValueError(f"cannot read statistics from {path}: 'meta' is not a JSON object")
        return cls(mu, sigma, count, meta)


class FeatureStats:
    """Streaming first and second moments of (B, D) features: count, sum (D,) and sum of outer products (D, D)."""

    def __init__(self, dim: int, device: torch.device | str = "cpu") -> None:
        self.dim = dim
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def update(self, features: torch.Tensor) -> None:
        """Add a batch of features (B, D)."""
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must have shape (B, {self.dim}), got {tuple(features.shape)}")
        x = features.to(self.sum.device, torch.float64)
        self.count += x.shape[0]
        self.sum += x.sum(0)
        self.outer += x.T @ x

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Add ``other``'s sums to these (the statistics of both sets together); returns self."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of {other.dim}-d features into {self.dim}-d ones")
        self.count += other.count.to(self.count.device)
        self.sum += other.sum.to(self.sum.device)
        self.outer += other.outer.to(self.outer.device)
        return self

    def all_reduce(self) -> FeatureStats:
        """Sum over all processes (torch.distributed, when initialised); every process then holds the total."""
        all_reduce_sum([self.count, self.sum, self.outer])
        return self

    def compute(self, meta: dict[str, str] | None = None) -> Statistics:
        """Mean (D,) and unbiased covariance (D, D) in float64; needs at least two samples."""
        n = int(self.count)
        if n < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {n}")
        mu = self.sum / n
        sigma = (self.outer - n * torch.outer(mu, mu)) / (n - 1)
        return Statistics(mu.cpu().numpy(), sigma.cpu().numpy(), n, dict(meta or {}))


class InceptionScore:
    """Inception Score over ``splits`` contiguous splits of the samples scored, in the order of their run-wide
    indices: the k-th of the N samples scored goes to split ``k * splits // N`` (the split torch-fidelity and the
    ADM evaluator use without shuffling). Indices may have gaps (unreadable inputs): the splits are sized by the
    samples actually scored, so a missing sample never changes the splits of the others.

    IS of a split = ``exp(mean_x KL(p(y|x) || p(y)))`` = ``exp(H(mean_x p) - mean_x H(p))``; the score is the
    mean over splits and the spread their standard deviation. Since N is known only at the end, each sample's
    class probabilities are kept until :meth:`compute` (float64 on the CPU: 8 bytes per class, ~400 MB for 50,000
    samples of Inception's 1008 classes).
    """

    def __init__(self, num_classes: int, splits: int = 10) -> None:
        self.num_classes, self.splits = num_classes, splits
        self.indices: list[torch.Tensor] = []
        self.probs: list[torch.Tensor] = []
        self._gathered = False

    def update(self, logits: torch.Tensor, indices: torch.Tensor) -> None:
        """Add class logits (B, C) of the samples with run-wide indices (B,)."""
        if logits.ndim != 2 or logits.shape[1] != self.num_classes or indices.shape != logits.shape[:1]:
            raise ValueError(
                f"expected logits (B, {self.num_classes}) and indices (B,), got {tuple(logits.shape)} and "
                f"{tuple(indices.shape)}"
            )
        self.probs.append(logits.detach().to("cpu", torch.float64).softmax(1))
        self.indices.append(indices.detach().to("cpu", torch.long))

    @property
    def count(self) -> int:
        return sum(len(i) for i in self.indices)

    def merge(self, other: InceptionScore) -> InceptionScore:
        """Add ``other``'s samples to these; returns self."""
        self.indices += other.indices
        self.probs += other.probs
        return self

    def all_reduce(self) -> InceptionScore:
        """Gather every process's samples (torch.distributed, when initialised); every process then holds them all."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list = [None] * dist.get_world_size()
            dist.all_gather_object(parts, (self._cat(self.indices, (0,)), self._cat(self.probs, (0, self.num_classes))))
            self.indices, self.probs = [p[0] for p in parts], [p[1] for p in parts]
        return self

    @staticmethod
    def _cat(tensors: list[torch.Tensor], empty: tuple[int, ...]) -> torch.Tensor:
        return torch.cat(tensors) if tensors else torch.zeros(empty)

    def compute(self) -> tuple[float, float]:
        """(mean, standard deviation) of the per-split scores; needs at least ``splits`` samples."""
        n = self.count
        if n < self.splits:
            raise ValueError(
                f"an Inception Score over {self.splits} splits needs {self.splits} samples or more, got {n}"
            )
        order = self._cat(self.indices, (0,)).argsort(stable=True)
        p = self._cat(self.probs, (0, self.num_classes)).to(torch.float64)[order]
        split = torch.arange(n) * self.splits // n
        count = torch.zeros(self.splits, dtype=torch.float64).index_add_(0, split, torch.ones(n, dtype=torch.float64))
        marginal = torch.zeros(self.splits, self.num_classes, dtype=torch.float64).index_add_(0, split, p)
        marginal /= count[:, None]
        plogp = torch.zeros(self.splits, dtype=torch.float64).index_add_(0, split, torch.special.xlogy(p, p).sum(1))
        entropy_of_mean = -torch.special.xlogy(marginal, marginal).sum(1)
        # The KL divergence cannot be negative (H(mean p) >= mean H(p), entropy being concave): a value below 0 is
        # rounding, for near-identical predictions, and would make the score a hair below its minimum of 1.
        kl = (entropy_of_mean + plogp / count).clamp(min=0)
        scores = torch.exp(kl)
        return float(scores.mean()), float(scores.std(unbiased=False))
