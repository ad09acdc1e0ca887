"""The ``.npz`` files of ``titok tokenize``: one row of codes (or continuous latents) per image, and what made them.

Arrays:

- ``codes`` (B, K) int64, or ``latents`` (B, K, D) float32 for a continuous tokenizer;
- ``lengths`` (B,) int64, optional: ragged rows. Row i holds ``codes[i, :lengths[i]]`` (a prefix of an ordered
  tokenizer's codes, as ``tokenize(images, quality=...)`` picks one length per image); the rest of the row is
  padding (``PAD``, -1, so that a reader that ignores ``lengths`` refuses the file instead of decoding padding).
  K is the longest row's length. Without ``lengths`` every row has all K entries (files written before ragged rows
  existed read unchanged);
- ``files`` (B,) str, optional: the image each row came from;
- ``model`` () str, optional: the tokenizer that wrote them.

:func:`save_codes` writes such a file atomically; :func:`load_codes` reads and checks it (a ``ValueError`` naming
the file and the problem otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from titok.io import atomic_write, read_npz

PAD = -1


@dataclass
class CodesFile:
    """A ``titok tokenize`` output: ``values`` (codes (B, K) int64 or latents (B, K, D) float32), the ragged rows'
    ``lengths`` (B,) int64 or None (every row K long), the image ``files`` (empty when not recorded), the ``model``."""

    values: np.ndarray
    lengths: np.ndarray | None = None
    files: list[str] = field(default_factory=list)
    model: str | None = None

    @property
    def kind(self) -> str:
        """``"codes"`` or ``"latents"``: the array's name in the file."""
        return "latents" if self.values.dtype.kind == "f" else "codes"

    def row_lengths(self) -> np.ndarray:
        """Each row's length (B,) int64."""
        if self.lengths is not None:
            return self.lengths
        return np.full(len(self.values), self.values.shape[1], dtype=np.int64)

    def rows(self) -> list[np.ndarray]:
        """Each row without its padding: codes (k_i,) or latents (k_i, D)."""
        return [row[:k] for row, k in zip(self.values, self.row_lengths().tolist())]


def save_codes(
    path: str | Path,
    values: np.ndarray,
    *,
    lengths: np.ndarray | None = None,
    files: Sequence[str | Path] | None = None,
    model: str | None = None,
) -> CodesFile:
    """Write codes (B, K) or latents (B, K, D) (and the ragged rows' ``lengths`` (B,), the image ``files``, the
    ``model``) to the ``.npz`` at ``path``, atomically. Entries past a row's length are written as ``PAD``
    (codes) or 0 (latents). Returns what was written (checked as :func:`load_codes` checks it)."""
    values = np.asarray(values)
    values = values.astype(np.float32) if values.dtype.kind == "f" else values.astype(np.int64)
    if lengths is not None:
        lengths = np.asarray(lengths).astype(np.int64)
        _check_lengths(str(path), lengths, values)
        values = values.copy()
        values[np.arange(values.shape[1]) >= lengths[:, None]] = PAD if values.dtype.kind != "f" else 0
    names = [os.fsdecode(f) if isinstance(f, bytes) else str(f) for f in files] if files is not None else []
    written = CodesFile(values, lengths, names, model)
    _check(str(path), written)
    arrays = {written.kind: values}
    if lengths is not None:
        arrays["lengths"] = lengths
    if files is not None:
        arrays["files"] = np.array(names, dtype=str)
    if model is not None:
        arrays["model"] = np.array(str(model))

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to the temporary name
            np.savez(f, **arrays)

    atomic_write(path, write)
    return written


def load_codes(path: str | Path) -> CodesFile:
    """The codes or latents of a ``titok tokenize`` output (fixed-length or ragged), checked for shape and type;
    ``ValueError`` (``FileNotFoundError``) naming the file and the problem otherwise."""
    where = str(path)
    arrays = read_npz(path)
    key = "codes" if "codes" in arrays else "latents" if "latents" in arrays else None
    if key is None:
        raise ValueError(f"{where} holds neither 'codes' nor 'latents' (it has {sorted(arrays)})")
    values = arrays[key]
    if key == "codes" and values.dtype.kind not in "iu":
        hint = "; continuous latents are stored as 'latents'" if values.dtype.kind == "f" else ""
        raise ValueError(f"{where}: 'codes' are {values.dtype}, but codes are integers{hint}")
    if key == "latents" and values.dtype.kind != "f":
        raise ValueError(f"{where}: 'latents' are {values.dtype}; expected floats")
    lengths = arrays.get("lengths")
    if lengths is not None:
        if lengths.dtype.kind not in "iu":
            raise ValueError(f"{where}: 'lengths' are {lengths.dtype}; expected integers, one per row")
        lengths = lengths.astype(np.int64)
    model = arrays.get("model")
    result = CodesFile(
        values.astype(np.int64) if key == "codes" else values.astype(np.float32),
        lengths,
        _names(where, arrays.get("files"), len(values)),
        str(model) if model is not None and model.ndim == 0 else None,
    )
    _check(where, result)
    return result


def _names(where: str, files: np.ndarray | None, count: int) -> list[str]:
    if files is None:
        return []
    if files.ndim != 1 or len(files) != count or files.dtype.kind not in "US":
        expected = f"one name per row ({count} strings)"
        raise ValueError(f"{where}: 'files' is {files.dtype} {files.shape}; expected {expected}")
    return [os.fsdecode(f) if isinstance(f, bytes) else str(f) for f in files.tolist()]


def _check(where: str, data: CodesFile) -> None:
    values, kind = data.values, data.kind
    shape = "(B, K)" if kind == "codes" else "(B, K, D)"
    if values.ndim != (2 if kind == "codes" else 3) or values.shape[1] < 1:
        raise ValueError(f"{where} holds {kind} {values.shape}; expected {shape}, K >= 1 per image")
    if data.lengths is not None:
        _check_lengths(where, data.lengths, values)
    if data.files and len(data.files) != len(values):
        raise ValueError(f"{where}: {len(data.files)} file names for {len(values)} rows")
    kept = np.arange(values.shape[1]) < data.row_lengths()[:, None]  # (B, K): True within each row's length
    if kind == "latents" and not np.isfinite(values[kept]).all():
        raise ValueError(f"{where}: the latents hold NaN or infinite values")
    if kind == "codes" and values.size and int(values[kept].min()) < 0:
        bad = int(values[kept].min())
        raise ValueError(f"{where}: code {bad} is out of range: codes are at least 0 ({PAD} pads ragged rows only)")


def _check_lengths(where: str, lengths: np.ndarray, values: np.ndarray) -> None:
    if lengths.ndim != 1 or len(lengths) != len(values):
        raise ValueError(f"{where}: 'lengths' must be one per row ({len(values)}), got shape {lengths.shape}")
    k = values.shape[1]
    if len(lengths) and (int(lengths.min()) < 1 or int(lengths.max()) > k):
        bad = int(lengths.min()) if int(lengths.min()) < 1 else int(lengths.max())
        raise ValueError(f"{where}: a row length of {bad}; lengths must lie in [1, {k}] (the rows' width)")
