"""Every command that reads a dataset reads the same sources: a folder, webdataset shards (every sample once, in shard
order), an .npz, fashion-mnist:SPLIT; shards give the same codes and scores as the same images in a folder."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from shards import write_shards
from tiny import build

from titok.cli import main
from titok.data.build import DataConfig, build_dataset
from titok.data.datasets import FashionMNIST
from titok.data.npz import NpzImages
from titok.data.shards import ShardSamples
from titok.data.sources import data_config, resolve
from titok.data.tokens import TokenDataset
from titok.data.transforms import Preprocess
from titok.data.webdataset import require_webdataset

QUIET = ["--device", "cpu"]
STATS = ["--extractor", "fmnist", "--workers", "0", "--no-progress", *QUIET]
EVAL = [*STATS, "--lpips", "none"]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def same_images(tmp_path_factory):
    """The same 11 PNG files (10 Fashion-MNIST test images of 3 classes, 1 corrupt) as a folder with class
    subfolders and as 2 shards holding them in the folder's order, with their classes as cls entries."""
    root = tmp_path_factory.mktemp("sources")
    data = FashionMNIST("test")
    for i in range(10):
        label = int(data.labels[i]) % 3
        (root / "folder" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.images[i].numpy()).save(root / "folder" / str(label) / f"{i:02d}.png")
    (root / "folder" / "2" / "zz.png").write_bytes(b"\x89PNG not really")
    files = sorted((root / "folder").rglob("*.png"))
    (root / "shards").mkdir()
    for s, part in enumerate((files[:6], files[6:])):
        with tarfile.open(root / "shards" / f"train-{s:04d}.tar", "w") as tar:
            for f in part:
                _add(tar, f"{f.parent.name}_{f.stem}.png", f.read_bytes())
                _add(tar, f"{f.parent.name}_{f.stem}.cls", f.parent.name.encode())
    build("titok_pixels_vq").save_pretrained(root / "tok")  # 32 px, 4 codes of 32
    return root


def test_one_spelling_names_each_source(tmp_path, same_images):
    shards, folder = same_images / "shards", same_images / "folder"
    np.savez(tmp_path / "a.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("hello")
    assert resolve("fashion-mnist") == ("fashion_mnist", None, "test")
    assert resolve("fashion-mnist:train") == ("fashion_mnist", None, "train")
    assert resolve(str(folder))[0] == "folder"
    assert resolve(str(shards))[0] == "webdataset"  # a folder of shards and no images
    assert resolve(str(shards / "train-0000.tar"))[0] == "webdataset"
    assert resolve(str(shards / "train-{0000..0001}.tar"))[0] == "webdataset"
    assert resolve(str(tmp_path / "a.npz"))[0] == "npz"
    with pytest.raises(ValueError, match="splits are 'train' and 'test', got 'val'"):
        resolve("fashion-mnist:val")
    with pytest.raises(ValueError, match=r"notes\.txt is a file that is neither an \.npz nor a \.tar"):
        resolve(str(tmp_path / "notes.txt"))
    with pytest.raises(FileNotFoundError, match=r"no such folder, \.npz or shard file"):
        resolve(str(tmp_path / "missing"))
    pattern = str(shards / "train-{0002..0003}.tar")
    with pytest.raises(FileNotFoundError, match=r"train-0002\.tar matches no shard file"):
        build_dataset(data_config(pattern), 32, train=False, ordered=True)


def test_ordered_shards_hold_every_sample_once_in_shard_order(tmp_path):
    paths = [str(p) for p in write_shards(tmp_path, 3, 4, corrupt=True)]
    samples = ShardSamples(f"{tmp_path}/train-{{0000..0002}}.tar", Preprocess(32))
    wds = require_webdataset().tariterators  # webdataset's own grouping, read sequentially
    with_images = []
    for path in paths:
        with open(path, "rb") as f:
            expected = list(wds.group_by_keys(wds.tar_file_expander([{"url": path, "stream": f}])))
        assert [k for k, s in zip(samples.keys, samples.index) if samples.shards[s[0]] == path] == [
            s["__key__"] for s in expected
        ]
        with_images += [s for s in expected if "png" in s]
    assert len(samples) == 3 * 6  # 4 images, an undecodable jpg and a sample without an image per shard
    fmnist = FashionMNIST("test", Preprocess(32))
    readable = [i for i in range(len(samples)) if not samples.keys[i].startswith(("broken", "textonly"))]
    for i, sample in zip(readable, with_images):
        image, label = samples.read(i)
        index = int(sample["__key__"])
        assert torch.equal(image, fmnist.read(index)[0]) and label == int(fmnist.labels[index])
    with pytest.raises(ValueError, match=r"sample broken0 in .*train-0000\.tar: cannot read image broken0\.jpg") as e:
        samples.read(4)
    assert "BytesIO" not in str(e.value)  # the entry is named, not the file object
    with pytest.raises(ValueError, match=r"sample textonly0 in .*train-0000\.tar: no image"):
        samples.read(5)
    image, label, skipped = samples[4]  # as training data: the next readable sample, counted
    assert skipped == 2 and torch.equal(image, samples.read(6)[0])


def test_damaged_shards_are_reported_and_the_rest_read(tmp_path):
    paths = write_shards(tmp_path, 2, 3)
    with tarfile.open(paths[1]) as tar:
        cut = [m for m in tar.getmembers() if m.name.endswith(".png")][1].offset_data + 10
    with open(paths[1], "r+b") as f:  # cut the second shard inside its second sample's image
        f.truncate(cut)
    (tmp_path / "train-0002.tar").write_bytes(b"\x1f\x8b" + bytes(600))  # gzip-like: not an uncompressed tar
    with tarfile.open(tmp_path / "train-0003.tar", "w") as tar:  # a label that is not a class id
        with tarfile.open(paths[0]) as first:
            _add(tar, "cat.png", first.extractfile("000000.png").read())
        _add(tar, "cat.cls", b"cat")
    samples = ShardSamples(str(tmp_path / "train-*.tar"), 32)
    assert len(samples) == 6
    with pytest.raises(ValueError, match=r"sample cat in .*train-0003\.tar: its cls entry is not an integer label"):
        samples.read(5)
    reasons = " ".join(reason for _, reason in samples.unlisted)
    assert "train-0001.tar: unreadable after 3 file(s)" in reasons
    assert "train-0002.tar: not a readable uncompressed tar file" in reasons
    with pytest.raises(ValueError, match=r"its png entry is truncated"):
        samples.read(4)
    assert samples.read(3)[0].shape == (3, 32, 32)


def test_an_npz_reads_its_labels_in_training_and_pretokenize(tmp_path, same_images):
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 30, 3), dtype=np.uint8)
    np.savez(tmp_path / "l.npz", arr_0=images, arr_1=np.array([2, 0, 1]))
    data = NpzImages(tmp_path / "l.npz", 16)
    assert [data.read(i)[1] for i in range(3)] == [2, 0, 1] and data[0][0].shape == (3, 16, 16)
    training = build_dataset(DataConfig(source="npz", path=str(tmp_path / "l.npz")), 16, seed=0)
    assert training[1].labels == 0 and training[1].images.shape == (3, 16, 16)
    argv = ["pretokenize", str(same_images / "tok"), str(tmp_path / "l.npz"), "-o", str(tmp_path / "t"), *QUIET]
    assert main([*argv, "--num-workers", "0"]) == 0
    assert TokenDataset(tmp_path / "t").labels[:].tolist() == [2, 0, 1]
    np.savez(tmp_path / "bad.npz", arr_0=images, arr_1=np.array([0.5, 1, 2]))
    with pytest.raises(ValueError, match=r"arr_1 is float64 \(3,\); expected 3 integer labels"):
        NpzImages(tmp_path / "bad.npz", 16)


