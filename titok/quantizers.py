"""Quantizers of 1-D tokens and the diagonal-Gaussian posterior of continuous (VAE) tokenizers.

- :class:`VectorQuantizer`: nearest neighbour in a learned codebook (VQ-VAE), optionally on the unit sphere.
- :class:`FiniteScalarQuantizer`: FSQ (Mentzer et al., 2023, arXiv 2309.15505): each of the D latent channels is
  bounded and rounded to one of ``levels[d]`` values; the code is the mixed-radix number of those digits. There is no
  learned codebook, so nothing can collapse, and codes are still integers in ``[0, prod(levels))``.

Latents are token-major ``(B, N, D)``; codes are ``(B, N)`` int64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class L2Normalize(nn.Module):
    """Scale each vector along the last axis to unit length (``F.normalize``, eps 1e-12)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


@dataclass
class QuantizerOutput:
    """Result of :meth:`VectorQuantizer.forward`.

    ``quantized`` (B, N, D) carries the straight-through gradient to the encoder; ``codes`` (B, N) int64;
    ``loss`` = ``commitment_loss`` + ``codebook_loss`` (scalars); ``latents``: the input (B, N, D) in float32,
    detached, before any normalisation (what codebook maintenance during training pulls codes towards).
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    commitment_loss: torch.Tensor
    codebook_loss: torch.Tensor
    latents: torch.Tensor | None = None


class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook lookup with a straight-through estimator.

    With ``l2_norm`` both the latents and the codebook rows are projected onto the unit sphere before the search,
    and looked-up codes are unit vectors. Losses follow VQ-VAE: ``commitment_cost * mean((sg[q] - z)^2)`` pulls the
    encoder towards its codes, ``mean((q - sg[z])^2)`` pulls the codes towards the encoder. Always runs in float32.
    """

    def __init__(self, codebook_size: int, dim: int, *, l2_norm: bool = False, commitment_cost: float = 0.25) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.dim = dim
        self.commitment_cost = commitment_cost
        self.embedding = nn.Embedding(codebook_size, dim)
        self.normalize = L2Normalize() if l2_norm else nn.Identity()
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)

    def codebook(self) -> torch.Tensor:
        """The (K, D) vectors codes map to (unit-length rows when ``l2_norm``)."""
        return self.normalize(self.embedding.weight.float())

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize latents ``z`` (B, N, D)."""
        with torch.autocast(z.device.type, enabled=False):
            raw = z.detach().float()
            z = self.normalize(z.float())
            codebook = self.codebook()
            distances = (
                z.pow(2).sum(-1, keepdim=True) + codebook.pow(2).sum(-1) - 2 * torch.einsum("bnd,kd->bnk", z, codebook)
            )  # (B, N, K)
            codes = distances.argmin(-1)
            quantized = F.embedding(codes, codebook)
            commitment = self.commitment_cost * F.mse_loss(z, quantized.detach())
            codebook_loss = F.mse_loss(quantized, z.detach())
            quantized = z + (quantized - z).detach()
        return QuantizerOutput(quantized, codes, commitment + codebook_loss, commitment, codebook_loss, raw)

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, N) int64 -> code vectors (B, N, D) in float32."""
        check_codes(codes, self.codebook_size)
        return F.embedding(codes, self.codebook())


