"""Image files <-> tensors, with the reference's evaluation preprocessing.

Any size and mode is converted to RGB, resized so its shorter side is the model's resolution (bicubic, antialiased)
and center-cropped to a square: the reference's evaluation transform.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from titok.io import atomic_write

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Expand ``paths``: files are kept as given (whatever their extension); folders are searched recursively for
    image files, in sorted order. A path that does not exist raises ``FileNotFoundError``."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS))
        elif p.exists():
            found.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return found


def preprocess(image: Image.Image, size: int) -> torch.Tensor:
    """A PIL image -> (3, size, size) float32 in [0, 1]: RGB, shorter side resized to ``size``, center crop."""
    from torchvision.transforms import v2 as T

    image = image.convert("RGB")
    transform = T.Compose(
        [
            T.Resize(size, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
            T.CenterCrop(size),
            T.PILToTensor(),
            T.ToDtype(torch.float32, scale=True),
        ]
    )
    return transform(image)


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """Read and preprocess one file; raises ``ValueError`` naming the file if it is not a readable image."""
    try:
        with Image.open(path) as image:
            image.load()
            return preprocess(image, size)
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None


@dataclass
class ImageBatch:
    images: torch.Tensor  # (B, 3, S, S) in [0, 1]
    paths: list[Path]


def iter_image_batches(
    paths: Sequence[Path], size: int, batch_size: int, failures: list[tuple[Path, str]], num_workers: int = 0
) -> Iterator[ImageBatch]:
    """Batches of readable images, in order; each unreadable file is logged, appended to ``failures`` and skipped.
    With ``num_workers`` > 0, worker processes read and preprocess the files while the caller computes."""
    images: list[torch.Tensor] = []
    kept: list[Path] = []
    for path, image, error in _read_all(paths, size, batch_size, num_workers):
        if image is None:
            logger.warning("skipped: %s", error)
            failures.append((path, error))
        else:
            images.append(image)
            kept.append(path)
        if len(images) == batch_size:
            yield ImageBatch(torch.stack(images), kept)
            images, kept = [], []
    if images:
        yield ImageBatch(torch.stack(images), kept)


def default_workers(num_images: int, batch_size: int) -> int:
    """Image-reading processes worth starting: none for a few batches, else up to 4 (at most the CPU count)."""
    return 0 if num_images < 4 * batch_size else min(4, os.cpu_count() or 1)


class ImageFiles(Dataset):
    """Item i: (path, preprocessed image or None, the reason it could not be read or None)."""

    def __init__(self, paths: Sequence[Path], size: int) -> None:
        self.paths, self.size = list(paths), size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Path, torch.Tensor | None, str | None]:
        path = self.paths[index]
        try:
            return path, load_image(path, self.size), None
        except ValueError as e:
            return path, None, str(e)


def _read_all(
    paths: Sequence[Path], size: int, batch_size: int, num_workers: int
) -> Iterator[tuple[Path, torch.Tensor | None, str | None]]:
    files = ImageFiles(paths, size)
    if num_workers <= 0:
        yield from (files[i] for i in range(len(files)))
        return
    loader = DataLoader(files, batch_size=batch_size, num_workers=num_workers, collate_fn=list, prefetch_factor=2)
    for chunk in loader:
        yield from chunk


def quantize(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float -> (B, 3, H, W) uint8 on the same device, clamped to [0, 1] and rounded to the nearest
    level: what a PNG of the images holds."""
    return images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float -> (B, H, W, 3) uint8 numpy array, as :func:`quantize` rounds."""
    return quantize(images).permute(0, 2, 3, 1).cpu().numpy()


def save_png(array: np.ndarray, path: str | Path) -> None:
    """Write an (H, W, 3) or (H, W) uint8 array as PNG, atomically."""
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, padding: int = 2) -> torch.Tensor:
    """Tile (B, 3, H, W) images in [0, 1] into rows of ``nrow`` and write a PNG; returns the (3, H', W') grid."""
    from torchvision.utils import make_grid

    grid = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=padding, pad_value=1.0)
    save_png(to_uint8(grid[None])[0], path)
    return grid