def _pretokenize(root: Path, data: str, out: str) -> TokenDataset:
    argv = ["pretokenize", str(root / "tok"), data, "-o", str(root / out), "--num-workers", "0", *QUIET]
    assert main(argv) == 1  # the corrupt image is skipped and counted
    return TokenDataset(root / out)


def test_pretokenize_reads_shards_as_the_same_folder(same_images, capsys):
    folder = _pretokenize(same_images, str(same_images / "folder"), "t_folder")
    shards = _pretokenize(same_images, str(same_images / "shards" / "train-{0000..0001}.tar"), "t_shards")
    assert len(shards) == len(folder) == 10 and shards.meta.skipped == folder.meta.skipped == 1
    assert np.array_equal(shards.codes[:], folder.codes[:])
    assert np.array_equal(shards.labels[:], folder.labels[:]) and set(shards.labels[:].tolist()) == {0, 1, 2}
    assert shards.meta.data["source"] == "webdataset"
    missing = str(same_images / "shards" / "val-{0000..0001}.tar")
    argv = ["pretokenize", str(same_images / "tok"), missing, "-o", str(same_images / "t_none"), *QUIET]
    assert main(argv) == 2
    assert "val-0000.tar matches no shard file" in capsys.readouterr().err


def test_eval_recon_and_stats_read_shards_as_the_same_folder(same_images, capsys):
    reports = {}
    for name, data in (("folder", "folder"), ("shards", "shards/train-*.tar")):
        out = same_images / f"{name}.json"
        argv = ["eval", "recon", str(same_images / "tok"), str(same_images / data), "-o", str(out), *EVAL]
        assert main(argv) == 1  # the corrupt image: reported, skipped
        reports[name] = json.loads(out.read_text())
        assert "zz" in capsys.readouterr().err
        stats = same_images / f"{name}.npz"
        argv = ["eval", "stats", str(same_images / data), "--size", "32", "-o", str(stats), *STATS]
        assert main(argv) == 1
    folder, shards = reports["folder"], reports["shards"]
    assert folder["num_images"] == shards["num_images"] == 10
    assert len(folder["skipped"]) == len(shards["skipped"]) == 1
    values = [{m["name"]: m["value"] for m in r["metrics"] if m["value"] is not None} for r in (folder, shards)]
    assert "rFD-fmnist" in values[0] and values[0] == pytest.approx(values[1], rel=1e-9)
    with np.load(same_images / "folder.npz") as a, np.load(same_images / "shards.npz") as b:
        np.testing.assert_allclose(a["sigma"], b["sigma"], rtol=1e-12)