class FiniteScalarQuantizer(nn.Module):
    """FSQ: channel ``d`` of a latent is squashed by ``tanh`` and rounded to one of ``levels[d]`` evenly spaced
    values in [-1, 1] (straight-through); the code is ``sum_d digit_d * prod(levels[:d])``. No parameters, no loss.

    The squashing is symmetric for every ``L``: ``y = tanh(z) * L / 2`` is cut into ``L`` bins of width 1, so each
    level covers an equal share of ``tanh``'s range and ``z = 0`` lies at the centre. (The paper's ``tanh(z + shift)``
    form shifts even ``L`` off-centre; with ``L = 2`` one level then needs ``z < -3.8``.)
    """

    def __init__(self, levels: Sequence[int]) -> None:
        super().__init__()
        levels = [int(v) for v in levels]
        if not levels or any(v < 2 for v in levels):
            raise ValueError(f"FSQ levels must be integers >= 2, one per latent channel, got {list(levels)}")
        self.levels = levels
        self.codebook_size = math.prod(levels)
        self.dim = len(levels)
        self.basis = [math.prod(levels[:i]) for i in range(len(levels))]

    def _constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(levels as float32, basis as int64), each (D,), on ``device``."""
        levels = torch.tensor(self.levels, dtype=torch.float32, device=device)
        return levels, torch.tensor(self.basis, dtype=torch.int64, device=device)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize latents ``z`` (B, N, D); ``quantized`` lies on the grid in [-1, 1]^D."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"FSQ with {self.dim} levels quantizes {self.dim}-d latents, got {z.shape[-1]}-d")
        levels, basis = self._constants(z.device)
        with torch.autocast(z.device.type, enabled=False):
            raw = z.detach().float()
            y = torch.tanh(z.float()) * levels / 2  # in (-L/2, L/2)
            digits = torch.minimum((y.detach() + levels / 2).floor(), levels - 1)  # in [0, L)
            grid = (2 * digits - (levels - 1)) / (levels - 1)  # the digit's value in [-1, 1]
            quantized = y / ((levels - 1) / 2) + (grid - y / ((levels - 1) / 2)).detach()
            codes = (digits.long() * basis).sum(-1)
        zero = quantized.new_zeros(())
        return QuantizerOutput(quantized, codes, zero, zero, zero, raw)

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, N) int64 -> grid points (B, N, D) in float32, in [-1, 1]."""
        check_codes(codes, self.codebook_size)
        levels, basis = self._constants(codes.device)
        digits = torch.div(codes.long()[..., None], basis, rounding_mode="floor") % levels.long()
        return (2 * digits - (levels - 1)) / (levels - 1)

    def codebook(self) -> torch.Tensor:
        """All (K, D) grid points, in code order."""
        return self.embed(torch.arange(self.codebook_size)[None])[0]


def check_codes(codes: torch.Tensor, codebook_size: int, num_tokens: int | None = None) -> None:
    """Raise ``ValueError`` unless ``codes`` is an integer (B, num_tokens) tensor with values in [0, codebook_size)."""
    if not isinstance(codes, torch.Tensor):
        raise ValueError(f"codes must be a torch.Tensor, got {type(codes).__name__}")
    if codes.dtype.is_floating_point or codes.dtype == torch.bool or codes.is_complex():
        raise ValueError(f"codes must be an integer tensor, got dtype {codes.dtype}")
    expected = f"(B, {num_tokens})" if num_tokens else "(B, N)"
    if codes.ndim != 2 or (num_tokens is not None and codes.shape[1] != num_tokens):
        raise ValueError(f"codes must have shape {expected}, got {tuple(codes.shape)}")
    if codes.numel():
        lo, hi = int(codes.min()), int(codes.max())
        if lo < 0 or hi >= codebook_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"code {bad} is out of range: codes must lie in [0, {codebook_size})")


class DiagonalGaussian:
    """Posterior of a continuous tokenizer: the last axis of ``params`` is ``[mean | log-variance]``.

    ``mean`` and ``logvar`` are (B, N, D) float32; ``logvar`` is clamped to [-30, 20].
    """

    def __init__(self, params: torch.Tensor) -> None:
        mean, logvar = params.float().chunk(2, dim=-1)
        self.mean = mean
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw ``mean + std * eps``; ``eps`` comes from ``generator`` (on its device) when given."""
        device = generator.device if generator is not None else self.mean.device
        eps = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * eps.to(self.mean.device)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL divergence to the standard normal per token, (B, N), summed over the latent dimension."""
        return 0.5 * (self.mean.pow(2) + self.var - 1.0 - self.logvar).sum(-1)
