"""Evaluation images: a folder of files, Fashion-MNIST, or the ``arr_0`` of an ADM-style ``.npz``.

Every source is a map-style dataset of ``(image (3, S, S) float in [0, 1] or None, index, error)``: an unreadable
file yields ``None`` and its error instead of being replaced by another image (which would count an image twice),
and :func:`collate` drops such items from the batch and hands their errors on, so that they are reported.
Preprocessing is the reference's evaluation transform: resize the shorter side to S (bicubic, antialiased), center
crop S x S.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from titok.data.files import file_kind
from titok.data.images import check_size, find_images, load_image, preprocess_array
from titok.io import check_npz

FASHION_MNIST = "fashion-mnist"


class Batch(NamedTuple):
    images: torch.Tensor  # (B, 3, S, S) float in [0, 1]
    indices: torch.Tensor  # (B,) int64: positions in the source
    errors: list[str]  # one message per unreadable item of this batch


class ImageFiles(Dataset):
    """Image files; ``skipped`` holds what the search for them left out (FIFOs, link loops, unlistable folders)."""

    def __init__(self, files: list[Path], size: int, skipped: list[str] | None = None) -> None:
        self.files, self.size, self.skipped = files, size, list(skipped or [])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, str]:
        try:
            return load_image(self.files[index], self.size), index, ""
        except ValueError as e:
            return None, index, str(e)


class NpzImages(Dataset):
    """The ``arr_0`` (N, H, W, 3) uint8 of an uncompressed ``.npz`` (``np.savez``; the ADM evaluator's layout),
    read through a memory map: nothing is loaded before it is used."""

    def __init__(self, path: str | Path, size: int, key: str = "arr_0") -> None:
        self.path, self.size = str(path), size
        self.offset, self.shape = npz_array_location(path, key)
        if len(self.shape) != 4 or self.shape[3] != 3:
            raise ValueError(f"{path}: {key} has shape {self.shape}; expected N x H x W x 3 uint8 images")
        if os.path.getsize(path) < self.offset + int(np.prod(self.shape)):
            raise ValueError(f"{path} is truncated: {key} {self.shape} does not fit in the file")
        try:
            check_size(self.shape[2], self.shape[1], size)
        except ValueError as e:
            raise ValueError(f"{path}: the images of {key} are {e}") from None
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, str]:
        if self._array is None:  # opened lazily, so that each DataLoader worker maps the file itself
            self._array = np.memmap(self.path, np.uint8, "r", offset=self.offset, shape=self.shape)
        return preprocess_array(np.array(self._array[index]), self.size), index, ""


def npz_array_location(path: str | Path, key: str) -> tuple[int, tuple[int, ...]]:
    """Byte offset in the file and shape of the uint8 array ``key`` stored uncompressed in the ``.npz`` ``path``."""
    check_npz(path)
    try:
        return _npz_array_location(path, key)
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise ValueError(f"cannot read {path} (damaged or truncated): {type(e).__name__}: {e}") from None


def _npz_array_location(path: str | Path, key: str) -> tuple[int, tuple[int, ...]]:
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo(f"{key}.npy")
        except KeyError:
            raise ValueError(f"{path} holds no array {key!r} (it has {zf.namelist()})") from None
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"{path}: {key} is compressed; re-save it with np.savez (not savez_compressed)")
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(f)
            header_len = f.tell()
    if dtype != np.uint8 or fortran:
        raise ValueError(f"{path}: {key} is {dtype}{' (Fortran order)' if fortran else ''}; expected C-order uint8")
    with open(path, "rb") as raw:  # the member's data follow its local header: 30 bytes, name, extra field
        raw.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(raw.read(4), dtype="<u2")
    return info.header_offset + 30 + int(name_len) + int(extra_len) + header_len, tuple(shape)


class FashionMNISTImages(Dataset):
    def __init__(self, split: str, size: int) -> None:
        from titok.data.datasets import FashionMNIST
        from titok.data.transforms import Preprocess

        self.data = FashionMNIST(split, Preprocess(size))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, str]:
        return self.data[index][0], index, ""


def open_source(spec: str, size: int, limit: int | None = None) -> tuple[Dataset, str]:
    """A dataset for ``spec`` (a folder, an ``.npz`` with ``arr_0``, or ``fashion-mnist[:train|test]``, default
    test) at ``size`` pixels, of its first ``limit`` items (default all), and a canonical description of it (for
    results and cache keys). A folder's dataset lists in ``skipped`` what the search left out."""
    if spec == FASHION_MNIST or spec.startswith(FASHION_MNIST + ":"):
        split = spec.partition(":")[2] or "test"
        dataset: Dataset = FashionMNISTImages(split, size)
        described = f"{FASHION_MNIST}:{split}"
    elif Path(spec).is_file() and Path(spec).suffix == ".npz":
        dataset, described = NpzImages(spec, size), str(Path(spec).resolve())
    elif Path(spec).is_dir():
        skipped: list[tuple[Path, str]] = []
        files = find_images([spec], skipped)
        if not files:
            raise ValueError(f"{spec} holds no image files" + "".join(f"; skipped {r}" for _, r in skipped[:3]))
        dataset = ImageFiles(files[:limit], size, [reason for _, reason in skipped])
        return dataset, str(Path(spec).resolve())
    elif os.path.exists(spec):
        what = "a file that is not an .npz" if Path(spec).is_file() else file_kind(os.stat(spec).st_mode)
        raise ValueError(f"{spec} is {what}; expected a folder of images, an .npz or {FASHION_MNIST}:train|test")
    else:
        raise FileNotFoundError(f"no such folder or .npz: {spec} (or use {FASHION_MNIST}:train / {FASHION_MNIST}:test)")
    if limit is not None and limit < len(dataset):
        dataset = torch.utils.data.Subset(dataset, range(limit))
    return dataset, described


def collate(items: list[tuple[torch.Tensor | None, int, str]]) -> Batch:
    kept = [(image, index) for image, index, _ in items if image is not None]
    errors = [error for image, _, error in items if image is None]
    images = torch.stack([image for image, _ in kept]) if kept else torch.empty(0, 3, 0, 0)
    return Batch(images, torch.tensor([index for _, index in kept], dtype=torch.long), errors)


def loader(dataset: Dataset, indices: range, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    """Batches of ``dataset[i]`` for ``i`` in ``indices``, in order."""
    subset = torch.utils.data.Subset(dataset, list(indices))
    return torch.utils.data.DataLoader(subset, batch_size=batch_size, num_workers=workers, collate_fn=collate)
