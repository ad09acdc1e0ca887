"""The ``titok`` command: tokenize, detokenize, reconstruct and info on a tiny saved model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny import build

from titok.cli import main


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    build("titok_pixels_vq").save_pretrained(root / "model")
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(images / "a.png")
    Image.fromarray(rng.integers(0, 255, (50, 30), dtype=np.uint8)).save(images / "sub" / "b.jpg")  # grayscale
    Image.fromarray(rng.integers(0, 255, (32, 32, 4), dtype=np.uint8)).save(images / "c.png")  # RGBA
    (images / "corrupt.png").write_bytes(b"\x89PNG but not really")
    return root


def test_help_lists_the_subcommands():
    out = subprocess.run([sys.executable, "-m", "titok.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("tokenize", "detokenize", "reconstruct", "info"):
        assert command in out.stdout


def test_tokenize_skips_the_corrupt_file_and_does_the_rest(workspace, capsys):
    out = workspace / "codes.npz"
    status = main(["tokenize", str(workspace / "model"), str(workspace / "images"), "-o", str(out), "--device", "cpu"])
    assert status == 1
    assert "corrupt.png" in capsys.readouterr().err
    with np.load(out) as data:
        assert data["codes"].shape == (3, 4) and data["codes"].dtype == np.int64
        assert [Path(f).name for f in data["files"]] == ["a.png", "c.png", "b.jpg"]
        assert str(data["model"]) == str(workspace / "model")


def test_detokenize_writes_one_png_per_row(workspace):
    codes = workspace / "codes2.npz"
    main(["tokenize", str(workspace / "model"), str(workspace / "images" / "a.png"), "-o", str(codes)])
    out = workspace / "decoded"
    assert main(["detokenize", str(workspace / "model"), str(codes), "-o", str(out)]) == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["00000_a.png"]
    assert Image.open(pngs[0]).size == (32, 32)


def test_reconstruct_writes_pairs_and_psnr(workspace, capsys):
    out = workspace / "recon"
    status = main(["reconstruct", str(workspace / "model"), str(workspace / "images"), "-o", str(out)])
    assert status == 1  # the corrupt file
    assert len(list(out.glob("*.png"))) == 3
    # original | reconstruction, 32 px enlarged 4 times (nearest neighbour) in 2 px margins, under a label row
    pair = np.asarray(Image.open(sorted(out.glob("*.png"))[0]).convert("RGB"))
    assert pair.shape == (22 + 132, 2 * 132, 3)
    header = pair[:22]
    assert (header < 128).any() and (header > 128).any()  # dark text on white: the labels
    tile = pair[24 : 24 + 128, 2 : 2 + 128]
    assert (tile == tile[::4, ::4].repeat(4, 0).repeat(4, 1)).all()  # each pixel is a 4x4 block
    lines = (out / "psnr.csv").read_text().splitlines()
    assert lines[0] == "file,psnr_db" and len(lines) == 4
    assert "mean PSNR" in capsys.readouterr().out
    args = ["reconstruct", str(workspace / "model"), str(workspace / "images" / "a.png"), "-o", str(out / "s1")]
    assert main([*args, "--scale", "1"]) == 0
    assert Image.open(next((out / "s1").glob("*.png"))).size == (2 * 36, 22 + 36)
    assert main([*args, "--scale", "0"]) == 2
    assert "--scale: the scale must be a whole number of at least 1, got 0" in capsys.readouterr().err


def test_codes_of_another_model_are_rejected(workspace, capsys):
    bad = workspace / "bad.npz"
    np.savez(bad, codes=np.zeros((2, 7), dtype=np.int64))
    assert main(["detokenize", str(workspace / "model"), str(bad), "-o", str(workspace / "x")]) == 2
    assert "this model reads 4 tokens per image" in capsys.readouterr().err


def test_info(workspace, capsys):
    assert main(["info", str(workspace / "model")]) == 0
    out = capsys.readouterr().out
    assert "tokens per image" in out and "32 x 8" in out
    assert main(["info", "titok_l32", "--json"]) == 0
    assert '"parameters": 641054735' in capsys.readouterr().out


def test_bad_model_and_empty_folder(workspace, tmp_path, capsys):
    assert main(["info", str(tmp_path / "nothing")]) == 2
    assert "is not a file, a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["tokenize", str(workspace / "model"), str(tmp_path / "empty"), "-o", str(tmp_path / "c.npz")]) == 2
    assert "no image files found" in capsys.readouterr().err
