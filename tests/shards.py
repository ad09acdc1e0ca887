"""Writing small webdataset tar shards of Fashion-MNIST images for tests."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from PIL import Image

from titok.data.datasets import FashionMNIST


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(root: Path, shards: int, per_shard: int, *, corrupt: bool = False, payload: int = 0) -> list[Path]:
    """``shards`` tar files ``train-NNNN.tar`` of ``per_shard`` Fashion-MNIST test images (28x28 PNG + cls). With
    ``corrupt``, each shard also holds an undecodable jpg and a sample without an image; with ``payload``, every
    sample also carries that many bytes of other data (a ``bin`` entry), as large real samples do."""
    data = FashionMNIST("test")
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(shards):
        path = root / f"train-{s:04d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(per_shard):
                index = (s * per_shard + i) % len(data.images)
                buf = io.BytesIO()
                Image.fromarray(data.images[index].numpy()).save(buf, format="PNG")
                _add(tar, f"{index:06d}.png", buf.getvalue())
                _add(tar, f"{index:06d}.cls", str(int(data.labels[index])).encode())
                if payload:
                    _add(tar, f"{index:06d}.bin", bytes([index % 256]) * payload)
            if corrupt:
                _add(tar, f"broken{s}.jpg", b"not a jpeg")
                _add(tar, f"textonly{s}.txt", b"no image here")
        paths.append(path)
    return paths
