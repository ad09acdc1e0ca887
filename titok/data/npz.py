"""Images in an ``.npz``: the ``arr_0`` (N, H, W, 3) uint8 of an uncompressed ``np.savez`` (the ADM evaluator's
layout, what ``titok eval gen --export-npz`` writes), labels from its ``arr_1`` (N,) when there is one."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from titok.data.datasets import IndexedImages
from titok.data.images import check_size
from titok.data.transforms import Preprocess
from titok.io import check_npz


class NpzImages(IndexedImages):
    """The images of ``arr_0``, read through a memory map: nothing is loaded before it is used. Labels are those of
    ``arr_1`` (integers, one per image) when the file has it, else -1."""

    def __init__(self, path: str | Path, preprocess: Preprocess | int, key: str = "arr_0") -> None:
        super().__init__(Preprocess(preprocess) if isinstance(preprocess, int) else preprocess)
        self.path, size = str(path), self.preprocess.size
        self.offset, self.shape = npz_array_location(path, key)
        if len(self.shape) != 4 or self.shape[3] != 3:
            raise ValueError(f"{path}: {key} has shape {self.shape}; expected N x H x W x 3 uint8 images")
        if os.path.getsize(path) < self.offset + int(np.prod(self.shape)):
            raise ValueError(f"{path} is truncated: {key} {self.shape} does not fit in the file")
        try:
            check_size(self.shape[2], self.shape[1], size)
        except ValueError as e:
            raise ValueError(f"{path}: the images of {key} are {e}") from None
        self.labels = _labels(path, self.shape[0])
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def raw(self, index: int) -> tuple[np.ndarray, int]:
        if self._array is None:  # opened lazily, so that each DataLoader worker maps the file itself
            self._array = np.memmap(self.path, np.uint8, "r", offset=self.offset, shape=self.shape)
        return np.array(self._array[index]), int(self.labels[index])


def _labels(path: str | Path, count: int) -> np.ndarray:
    """The ``arr_1`` of ``path`` as (count,) int64 labels, or -1s when it has none."""
    with np.load(path) as data:
        if "arr_1" not in data.files:
            return np.full(count, -1, dtype=np.int64)
        labels = data["arr_1"]
    if labels.shape != (count,) or labels.dtype.kind not in "iu":
        raise ValueError(f"{path}: arr_1 is {labels.dtype} {labels.shape}; expected {count} integer labels")
    return labels.astype(np.int64)


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
