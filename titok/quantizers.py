"""Vector quantization and the diagonal-Gaussian posterior of continuous (VAE) tokenizers.

Latents are token-major ``(B, N, D)``; codes are ``(B, N)`` int64.
"""

from __future__ import annotations

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
    ``loss`` = ``commitment_loss`` + ``codebook_loss`` (scalars).
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    commitment_loss: torch.Tensor
    codebook_loss: torch.Tensor


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
        return QuantizerOutput(quantized, codes, commitment + codebook_loss, commitment, codebook_loss)

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, N) int64 -> code vectors (B, N, D) in float32."""
        check_codes(codes, self.codebook_size)
        return F.embedding(codes, self.codebook())


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
