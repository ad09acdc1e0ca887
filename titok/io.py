"""File writing that never leaves half a file behind, and ``.npz`` reading that names what is wrong."""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

NPY_MAGIC = b"\x93NUMPY"

logger = logging.getLogger(__name__)


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` in one rename: readers never see half a file.

    The file is fsynced before the rename and its folder after, so the new contents survive a power loss too. A
    process killed inside leaves a hidden ``.NAME.XXXX.tmp`` beside ``path`` (training runs remove those of their
    folder when they start again)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the permissions open() would
        fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync(path.parent)


def fsync(path: str | Path) -> None:
    """Make a file's contents, or a folder's entries (created, renamed files), durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_npz(path: str | Path) -> None:
    """Raise ``ValueError`` (``FileNotFoundError`` if missing) naming ``path`` unless it is a regular file that starts
    like a zip archive, as ``np.savez`` writes: not a FIFO (which would block), a ``.npy``, a text file, empty."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {path}") from None
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{path} is not a regular file")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(NPY_MAGIC):
        raise ValueError(f"{path} is a single .npy array, not an .npz archive (write it with np.savez)")
    if not head.startswith(b"PK"):
        found = "it is empty" if not head else f"it starts with {head!r}"
        raise ValueError(f"{path} is not an .npz archive (a zip file written by np.savez): {found}")


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path`` (never unpickled); ``ValueError`` naming the file and the problem."""
    check_npz(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise ValueError(f"cannot read {path} (damaged or truncated): {type(e).__name__}: {e}") from None
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"cannot read {path}: {type(e).__name__}: {e}") from None


def read_jsonl(
    path: Path, valid: Callable[[Any], bool], reason: str, damaged: str, skip_blank: bool = False
) -> Iterator[tuple[str, dict]]:
    """(line, entry) for each line of the JSON-lines file ``path`` whose entry passes ``valid``; any other line (torn
    by a killed writer, or not an entry: ``reason``) is logged as ``"{path} line {n} {damaged}"`` and skipped."""
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if skip_blank and not line.strip():
            continue
        try:
            entry = json.loads(line)
            if not valid(entry):
                raise ValueError(reason)
        except ValueError as e:
            logger.warning("%s line %d " + damaged, path, number, e)
            continue
        yield line, entry
