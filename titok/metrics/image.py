"""Per-image fidelity metrics on (B, 3, H, W) float images in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(images: torch.Tensor, references: torch.Tensor, name: str) -> None:
    if images.shape != references.shape:
        raise ValueError(f"{name} needs equal shapes, got {tuple(images.shape)} and {tuple(references.shape)}")


def psnr(images: torch.Tensor, references: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, (B,). Inputs are clamped to [0, data_range] first."""
    _check(images, references, "psnr")
    x = images.double().clamp(0, data_range)
    y = references.double().clamp(0, data_range)
    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-20))


def _gaussian_window(size: int, sigma: float, channels: int) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).expand(channels, 1, size, size)


def ssim(
    images: torch.Tensor,
    references: torch.Tensor,
    data_range: float = 1.0,
    window: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Structural similarity per image, (B,), in float64 (Wang et al. 2004).

    Gaussian window ``window`` x ``window`` with standard deviation ``sigma``, constants ``(0.01 L)^2`` and
    ``(0.03 L)^2``, population (co)variances, computed per channel over the positions where the window fits
    entirely ("valid"), then averaged over positions and channels. Equals scikit-image's
    ``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=0)``.
    Inputs are clamped to [0, data_range]; images must be at least ``window`` pixels on each side.
    """
    _check(images, references, "ssim")
    if images.ndim != 4 or min(images.shape[-2:]) < window:
        raise ValueError(f"ssim needs (B, C, H, W) images of at least {window}x{window}, got {tuple(images.shape)}")
    x = images.double().clamp(0, data_range)
    y = references.double().clamp(0, data_range)
    c = x.shape[1]
    w = _gaussian_window(window, sigma, c).to(x.device)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=c)

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cov = blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)
