"""LPIPS (Zhang et al. 2018) through the ``lpips`` package, computed only when its backbone weights are local.

``lpips`` ships its linear heads, but its backbone is torchvision's ImageNet network, which torchvision downloads
into ``torch.hub.get_dir()/checkpoints``. Offline, with no such file, LPIPS is reported as not computed (with the
reason) instead of failing an evaluation or running on random backbone weights.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from titok.extras import install_hint

LPIPS_BACKBONES = {  # lpips net name -> torchvision's file name of its ImageNet weights
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


def load_lpips(net: str = "alex", device: torch.device | str = "cpu") -> tuple[nn.Module | None, str]:
    """``(module, "")`` when LPIPS with backbone ``net`` can be computed here, else ``(None, reason)``."""
    if net not in LPIPS_BACKBONES:
        raise ValueError(f"unknown LPIPS network {net!r}; expected one of {list(LPIPS_BACKBONES)}")
    try:
        import lpips
    except ImportError:
        return None, f"the lpips package is not installed ({install_hint('eval')})"
    weights = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONES[net]
    if not weights.is_file():
        return None, f"torchvision's ImageNet weights of its backbone are not at {weights}"
    with warnings.catch_warnings():  # lpips uses torchvision's deprecated pretrained=True
        warnings.simplefilter("ignore")
        module = lpips.LPIPS(net=net, verbose=False)
    return module.eval().requires_grad_(False).to(device), ""


@torch.no_grad()
def lpips_distance(module: nn.Module, images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """LPIPS per image (B,), float64, between (B, 3, H, W) images in [0, 1] (lower is more alike)."""
    if images.shape != references.shape:
        raise ValueError(f"lpips needs equal shapes, got {tuple(images.shape)} and {tuple(references.shape)}")
    device = next(module.parameters()).device
    x, y = (t.to(device).float().clamp(0, 1) for t in (images, references))
    return module(x, y, normalize=True).flatten().double()
