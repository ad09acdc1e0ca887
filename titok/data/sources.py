"""The data a command reads, spelled one way for every command (``pretokenize``, ``eval recon|stats``, ``eval gen
--ref``, a recipe's held-out images): a folder of images, webdataset shards, an ``.npz`` of images, or
Fashion-MNIST. :func:`data_config` turns the spelling into the :class:`~titok.data.build.DataConfig` that
:func:`~titok.data.build.build_dataset` reads, with evaluation preprocessing (shorter side resized, center crop).

This module imports no torch (the CLI's ``--help`` shows :data:`SOURCES_HELP`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from titok.data.build import DataConfig

FASHION_MNIST = "fashion-mnist"
SPLITS = ("train", "test")
EXPECTED = (
    f"a folder of images, webdataset shards (a .tar, a glob or a brace pattern), an .npz or {FASHION_MNIST}:train|test"
)
SOURCES_HELP = (
    "a folder of images (searched recursively; class subfolders give labels), webdataset shards (a .tar file, a "
    "folder of .tar files, a glob or a brace pattern such as 'shards/train-{0000..0099}.tar'; cls entries give "
    "labels), an .npz with arr_0 (N x H x W x 3 uint8; arr_1 labels), or fashion-mnist:train|test"
)


def _is_pattern(spec: str) -> bool:
    return "::" in spec or any(ch in spec for ch in "{*?[")


def _holds_only_shards(folder: Path) -> bool:
    """Whether ``folder`` has ``*.tar`` files in it and no image file anywhere below it."""
    if not any(folder.glob("*.tar")):
        return False
    from titok.data.files import find_images

    return not find_images([folder], [])


def resolve(spec: str, split: str = "test") -> tuple[str, str | None, str]:
    """``(source, path, split)`` of a data spelling: ``fashion-mnist[:SPLIT]`` (``split`` when none is given), an
    existing folder (of images; of shards when it holds ``*.tar`` files and no image), ``.npz`` or ``.tar`` file,
    or a shard pattern (globs, braces, ``::``-joined lists; they must match when the data is opened). Raises
    ``FileNotFoundError`` / ``ValueError`` naming ``spec`` and what was expected."""
    name, colon, given = spec.partition(":")
    if name in (FASHION_MNIST, "fashion_mnist"):
        split = given if colon else split
        if split not in SPLITS:
            raise ValueError(f"{spec!r}: Fashion-MNIST's splits are 'train' and 'test', got {split!r}")
        return "fashion_mnist", None, split
    path = Path(spec)
    if path.is_dir():
        return ("webdataset" if _holds_only_shards(path) else "folder"), spec, split
    if path.is_file() and path.suffix == ".npz":
        return "npz", spec, split
    if (path.is_file() and path.suffix == ".tar") or (not path.exists() and _is_pattern(spec)):
        return "webdataset", spec, split
    if path.exists():
        from titok.data.files import file_kind

        what = "a file that is neither an .npz nor a .tar" if path.is_file() else file_kind(os.stat(spec).st_mode)
        raise ValueError(f"{spec} is {what}; expected {EXPECTED}")
    raise FileNotFoundError(f"no such folder, .npz or shard file: {spec} (expected {EXPECTED})")


def data_config(spec: str, *, limit: int | None = None, split: str = "test") -> DataConfig:
    """The :class:`~titok.data.build.DataConfig` of a data spelling (see :func:`resolve`; ``split``: Fashion-MNIST's
    when none is given), of its first ``limit`` images, with evaluation preprocessing (no random crop or flip)."""
    from titok.data.build import DataConfig

    source, path, split = resolve(spec, split)
    return DataConfig(
        source=source,  # type: ignore[arg-type]
        path=path,
        split=split,  # type: ignore[arg-type]
        random_crop=False,
        random_flip=False,
        limit=limit,
    )


def describe(cfg: DataConfig) -> str:
    """A canonical name of the data (for results and cache keys): ``fashion-mnist:SPLIT`` (with its folder when it
    is not Debian's), the absolute path of a folder or ``.npz``, a shard pattern made absolute."""
    if cfg.source == "fashion_mnist":
        return f"{FASHION_MNIST}:{cfg.split}" + (f" ({Path(cfg.path).resolve()})" if cfg.path else "")
    assert cfg.path is not None
    if cfg.source == "webdataset":
        return "::".join(os.path.abspath(part) for part in cfg.path.split("::"))
    return str(Path(cfg.path).resolve())


def source_files(cfg: DataConfig) -> list[Path]:
    """The files the data is read from (to notice when they change)."""
    if cfg.source == "fashion_mnist":
        from titok.data.datasets import FASHION_MNIST_DIR

        return sorted(Path(cfg.path or FASHION_MNIST_DIR).glob("*-ubyte.gz"))
    assert cfg.path is not None
    if cfg.source == "webdataset":
        from titok.data.webdataset import expand_shards

        return [Path(p) for p in expand_shards(cfg.path)]
    if cfg.source == "folder":
        from titok.data.files import find_images

        return find_images([cfg.path], [])
    return [Path(cfg.path)]
