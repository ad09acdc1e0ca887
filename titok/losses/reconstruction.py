"""Pixel reconstruction and the VAE's KL term."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from titok.quantizers import DiagonalGaussian


def reconstruction_loss(images: torch.Tensor, targets: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """Mean squared (``l2``) or absolute (``l1``) error between (B, 3, H, W) images, in float32 (a scalar)."""
    if kind == "l2":
        return F.mse_loss(images.float(), targets.float())
    if kind == "l1":
        return F.l1_loss(images.float(), targets.float())
    raise ValueError(f"reconstruction loss must be 'l2' or 'l1', got {kind!r}")


def kl_loss(posterior: DiagonalGaussian) -> torch.Tensor:
    """KL divergence to the standard normal summed over tokens and channels, averaged over the batch (the
    reference's ``sum(KL) / B``)."""
    kl = posterior.kl()  # (B, N)
    return kl.sum() / kl.shape[0]
