"""Image files <-> tensors, with the reference's evaluation preprocessing.

Any size and mode is converted to RGB, resized so its shorter side is the model's resolution (bicubic, antialiased)
and center-cropped to a square: the reference's evaluation transform. :func:`read_image` is the one place where
image files become pixels, for inference and training data alike: it refuses what it cannot convert faithfully
(an unknown mode, out-of-range deep pixels, an aspect ratio beyond :data:`MAX_ASPECT_RATIO`, a FIFO) with a
``ValueError`` naming the file, before anything large is allocated.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image

from titok.data.files import IMAGE_EXTENSIONS, file_kind, find_images
from titok.io import atomic_write

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_EXTENSIONS", "find_images"]  # re-exported: they lived here first

# The longer side may be at most this many times the shorter. Resizing the shorter side to S makes the longer one
# S * ratio, so a 1 x 3,000,000 strip (a 3 KB PNG) would become a 256 x 768,000,000 image: refused instead.
MAX_ASPECT_RATIO = 32

# Modes whose pixels are bytes: Pillow's convert("RGB") is the reference's conversion (palettes looked up; CMYK,
# YCbCr, LAB, HSV converted; alpha dropped, premultiplied RGBa divided out first).
EIGHT_BIT_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
)
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def check_size(width: int, height: int, size: int) -> None:
    """Raise ``ValueError`` unless a ``width`` x ``height`` image can be resized (shorter side to ``size``) within
    :data:`MAX_ASPECT_RATIO`."""
    short, long = sorted((width, height))
    if short < 1:
        raise ValueError(f"{width}x{height} pixels: the image is empty")
    if long > MAX_ASPECT_RATIO * short:
        scaled = round(long * size / short)
        raise ValueError(
            f"{width}x{height} pixels: aspect ratio {long / short:,.0f}:1 is beyond the {MAX_ASPECT_RATIO}:1 titok "
            f"reads (resizing the shorter side to {size} would make the image {size}x{scaled:,})"
        )


def rgb_array(image: Image.Image) -> np.ndarray:
    """The colours of a PIL image as (H, W, 3): uint8 for 8-bit modes (:data:`EIGHT_BIT_MODES`), float32 in [0, 1]
    for deeper grey modes, which would saturate in Pillow's own conversion to RGB.

    ``I;16*`` (16-bit PNG/TIFF) is divided by 65535; ``I`` (32-bit integer) is read as 16-bit, as Pillow stores a
    16-bit PNG in it, and must lie in [0, 65535]; ``F`` (32-bit float) must lie in [0, 1]. 16-bit RGB(A) files
    arrive as RGB(A) that Pillow has cut to 8 bits. Anything else raises ``ValueError`` naming the problem.
    """
    mode = image.mode
    if mode in EIGHT_BIT_MODES:
        return np.asarray((image.convert("LA") if mode == "La" else image).convert("RGB"))
    if mode in SIXTEEN_BIT_MODES:
        grey = np.asarray(image).astype(np.float32) / 65535
    elif mode in ("I", "F"):
        values = np.asarray(image)
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        top = 65535 if mode == "I" else 1
        if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0 and hi <= top):
            kind = "32-bit integer pixels are read as 16-bit" if mode == "I" else "32-bit float pixels must be"
            raise ValueError(f"mode {mode}: {kind} in [0, {top}], but these span [{lo:g}, {hi:g}]")
        grey = values.astype(np.float32) / top
    else:
        raise ValueError(f"mode {mode!r} is not supported (convert the image to RGB or 16-bit grey)")
    return np.repeat(grey[..., None], 3, axis=2)


def read_image(path: str | Path | BinaryIO, size: int) -> np.ndarray:
    """Decode one image file (a path or an open binary file) to :func:`rgb_array`'s (H, W, 3), after checking that
    it is a regular file and that its size can be resized to ``size``. Raises ``ValueError`` naming the file."""
    name = getattr(path, "name", path)
    if isinstance(path, (str, Path)):
        try:
            mode = os.stat(path).st_mode
        except OSError as e:
            raise ValueError(f"cannot read image {name}: {e.strerror or e}") from None
        if not stat.S_ISREG(mode):
            raise ValueError(f"cannot read image {name}: {file_kind(mode)}, not an image file (not opened)")
    try:
        with Image.open(path) as image:
            check_size(image.width, image.height, size)  # from the header, before the pixels are decoded
            image.load()
            return rgb_array(image)
    except ValueError as e:
        raise ValueError(f"cannot read image {name}: {e}") from None
    except Exception as e:  # Pillow's decoders raise OSError, SyntaxError, struct.error, EOFError, ... on bad data
        raise ValueError(f"cannot read image {name}: {type(e).__name__}: {e}") from None


def preprocess_array(array: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 or float in [0, 1] -> (3, size, size) float32 in [0, 1]: shorter side resized to ``size``
    (bicubic, antialiased; uint8 through PIL, as the reference), center crop."""
    from torchvision.transforms import v2 as T

    check_size(array.shape[1], array.shape[0], size)
    resize = [T.Resize(size, interpolation=T.InterpolationMode.BICUBIC, antialias=True), T.CenterCrop(size)]
    if array.dtype == np.uint8:
        transform = T.Compose([*resize, T.PILToTensor(), T.ToDtype(torch.float32, scale=True)])
        return transform(Image.fromarray(array))
    image = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1)
    return T.Compose(resize)(image).clamp(0, 1).contiguous()


def preprocess(image: Image.Image, size: int) -> torch.Tensor:
    """A PIL image -> (3, size, size) float32 in [0, 1]: RGB, shorter side resized to ``size``, center crop."""
    check_size(image.width, image.height, size)
    return preprocess_array(rgb_array(image), size)


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """Read and preprocess one file; raises ``ValueError`` naming the file if it is not a readable image."""
    return preprocess_array(read_image(path, size), size)


@dataclass
class ImageBatch:
    images: torch.Tensor  # (B, 3, S, S) in [0, 1]
    paths: list[Path]


def iter_image_batches(
    paths: Sequence[Path], size: int, batch_size: int, failures: list[tuple[Path, str]]
) -> Iterator[ImageBatch]:
    """Batches of readable images; each unreadable file is logged, appended to ``failures`` and skipped."""
    images: list[torch.Tensor] = []
    kept: list[Path] = []
    for path in paths:
        try:
            images.append(load_image(path, size))
            kept.append(path)
        except ValueError as e:
            logger.warning("skipped: %s", e)
            failures.append((path, str(e)))
        if len(images) == batch_size:
            yield ImageBatch(torch.stack(images), kept)
            images, kept = [], []
    if images:
        yield ImageBatch(torch.stack(images), kept)


def round_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float -> (B, 3, H, W) uint8 on the same device, clamped to [0, 1] and rounded to the nearest
    level: what a PNG of the images holds."""
    return images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float -> (B, H, W, 3) uint8 numpy array, as :func:`round_to_uint8` rounds."""
    return round_to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()


def save_png(array: np.ndarray, path: str | Path) -> None:
    """Write an (H, W, 3) or (H, W) uint8 array as PNG, atomically."""
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, padding: int = 2) -> torch.Tensor:
    """Tile (B, 3, H, W) images in [0, 1] into rows of ``nrow`` and write a PNG; returns the (3, H', W') grid."""
    from torchvision.utils import make_grid

    grid = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=padding, pad_value=1.0)
    save_png(to_uint8(grid[None])[0], path)
    return grid
