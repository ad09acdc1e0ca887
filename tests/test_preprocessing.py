"""One preprocessing everywhere: a file gives the same pixels and codes through every entry point; EXIF
orientation is applied; the public titok.load_images / model.preprocess give the model's input."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import build

import titok
from titok.cli import main
from titok.data.build import DataConfig, build_dataset
from titok.data.datasets import FashionMNIST
from titok.data.images import load_image
from titok.data.transforms import Preprocess
from titok.data.webdataset import ShardStream
from titok.eval.data import open_source


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth colour image with detail (so that resampling differences show)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)).astype(np.int16)
    return np.clip(big + rng.integers(-20, 21, big.shape), 0, 255).astype(np.uint8)


def _shard(path, png: bytes) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in (("000000.png", png), ("000000.cls", b"0")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_a_photo_gives_the_same_pixels_and_codes_through_every_entry_point(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(_photo(384, 512)).save(folder / "p.png")
    png = (folder / "p.png").read_bytes()
    _shard(tmp_path / "train-0000.tar", png)
    np.savez(tmp_path / "p.npz", arr_0=_photo(384, 512)[None])
    size = 32
    reference = load_image(folder / "p.png", size)  # tokenize / reconstruct / eval on files
    candidates = {
        "titok.load_images": titok.load_images(folder / "p.png", size)[0],
        "titok.load_images(PIL)": titok.load_images([Image.open(folder / "p.png")], size)[0],
        "eval folder": open_source(str(folder), size)[0][0][0],
        "eval npz": open_source(str(tmp_path / "p.npz"), size)[0][0][0],
        "training data, evaluation": build_dataset(DataConfig(source="folder", path=str(folder)), size, train=False)[0][
            0
        ],
        "webdataset": next(iter(ShardStream([str(tmp_path / "train-0000.tar")], Preprocess(size), seed=0)))[0],
        "training, no augmentation": Preprocess(size)(torch.from_numpy(_photo(384, 512)).permute(2, 0, 1), seed=3),
    }
    for name, image in candidates.items():
        assert torch.equal(image, reference), name
    # codes: `titok tokenize` and `titok pretokenize` agree bit for bit
    tok = build("titok_pixels_vq")
    tok.save_pretrained(tmp_path / "tok")
    assert main(["tokenize", str(tmp_path / "tok"), str(folder), "-o", str(tmp_path / "c.npz")]) == 0
    argv = ["pretokenize", str(tmp_path / "tok"), str(folder), "-o", str(tmp_path / "t"), "--num-workers", "0"]
    assert main(argv) == 0
    from titok.data.tokens import TokenDataset

    codes = np.load(tmp_path / "c.npz")["codes"]
    assert np.array_equal(TokenDataset(tmp_path / "t").codes[:], codes)
    assert np.array_equal(tok.tokenize(reference[None]).numpy(), codes)


def test_fashion_mnist_reads_as_its_png_files_do(tmp_path):
    raw = FashionMNIST("test").images[:6]
    for i, image in enumerate(raw):
        Image.fromarray(image.numpy()).save(tmp_path / f"{i}.png")
    source, _ = open_source("fashion-mnist:test", 32, limit=6)
    for i in range(6):
        assert torch.equal(source[i][0], load_image(tmp_path / f"{i}.png", 32))


def test_photos_are_turned_upright_by_their_exif_orientation(tmp_path):
    upright = _photo(48, 32)  # a portrait photo
    stored = np.ascontiguousarray(np.rot90(upright, -1))  # as a phone stores it: lying down, 32 high and 48 wide
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90 degrees clockwise to view" ... Pillow's exif_transpose undoes it
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=100)
    Image.fromarray(stored).save(tmp_path / "plain.jpg", quality=100)
    from titok.data.images import read_image

    turned = read_image(tmp_path / "phone.jpg", 16)
    assert turned.shape == (48, 32, 3)  # portrait again
    plain = read_image(tmp_path / "plain.jpg", 16)
    assert np.array_equal(turned, np.rot90(plain, 1)), "tag 8 is a quarter turn counter-clockwise"
    with Image.open(tmp_path / "phone.jpg") as image:  # a PIL image given to the API is turned too
        assert torch.equal(titok.load_images(image, 16)[0], load_image(tmp_path / "phone.jpg", 16))


def test_model_preprocess_gives_the_input_tokenize_takes(tmp_path):
    tok = build("titok_pixels_vq")
    Image.fromarray(_photo(40, 64)).save(tmp_path / "a.png")
    Image.fromarray(_photo(64, 40, seed=1)).convert("L").save(tmp_path / "b.png")
    x = tok.preprocess([tmp_path / "a.png", Image.open(tmp_path / "b.png")])
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert tok.tokenize(x).shape == (2, 4)
    assert torch.equal(x, titok.load_images([tmp_path / "a.png", tmp_path / "b.png"], 32))
    with pytest.raises(TypeError, match="file paths or PIL images"):
        tok.preprocess([np.zeros((4, 4, 3))])
    with pytest.raises(ValueError, match=r"not-an-image\.png"):
        (tmp_path / "not-an-image.png").write_bytes(b"text")
        titok.load_images(tmp_path / "not-an-image.png", 32)
