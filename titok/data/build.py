"""A recipe's ``data`` section and the dataset it names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch.utils.data import Dataset

from titok.config import Config
from titok.data.datasets import FashionMNIST, ImageFolder
from titok.data.transforms import Preprocess


@dataclass(frozen=True)
class DataConfig(Config):
    """Where images come from. ``source``: Fashion-MNIST (Debian's package, or ``path`` holding its IDX files),
    a folder of images (class subfolders give labels), or webdataset tar shards (``path`` a file, a glob or a
    brace pattern)."""

    source: Literal["fashion_mnist", "folder", "webdataset"] = "fashion_mnist"
    path: str | None = None
    split: Literal["train", "test"] = "train"
    random_crop: bool = True
    random_flip: bool = True
    limit: int | None = None  # use only the first N items

    def __post_init__(self) -> None:
        if self.source != "fashion_mnist" and not self.path:
            raise ValueError(f"data.path is required for data.source={self.source!r}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"data.limit must be at least 1, got {self.limit}")


def build_dataset(cfg: DataConfig, image_size: int, *, train: bool = True) -> Dataset:
    """The map-style dataset of ``cfg`` at ``image_size``; ``train`` enables the configured random crop/flip."""
    preprocess = Preprocess(image_size, random_crop=train and cfg.random_crop, random_flip=train and cfg.random_flip)
    if cfg.source == "fashion_mnist":
        dataset: Dataset = FashionMNIST(cfg.split, preprocess, root=cfg.path)
    elif cfg.source == "folder":
        dataset = ImageFolder(cfg.path, preprocess)
    else:
        raise ValueError("webdataset shards are streamed, not indexed: use titok.data.webdataset")
    if cfg.limit is not None and cfg.limit < len(dataset):
        dataset = FirstItems(dataset, cfg.limit)
    return dataset


class FirstItems(Dataset):
    """The first ``n`` items of ``dataset``, indexed like it (plain or ``(index, seed)``)."""

    def __init__(self, dataset: Dataset, n: int) -> None:
        self.dataset, self.n = dataset, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item):
        return self.dataset[item]
