"""Samples written as the ADM evaluator (guided-diffusion ``evaluations/evaluator.py``) reads them: an uncompressed
``.npz`` with ``arr_0`` (N, H, W, 3) uint8 and ``arr_1`` (N,) int64 class labels.

Images are streamed into the zip member as they are made, so 50,000 256x256 samples (9.8 GB) are never held in
memory; each process writes its own shard and the first merges them, shard by shard, into the final file.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from titok.data.npz import npz_array_location


class NpzWriter:
    """Streams ``count`` uint8 images of ``height`` x ``width`` x 3 (and their labels) into ``path``; the file
    appears (atomically) only when :meth:`close` has checked that all ``count`` were written."""

    def __init__(self, path: str | Path, count: int, height: int, width: int) -> None:
        self.path, self.count, self.shape = Path(path), count, (count, height, width, 3)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.zip = zipfile.ZipFile(self.tmp, "w", zipfile.ZIP_STORED, allowZip64=True)
        self.stream = self.zip.open("arr_0.npy", "w", force_zip64=True)
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
            "fortran_order": False,
            "shape": self.shape,
        }
        np.lib.format.write_array_header_1_0(self.stream, header)
        self.written = 0
        self.labels: list[np.ndarray] = []

    def write(self, images: np.ndarray, labels: np.ndarray) -> None:
        """Append images (B, H, W, 3) uint8 and their labels (B,)."""
        if images.dtype != np.uint8 or images.shape[1:] != self.shape[1:] or len(labels) != len(images):
            raise ValueError(f"expected uint8 images (B, {self.shape[1]}, {self.shape[2]}, 3) and B labels")
        self._write_bytes(np.ascontiguousarray(images).tobytes(), len(images))
        self.labels.append(np.asarray(labels, dtype=np.int64))

    def _write_bytes(self, data: bytes, rows: int) -> None:
        if self.written + rows > self.count:
            raise ValueError(f"{self.path}: more than the {self.count} images announced")
        self.stream.write(data)
        self.written += rows

    def close(self) -> None:
        if self.written != self.count:
            self.abort()
            raise ValueError(f"{self.path}: {self.written} images written, {self.count} announced")
        self.stream.close()
        labels = np.concatenate(self.labels) if self.labels else np.zeros(0, np.int64)
        with self.zip.open("arr_1.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, labels, allow_pickle=False)
        self.zip.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.stream.close()
        self.zip.close()
        self.tmp.unlink(missing_ok=True)


def shard_path(path: str | Path, rank: int, world: int) -> Path:
    """Where process ``rank`` of ``world`` writes its samples (``path`` itself for a single process)."""
    path = Path(path)
    return path if world == 1 else path.with_name(f"{path.name}.rank{rank:03d}-of-{world:03d}.npz")


def merge_shards(path: str | Path, shards: list[Path], chunk_rows: int = 256) -> None:
    """Concatenate the shards' ``arr_0`` and ``arr_1`` (in the order given) into ``path``, then delete them."""
    locations = [npz_array_location(s, "arr_0") for s in shards]
    height, width = locations[0][1][1:3]
    writer = NpzWriter(path, sum(shape[0] for _, shape in locations), height, width)
    try:
        for shard, (offset, shape) in zip(shards, locations):
            if shape[1:3] != (height, width):
                raise ValueError(f"{shard} holds {shape[1]}x{shape[2]} images, the first shard {height}x{width}")
            row = height * width * 3
            with open(shard, "rb") as f:
                f.seek(offset)
                for start in range(0, shape[0], chunk_rows):
                    rows = min(chunk_rows, shape[0] - start)
                    writer._write_bytes(f.read(rows * row), rows)
            with np.load(shard) as data:
                writer.labels.append(data["arr_1"])
    except BaseException:
        writer.abort()
        raise
    writer.close()
    for shard in shards:
        shard.unlink()


def disk_check(path: str | Path, nbytes: int) -> None:
    """Raise ``OSError`` if the folder of ``path`` has less than ``nbytes`` free."""
    folder = Path(path).resolve().parent
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < nbytes:
        raise OSError(f"--export-npz {path}: needs {nbytes / 1e9:.1f} GB, {folder} has {free / 1e9:.1f} GB free")
