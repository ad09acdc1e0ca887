"""Pictures in and out of the page: an upload's bytes -> the model's input (titok's one image reader), images ->
PNG data URLs, and the shipped Fashion-MNIST test images offered as examples."""

from __future__ import annotations

import base64
import functools
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from titok.data.datasets import FASHION_MNIST_CLASSES
from titok.data.images import preprocess_array, read_image, to_uint8
from titok.serve.worker import RequestError

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "fashion_mnist" / "test_images.npz"
READABLE = "PNG, JPEG, WebP, BMP, GIF, TIFF, PPM/PGM"


def read_upload(data: bytes, name: str, size: int, max_pixels: int) -> torch.Tensor:
    """An uploaded file's bytes -> (3, size, size) float32 in [0, 1], exactly as ``titok tokenize`` reads that file
    (EXIF orientation, RGB, shorter side resized, center crop). A :class:`RequestError` says what is wrong: not an
    image (415), more than ``max_pixels`` pixels (413), a mode or shape titok does not read (400)."""
    if not data:
        raise RequestError(400, "the upload is empty: send an image file")
    try:
        with Image.open(io.BytesIO(data)) as header:  # reads the header only
            width, height = header.size
    except Image.DecompressionBombError as e:
        raise RequestError(413, f"{name}: {e}") from None
    except UnidentifiedImageError:
        raise RequestError(415, f"{name} is not an image titok can read ({READABLE})") from None
    except Exception as e:  # a damaged header: Pillow raises many kinds
        raise RequestError(415, f"{name} is not an image titok can read ({type(e).__name__}: {e})") from None
    if width * height > max_pixels:
        raise RequestError(
            413, f"{name} is {width}x{height} = {width * height:,} pixels; titok serve takes at most {max_pixels:,}"
        )
    file = io.BytesIO(data)
    file.name = name  # read_image names the file in its errors
    try:
        return preprocess_array(read_image(file, size), size)
    except ValueError as e:
        raise RequestError(400, str(e)) from None


def data_url(image: torch.Tensor) -> str:
    """A (3, H, W) float image in [0, 1] as a ``data:image/png`` URL, rounded as titok writes PNGs."""
    return png_url(to_uint8(image[None].float().cpu())[0])


def png_url(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass(frozen=True)
class Example:
    """A shipped Fashion-MNIST test image: its row in ``test_images.npz`` and its class's name."""

    index: int
    name: str


@functools.cache
def _example_images() -> tuple[np.ndarray, np.ndarray]:
    with np.load(EXAMPLES) as data:
        return data["images"], data["labels"]


def examples() -> list[Example]:
    """The first shipped test image of each class."""
    _, labels = _example_images()
    first = [int(np.flatnonzero(labels == c)[0]) for c in range(len(FASHION_MNIST_CLASSES))]
    return [Example(i, FASHION_MNIST_CLASSES[int(labels[i])]) for i in first]


def example_png(index: int) -> bytes:
    """Shipped test image ``index`` as a greyscale PNG file (what the page uploads when it is picked)."""
    images, _ = _example_images()
    if not 0 <= index < len(images):
        raise RequestError(404, f"there is no example {index}: the shipped examples are 0 to {len(images) - 1}")
    buffer = io.BytesIO()
    Image.fromarray(images[index]).save(buffer, format="PNG")
    return buffer.getvalue()
