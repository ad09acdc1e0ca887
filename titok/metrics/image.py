"""Per-image fidelity metrics on (B, 3, H, W) float images in [0, 1]."""

from __future__ import annotations

import torch


def psnr(images: torch.Tensor, references: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, (B,). Inputs are clamped to [0, data_range] first."""
    if images.shape != references.shape:
        raise ValueError(f"psnr needs equal shapes, got {tuple(images.shape)} and {tuple(references.shape)}")
    x = images.double().clamp(0, data_range)
    y = references.double().clamp(0, data_range)
    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-20))
