"""Map-style image datasets: Fashion-MNIST (Debian's ``dataset-fashion-mnist``) and folders of image files (and
the base of those of :mod:`titok.data.npz` and :mod:`titok.data.shards`).

Items are ``(image, label, skipped)``: image (3, S, S) float32 in [0, 1] after :class:`Preprocess`, label int
(-1 when there is none), and the number of unreadable files passed over to serve this item (0 almost always; it
travels with the batch, so a training loop can count skips made in its DataLoader workers). Indexing takes
``(index, seed)`` pairs from :class:`ResumableSampler`, or a plain index.
"""

from __future__ import annotations

import abc
import gzip
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from titok.data.batch import LabeledBatch
from titok.data.images import IMAGE_EXTENSIONS, find_images, read_image
from titok.data.transforms import Preprocess

logger = logging.getLogger(__name__)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (gzipped or not) as a numpy array: uint8 images (N, H, W) or labels (N,)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims}, but the file holds {body.size} values")
    return body.reshape(dims)


class IndexedImages(Dataset, abc.ABC):
    """A map-style dataset of images: :meth:`raw` reads item ``index``'s pixels and label; :meth:`read` gives it
    with evaluation preprocessing; indexing gives training items, an unreadable one replaced by the next readable."""

    def __init__(self, preprocess: Preprocess) -> None:
        self.preprocess = preprocess

    def __getitem__(self, item: int | tuple[int, int]) -> LabeledBatch:
        """One item: (image, label, skipped), collated into an :class:`~titok.data.batch.LabeledBatch`."""
        index, seed = item if isinstance(item, tuple) else (item, None)
        return LabeledBatch(*self.load(index, seed))

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def raw(self, index: int) -> tuple[np.ndarray | torch.Tensor, int]:
        """Item ``index`` before preprocessing, as :class:`Preprocess` takes it, and its label (-1: none); raises
        ``ValueError`` naming the item if it cannot be read."""

    def read(self, index: int) -> tuple[torch.Tensor, int]:
        """Item ``index`` with evaluation preprocessing (resize, center crop) and its label; ``ValueError`` naming
        the item if it cannot be read."""
        array, label = self.raw(index)
        return self.preprocess(array), label

    def load(self, index: int, seed: int | None) -> tuple[torch.Tensor, int, int]:
        """Item ``index`` preprocessed with augmentation ``seed``: (image, label, skipped). An unreadable item is
        logged and the next readable one served instead; ``skipped`` counts those passed over."""
        for attempt in range(len(self)):
            try:
                array, label = self.raw((index + attempt) % len(self))
            except ValueError as e:
                logger.warning("skipped unreadable image: %s", e)
                continue
            return self.preprocess(array, seed), label, attempt
        raise ValueError(f"none of the {len(self)} items of the dataset is a readable image")


class FashionMNIST(IndexedImages):
    """Fashion-MNIST, 60,000 training and 10,000 test images of 10 classes, grayscale -> RGB."""

    classes = FASHION_MNIST_CLASSES

    def __init__(self, split: str = "train", preprocess: Preprocess | None = None, root: str | Path | None = None):
        super().__init__(preprocess or Preprocess(32))
        if split not in ("train", "test"):
            raise ValueError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
        root = Path(root or FASHION_MNIST_DIR)
        prefix = "train" if split == "train" else "t10k"
        images, labels = root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"
        if not images.is_file():
            raise FileNotFoundError(
                f"Fashion-MNIST not found at {images}: install Debian's package "
                "(`apt-get install dataset-fashion-mnist`) or pass root= with the four IDX files"
            )
        self.images = torch.from_numpy(read_idx(images).copy())  # (N, 28, 28) uint8
        self.labels = torch.from_numpy(read_idx(labels).astype(np.int64))
        if len(self.images) != len(self.labels):
            raise ValueError(f"{images} and {labels} disagree on the number of items")

    def __len__(self) -> int:
        return len(self.images)

    def raw(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index][None], int(self.labels[index])


class ImageFolder(IndexedImages):
    """Image files under ``root``; with class subfolders, each subfolder is a class (sorted names -> 0, 1, ...).

    A file that cannot be read is logged and the next readable file is served in its place (the item's ``skipped``
    count says how many were passed over), so one corrupt file never stops a long run (:meth:`read` raises
    instead). FIFOs, link loops and folders that cannot be listed are left out and logged (see
    :func:`~titok.data.files.find_images`). A folder with no images is an error.
    """

    def __init__(self, root: str | Path, preprocess: Preprocess) -> None:
        super().__init__(preprocess)
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"no such folder: {root}")
        self.unlisted: list[tuple[Path, str]] = []  # what the search reported and left out
        files = find_images([root], self.unlisted)
        for _, reason in self.unlisted:
            logger.warning("left out of the dataset: %s", reason)
        if not files:
            raise ValueError(f"{root} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        subdirs = sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1})
        self.classes = subdirs if subdirs and all(len(p.relative_to(root).parts) > 1 for p in files) else []
        lookup = {name: i for i, name in enumerate(self.classes)}
        self.files = files
        self.labels = [lookup[p.relative_to(root).parts[0]] if self.classes else -1 for p in files]

    def __len__(self) -> int:
        return len(self.files)

    def raw(self, index: int) -> tuple[np.ndarray, int]:
        return read_image(self.files[index], self.preprocess.size), self.labels[index]
