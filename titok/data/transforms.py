"""The reference's image preprocessing, with randomness drawn from a per-sample seed.

Train: resize the shorter side (bicubic, antialiased), random or center crop, optional horizontal flip.
Eval: resize the shorter side, center crop. Output (3, S, S) float32 in [0, 1]. Images beyond
:data:`~titok.data.images.MAX_ASPECT_RATIO` are refused with a ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from titok.data.images import check_size


@dataclass(frozen=True)
class Preprocess:
    size: int
    random_crop: bool = False
    random_flip: bool = False

    def __call__(self, image: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """``image``: (C, H, W) uint8 or float in [0, 1], C in {1, 3, 4} -> (3, size, size) float32 in [0, 1]."""
        x = image.float() / 255 if image.dtype == torch.uint8 else image.float()
        if x.ndim != 3 or x.shape[0] not in (1, 3, 4):
            raise ValueError(f"expected a (C, H, W) image with 1, 3 or 4 channels, got {tuple(x.shape)}")
        x = x[:3].expand(3, -1, -1) if x.shape[0] != 4 else x[:3]
        check_size(x.shape[2], x.shape[1], self.size)  # before the resize allocates
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        h, w = x.shape[1:]
        if min(h, w) != self.size:
            scale = self.size / min(h, w)
            new = (max(self.size, round(h * scale)), max(self.size, round(w * scale)))
            x = F.interpolate(x[None], size=new, mode="bicubic", antialias=True, align_corners=False)[0]
            h, w = new
        if self.random_crop and g is not None:
            top = int(torch.randint(0, h - self.size + 1, (), generator=g))
            left = int(torch.randint(0, w - self.size + 1, (), generator=g))
        else:
            top, left = (h - self.size) // 2, (w - self.size) // 2
        x = x[:, top : top + self.size, left : left + self.size]
        if self.random_flip and g is not None and bool(torch.rand((), generator=g) < 0.5):
            x = x.flip(-1)
        return x.clamp(0, 1).contiguous()
