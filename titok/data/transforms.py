"""Training and evaluation preprocessing: one resize for every image titok reads, augmentations on top of it.

Every image, from a file, a webdataset shard, Fashion-MNIST or an ``.npz``, is resized by
:func:`~titok.data.images.resize_shorter` (shorter side to S, bicubic, antialiased). Evaluation then takes the
center crop (:func:`~titok.data.images.preprocess_array`, the same pixels bit for bit); training may take a random
crop and a horizontal flip instead, drawn from a per-sample seed. Output (3, S, S) float32 in [0, 1]. Images beyond
:data:`~titok.data.images.MAX_ASPECT_RATIO` are refused with a ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from titok.data.images import center_offsets, resize_shorter


@dataclass(frozen=True)
class Preprocess:
    size: int
    random_crop: bool = False
    random_flip: bool = False

    def __call__(self, image: torch.Tensor | np.ndarray, seed: int | None = None) -> torch.Tensor:
        """``image``: (C, H, W) tensor, C in {1, 3, 4}, or (H, W, 3) array; uint8 or float in [0, 1] ->
        (3, size, size) float32 in [0, 1]. Without ``seed`` (or augmentation) this is the evaluation transform."""
        x = resize_shorter(image, self.size)
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        h, w = x.shape[1:]
        if self.random_crop and g is not None:
            top = int(torch.randint(0, h - self.size + 1, (), generator=g))
            left = int(torch.randint(0, w - self.size + 1, (), generator=g))
        else:
            top, left = center_offsets(h, w, self.size)
        x = x[:, top : top + self.size, left : left + self.size]
        if self.random_flip and g is not None and bool(torch.rand((), generator=g) < 0.5):
            x = x.flip(-1)
        return x.contiguous()
