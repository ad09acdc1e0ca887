"""Image files <-> tensors, with the reference's evaluation preprocessing.

Any size and mode is turned upright (EXIF orientation), converted to RGB, resized so its shorter side is the
model's resolution (bicubic, antialiased) and center-cropped to a square: the reference's evaluation transform,
the same pixels through every command, training and the Python API (:func:`load_images`).
:func:`read_image` is the one place where image files become pixels, for inference and training data alike: it
refuses what it cannot convert faithfully (an unknown mode, out-of-range deep pixels, an aspect ratio beyond
:data:`MAX_ASPECT_RATIO`, a FIFO) with a ``ValueError`` naming the file, before anything large is allocated.
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
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

from titok.data.files import IMAGE_EXTENSIONS, MAX_ASPECT_RATIO, file_kind, find_images
from titok.io import atomic_write

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_EXTENSIONS", "MAX_ASPECT_RATIO", "find_images"]  # re-exported: they lived here first


ORIENTATION_TAG = 0x0112  # EXIF: how the stored pixels are turned

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


def upright(image: Image.Image) -> Image.Image:
    """``image`` turned the way its EXIF orientation tag says it is viewed (a phone's portrait photo is stored
    lying down with a tag that says so); unchanged when there is no tag."""
    try:
        orientation = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # an unreadable EXIF block is no orientation
        return image
    if orientation in (None, 1):
        return image
    return ImageOps.exif_transpose(image)


def read_image(path: str | Path | BinaryIO, size: int) -> np.ndarray:
    """Decode one image file (a path or an open binary file) to :func:`rgb_array`'s (H, W, 3), turned upright by its
    EXIF orientation (:func:`upright`), after checking that it is a regular file and that its size can be resized
    to ``size``. Raises ``ValueError`` naming the file."""
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
            return rgb_array(upright(image))
    except ValueError as e:
        raise ValueError(f"cannot read image {name}: {e}") from None
    except Exception as e:  # Pillow's decoders raise OSError, SyntaxError, struct.error, EOFError, ... on bad data
        raise ValueError(f"cannot read image {name}: {type(e).__name__}: {e}") from None


def resized_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) with the shorter side made ``size`` and the longer scaled and truncated, as torchvision's
    ``Resize(size)`` (the reference's) computes it."""
    check_size(width, height, size)
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def _as_hwc(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """(H, W, 3) numpy uint8 or float32, from :func:`rgb_array`'s layout or a (C, H, W) tensor with C in {1, 3, 4}
    (grey is repeated, alpha dropped)."""
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
            raise ValueError(f"expected a (C, H, W) image with 1, 3 or 4 channels, got {tuple(image.shape)}")
        image = image[:3].expand(3, -1, -1).permute(1, 2, 0).cpu().numpy()
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {tuple(image.shape)}")
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    return np.ascontiguousarray(image, dtype=np.float32)


def resize_shorter(image: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """An (H, W, 3) array or (C, H, W) tensor, uint8 or float in [0, 1] -> (3, H', W') float32 in [0, 1] whose
    shorter side is ``size``: bicubic, antialiased; uint8 pixels through Pillow, as the reference's torchvision
    ``Resize`` on PIL images, deeper (float) pixels through ``F.interpolate``. The one resize of every image titok
    reads: :func:`preprocess_array` center-crops its result, training (:class:`~titok.data.transforms.Preprocess`)
    may crop at random and flip it."""
    array = _as_hwc(image)
    height, width = array.shape[:2]
    new_h, new_w = resized_size(height, width, size)
    if array.dtype == np.uint8:
        if (new_h, new_w) != (height, width):
            array = np.asarray(Image.fromarray(array).resize((new_w, new_h), Image.Resampling.BICUBIC))
        return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(255)
    x = torch.from_numpy(array).permute(2, 0, 1)
    if (new_h, new_w) != (height, width):
        x = F.interpolate(x[None], size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False)[0]
    return x.clamp(0, 1).contiguous()


def center_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of the centered ``size`` x ``size`` crop, rounded as torchvision's ``CenterCrop``."""
    return round((height - size) / 2.0), round((width - size) / 2.0)


def preprocess_array(array: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 or float in [0, 1] (or a (C, H, W) tensor) -> (3, size, size) float32 in [0, 1]: the
    reference's evaluation transform, shorter side resized to ``size`` (:func:`resize_shorter`), center crop."""
    x = resize_shorter(array, size)
    top, left = center_offsets(x.shape[1], x.shape[2], size)
    return x[:, top : top + size, left : left + size].contiguous()


def preprocess(image: Image.Image, size: int) -> torch.Tensor:
    """A PIL image -> (3, size, size) float32 in [0, 1]: EXIF orientation applied, RGB, shorter side resized to
    ``size``, center crop."""
    image = upright(image)
    check_size(image.width, image.height, size)
    return preprocess_array(rgb_array(image), size)


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """Read and preprocess one file; raises ``ValueError`` naming the file if it is not a readable image."""
    return preprocess_array(read_image(path, size), size)


def load_images(images: str | Path | Image.Image | Sequence[str | Path | Image.Image], size: int) -> torch.Tensor:
    """Files (paths; a folder is searched for images) or PIL images -> (B, 3, size, size) float32 in [0, 1], the
    input of ``tokenize``/``encode``: EXIF orientation applied, RGB, shorter side resized to ``size`` (bicubic,
    antialiased), center crop; the same pixels as every command and training run reads.

    An unreadable file raises ``ValueError`` naming it; a path that does not exist, ``FileNotFoundError``."""
    items = [images] if isinstance(images, (str, Path, Image.Image)) else list(images)
    out: list[torch.Tensor] = []
    for item in items:
        if isinstance(item, Image.Image):
            out.append(preprocess(item, size))
            continue
        if not isinstance(item, (str, Path)):
            raise TypeError(f"expected file paths or PIL images, got {type(item).__name__}")
        out.extend(load_image(path, size) for path in find_images([item]))
    if not out:
        raise ValueError(f"no images to load (given {images!r})")
    return torch.stack(out)


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
