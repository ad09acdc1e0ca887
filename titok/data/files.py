"""Finding image files: folders searched recursively, with everything that is not a readable image file reported.

Symbolic links are followed, to files and to folders alike, except a link back to a folder that is being searched
(a loop), which is reported and not followed; a second link to a folder already searched is not searched again.
FIFOs, sockets and devices are never opened (opening a FIFO waits for a writer: it would hang), broken links and
folders that cannot be listed are reported. Each report is a ``(path, reason)`` pair, and a caller counts it as a
skipped input.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

# The longer side may be at most this many times the shorter. Resizing the shorter side to S makes the longer one
# S * ratio, so a 1 x 3,000,000 strip (a 3 KB PNG) would become a 256 x 768,000,000 image: refused instead.
MAX_ASPECT_RATIO = 32

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}

Skipped = list[tuple[Path, str]]


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, in words: "a FIFO", "a socket", ..."""
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _stat_problem(path: Path, error: OSError) -> str:
    if os.path.islink(path):
        if error.errno == errno.ELOOP:
            return f"{path}: symbolic link loop (not followed)"
        return f"{path}: broken symbolic link (to {os.readlink(path)!r})"
    return f"{path}: {error.strerror or error}"


def find_images(paths: Iterable[str | Path], skipped: Skipped | None = None) -> list[Path]:
    """Expand ``paths``: a regular file is kept as given (whatever its extension); a folder is searched recursively
    for files with an image extension (:data:`IMAGE_EXTENSIONS`), in sorted order.

    What cannot be read as a file (a FIFO, socket or device, a broken link or link loop, a folder that cannot be
    listed) is appended to ``skipped`` as ``(path, reason)`` (logged as a warning when ``skipped`` is None) and
    never opened. A path that does not exist raises ``FileNotFoundError``.
    """
    report: Skipped = [] if skipped is None else skipped
    start = len(report)
    found: list[Path] = []
    for p in map(Path, paths):
        try:
            mode = os.stat(p).st_mode
        except FileNotFoundError:
            if not os.path.islink(p):
                raise FileNotFoundError(f"no such file or folder: {p}") from None
            report.append((p, _stat_problem(p, FileNotFoundError())))
            continue
        except OSError as e:
            report.append((p, _stat_problem(p, e)))
            continue
        if stat.S_ISDIR(mode):
            found.extend(sorted(_search(p, report, set())))
        elif stat.S_ISREG(mode):
            found.append(p)
        else:
            report.append((p, f"{p}: {file_kind(mode)}, not an image file (not opened)"))
    if skipped is None:
        for _, reason in report[start:]:
            logger.warning("skipped %s", reason)
    return found


def _search(folder: Path, report: Skipped, ancestors: set[tuple[int, int]], seen: set | None = None) -> list[Path]:
    """Image files under ``folder``; ``ancestors`` are the (device, inode) of the folders being searched."""
    seen = set() if seen is None else seen
    st = os.stat(folder)
    here = (st.st_dev, st.st_ino)
    if here in ancestors:
        report.append((folder, f"{folder}: symbolic link loop (leads back to a folder above it; not followed)"))
        return []
    if here in seen:  # another link to a folder searched already
        logger.info("not searching %s again (a link to a folder already searched)", folder)
        return []
    seen.add(here)
    try:
        with os.scandir(folder) as entries:
            names = sorted(entry.name for entry in entries)
    except OSError as e:
        report.append((folder, f"{folder}: cannot list this folder ({e.strerror or e}); its images are skipped"))
        return []
    found: list[Path] = []
    for name in names:
        path = folder / name
        is_image_name = path.suffix.lower() in IMAGE_EXTENSIONS
        try:
            mode = os.stat(path).st_mode
        except OSError as e:
            if is_image_name or os.path.islink(path):
                report.append((path, _stat_problem(path, e)))
            continue
        if stat.S_ISDIR(mode):
            found += _search(path, report, ancestors | {here}, seen)
        elif is_image_name and stat.S_ISREG(mode):
            found.append(path)
        elif is_image_name:
            report.append((path, f"{path}: {file_kind(mode)}, not an image file (not opened)"))
    return found
