"""Keeping a VQ codebook alive during training: the remedies for codebook collapse, as recipe options.

A learned codebook collapses when most codes are never the nearest neighbour of an encoder output: they receive no
gradient and stay dead, and the tokenizer works with a few dozen codes. The recipe's ``codebook`` section turns on
any of these (they act between optimizer steps, on the features of the step's batch gathered from every process, so
every process makes the same change and the weights stay in sync):

- ``kmeans_init``: before the first update the codebook becomes the k-means centres (k-means++ seeds, then
  ``kmeans_iters`` Lloyd iterations, spherical for l2-normalised codebooks) of the first batch's encoder outputs
  (vector-quantize-pytorch's ``kmeans_init``; SoundStream).
- ``clustering``: the reference's ``clustering_vq`` (CVQ-VAE, Zheng & Vedaldi 2023): a running usage estimate per
  code (``usage <- decay * usage + (1 - decay) * batch frequency``) and, for every code, the batch feature nearest to
  it; each code moves towards that feature by ``alpha = exp(-usage * K * 10 / (1 - decay) - 1e-3)``, so codes in use
  stay put and unused ones jump onto the data. The running usage starts at zero, as in the reference: the first
  update places every code on its nearest feature.
- ``restart_after``: a code not emitted for that many steps is replaced by a random feature of the batch (dead-code
  restart, as Jukebox and vector-quantize-pytorch's ``threshold_ema_dead_code``).

The state (running usage, steps since each code was used, the random generator) is checkpointed by the objective,
so a resumed run continues exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from titok.config import Config
from titok.quantizers import L2Normalize, QuantizerOutput, VectorQuantizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CodebookConfig(Config):
    """Codebook-collapse remedies of a VQ recipe (all off by default: the reference's stage-1 recipe uses none)."""

    clustering: bool = False
    clustering_decay: float = 0.99
    kmeans_init: bool = False
    kmeans_iters: int = 10
    restart_after: int = 0  # steps without use before a code is restarted; 0: off

    def __post_init__(self) -> None:
        if not 0.0 < self.clustering_decay < 1.0:
            raise ValueError(f"codebook.clustering_decay must lie in (0, 1), got {self.clustering_decay}")
        if self.kmeans_iters < 1:
            raise ValueError(f"codebook.kmeans_iters must be at least 1, got {self.kmeans_iters}")
        if self.restart_after < 0:
            raise ValueError(f"codebook.restart_after must be >= 0 (0: off), got {self.restart_after}")

    @property
    def active(self) -> bool:
        return self.clustering or self.kmeans_init or self.restart_after > 0


def pairwise_distances(features: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (M, K) between features (M, D) and codes (K, D), in float32."""
    return features.pow(2).sum(-1, keepdim=True) + codebook.pow(2).sum(-1) - 2 * features @ codebook.T


def kmeans(
    features: torch.Tensor, k: int, iters: int, generator: torch.Generator, spherical: bool = False
) -> torch.Tensor:
    """``k`` centres (k, D) of ``features`` (M, D): k-means++ seeding, then Lloyd's algorithm. ``spherical``: features
    and centres on the unit sphere (cosine k-means). With fewer distinct features than ``k``, some centres repeat;
    an empty cluster keeps its previous centre."""
    x = F.normalize(features, dim=-1) if spherical else features
    centres = _kmeans_pp(x, k, generator)
    for _ in range(iters):
        assign = pairwise_distances(x, centres).argmin(-1)  # (M,)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).unsqueeze(-1).to(x.dtype)
        updated = sums / counts.clamp(min=1)
        if spherical:
            updated = F.normalize(updated, dim=-1)
        centres = torch.where(counts > 0, updated, centres)
    return centres


def _kmeans_pp(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeds: each next centre drawn with probability proportional to its squared distance to the nearest
    centre so far (uniformly once every feature is a centre)."""
    picks = [int(torch.randint(len(x), (1,), generator=generator))]
    nearest = pairwise_distances(x, x[picks[0]][None]).squeeze(-1).clamp(min=0)
    for _ in range(k - 1):
        weights = nearest if float(nearest.sum()) > 0 else torch.ones_like(nearest)
        picks.append(int(torch.multinomial(weights.cpu().double(), 1, generator=generator)))
        nearest = torch.minimum(nearest, pairwise_distances(x, x[picks[-1]][None]).squeeze(-1).clamp(min=0))
    return x[torch.tensor(picks, device=x.device)].clone()


class CodebookMaintenance:
    """Applies a :class:`CodebookConfig` to a :class:`VectorQuantizer` during training.

    ``observe`` takes each micro-batch's quantizer output (inside the loss); ``step`` acts once the optimizer has
    stepped, with ``gather`` (e.g. ``accelerator.gather``) concatenating a tensor over processes.
    """

    def __init__(self, cfg: CodebookConfig, quantizer: VectorQuantizer, seed: int, device: torch.device) -> None:
        self.cfg, self.quantizer = cfg, quantizer
        k = quantizer.codebook_size
        self.usage = torch.zeros(k, dtype=torch.float64, device=device)  # running frequency (clustering)
        self.idle = torch.zeros(k, dtype=torch.int64, device=device)  # steps since last emitted (restart)
        self.initialised = not cfg.kmeans_init
        self.generator = torch.Generator().manual_seed(seed)
        self._features: list[torch.Tensor] = []
        self._codes: list[torch.Tensor] = []

    def observe(self, out: QuantizerOutput) -> None:
        if out.latents is None:
            raise ValueError("codebook maintenance needs the quantizer's input latents (QuantizerOutput.latents)")
        self._features.append(out.latents.reshape(-1, out.latents.shape[-1]).detach().float())
        self._codes.append(out.codes.reshape(-1).detach())

    @torch.no_grad()
    def step(self, gather) -> dict[str, float]:
        """Update the codebook from the observed batch (every process's); returns what it did, for the log."""
        if not self._features:
            return {}
        features = gather(torch.cat(self._features))  # (M, D), unnormalised
        codes = gather(torch.cat(self._codes))  # (M,)
        self._features.clear()
        self._codes.clear()
        weight = self.quantizer.embedding.weight
        spherical = isinstance(self.quantizer.normalize, L2Normalize)
        values: dict[str, float] = {}
        if not self.initialised:
            centres = kmeans(features.cpu(), len(weight), self.cfg.kmeans_iters, self.generator, spherical)
            weight.copy_(centres.to(weight))
            self.initialised = True
            logger.info("codebook initialised by k-means on %d encoder outputs", len(features))
            return {"codebook_kmeans_init": float(len(features))}
        counts = torch.bincount(codes.long(), minlength=len(weight)).to(self.usage)
        if self.cfg.clustering:
            values["codebook_revived"] = self._cluster(weight, features, counts, spherical)
        if self.cfg.restart_after > 0:
            values["codebook_restarted"] = self._restart(weight, features, counts)
        return values

    def _cluster(self, weight: torch.Tensor, features: torch.Tensor, counts: torch.Tensor, spherical: bool) -> float:
        decay, k = self.cfg.clustering_decay, len(weight)
        self.usage.mul_(decay).add_(counts / counts.sum(), alpha=1 - decay)
        search = F.normalize(features, dim=-1) if spherical else features
        nearest = features[pairwise_distances(search, self.quantizer.codebook()).argmin(0)]  # (K, D), per code
        alpha = torch.exp(-(self.usage * k * 10) / (1 - decay) - 1e-3).unsqueeze(-1)  # (K, 1)
        weight.copy_((weight.double() * (1 - alpha) + nearest.double() * alpha).to(weight))
        return float((alpha > 0.5).sum())

    def _restart(self, weight: torch.Tensor, features: torch.Tensor, counts: torch.Tensor) -> float:
        self.idle = torch.where(counts > 0, 0, self.idle + 1)
        dead = (self.idle >= self.cfg.restart_after).nonzero().squeeze(-1)
        if len(dead):
            pick = torch.randint(len(features), (len(dead),), generator=self.generator).to(features.device)
            weight[dead] = features[pick].to(weight)
            self.idle[dead] = 0
        return float(len(dead))

    def state_dict(self) -> dict[str, Any]:
        return {
            "usage": self.usage.clone(),
            "idle": self.idle.clone(),
            "initialised": self.initialised,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.usage.copy_(state["usage"])
        self.idle.copy_(state["idle"])
        self.initialised = bool(state["initialised"])
        self.generator.set_state(state["generator"])
