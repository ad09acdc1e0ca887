"""``titok tokenize / reconstruct --tokens K`` and ``titok tokenize --quality``: prefixes and ragged rows from the
shell, read back by ``titok detokenize`` and ``titok.load_codes``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_adaptive_length import _model
from tiny import build

import titok
from titok.cli import main
from titok.metrics.image import psnr


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("ordered_cli")
    _model(8).save_pretrained(root / "ordered")
    build("titok_2d").save_pretrained(root / "grid")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
    return root


def _run(*args) -> int:
    return main([*map(str, args), "--precision", "fp32"])  # as the Python API computes, for comparisons


def test_tokens_writes_prefixes_that_detokenize_and_reconstruct(ws, tmp_path, capsys):
    model, images = ws / "ordered", ws / "images"
    assert _run("tokenize", model, images, "-o", tmp_path / "full.npz") == 0
    assert _run("tokenize", model, images, "--tokens", 3, "-o", tmp_path / "k3.npz") == 0
    full, k3 = titok.load_codes(tmp_path / "full.npz"), titok.load_codes(tmp_path / "k3.npz")
    assert k3.values.shape == (5, 3) and np.array_equal(k3.values, full.values[:, :3])
    assert _run("detokenize", model, tmp_path / "k3.npz", "-o", tmp_path / "png") == 0
    assert len(list((tmp_path / "png").glob("*.png"))) == 5
    capsys.readouterr()
    assert _run("reconstruct", model, images, "--tokens", 3, "-o", tmp_path / "rec") == 0
    out = capsys.readouterr().out
    assert "from the first 3 of 8 tokens" in out and (tmp_path / "rec" / "psnr.csv").is_file()


@pytest.mark.parametrize("command", ["tokenize", "reconstruct"])
@pytest.mark.parametrize("k", [0, 9])
def test_tokens_out_of_range_names_the_value_and_n(ws, tmp_path, capsys, command, k):
    assert _run(command, ws / "ordered", ws / "images", "--tokens", k, "-o", tmp_path / "x.npz") == 2
    message = f"--tokens {k} is out of range: {ws / 'ordered'} has 8 tokens per image (give 1 to 8)"
    assert message in capsys.readouterr().err


def test_tokens_and_quality_need_a_1d_tokenizer(ws, tmp_path, capsys):
    assert _run("tokenize", ws / "grid", ws / "images", "--tokens", 2, "-o", tmp_path / "x.npz") == 2
    assert "--tokens needs a 1-D TiTok tokenizer" in capsys.readouterr().err
    assert _run("tokenize", ws / "grid", ws / "images", "--quality", "psnr=20", "-o", tmp_path / "x.npz") == 2
    assert "--quality needs a 1-D TiTok tokenizer with codes" in capsys.readouterr().err


def test_quality_writes_ragged_rows_that_detokenize(ws, tmp_path, capsys):
    model = titok.load(ws / "ordered")
    images = model.preprocess([ws / "images"])
    target = float(psnr(model.detokenize(model.tokenize(images)).clamp(0, 1), images).median())
    out = tmp_path / "q.npz"
    assert _run("tokenize", ws / "ordered", ws / "images", "--quality", f"psnr={target}", "-o", out) == 0
    printed = capsys.readouterr().out
    assert f"psnr >= {target:g}: " in printed and "tokens per image on average" in printed
    saved = titok.load_codes(out)
    expected = model.tokenize(images, quality={"psnr": target})
    assert saved.lengths.tolist() == expected.lengths.tolist()
    assert saved.values.shape == (5, int(expected.lengths.max()))
    assert _run("detokenize", ws / "ordered", out, "-o", tmp_path / "png") == 0
    decoded = torch.stack([titok.load_images([p], 32)[0] for p in sorted((tmp_path / "png").glob("*.png"))])
    for i, k in enumerate(saved.lengths.tolist()):
        want = model.detokenize(torch.from_numpy(saved.values[i : i + 1, :k])).clamp(0, 1)
        assert (decoded[i] - want[0]).abs().max() <= 1 / 255 + 1e-6


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--quality", "psnr"], "--quality psnr --candidates all: quality 'psnr': 'psnr' is not NAME=VALUE"),
        (["--quality", "sharpness=3"], "unknown quality target 'sharpness'"),
        (["--quality", "psnr=30", "--candidates", "1,x"], "--candidates must be all, pow2 or comma-separated lengths"),
        (["--quality", "psnr=30", "--candidates", "1,9"], r"candidate lengths must lie in [1, 8], got [1, 9]"),
    ],
)
def test_bad_quality_options(ws, tmp_path, capsys, options, message):
    assert _run("tokenize", ws / "ordered", ws / "images", *options, "-o", tmp_path / "x.npz") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_candidates_without_quality_is_an_error(ws, tmp_path, capsys):
    assert _run("tokenize", ws / "ordered", ws / "images", "--candidates", "pow2", "-o", tmp_path / "x.npz") == 2
    assert "--candidates pow2 sets the lengths --quality tries; give --quality too" in capsys.readouterr().err


def test_info_says_whether_a_model_is_ordered(ws, capsys):
    assert main(["info", str(ws / "ordered")]) == 0
    assert "yes: any prefix of the tokens decodes (tail cut)" in capsys.readouterr().out
    assert main(["info", str(ws / "grid")]) == 0
    assert "ordered              no" in capsys.readouterr().out


def test_tokens_and_quality_together_are_a_usage_error(ws, tmp_path):
    with pytest.raises(SystemExit):
        _run("tokenize", ws / "ordered", ws / "images", "--tokens", 2, "--quality", "psnr=3", "-o", tmp_path / "x.npz")


def test_detokenize_refuses_rows_longer_than_the_model(ws, tmp_path, capsys):
    np.savez(tmp_path / "long.npz", codes=np.zeros((1, 9), np.int64), lengths=np.array([2]))
    assert _run("detokenize", ws / "ordered", tmp_path / "long.npz", "-o", tmp_path / "o") == 2
    assert "this model reads 8 tokens per image (at most 8 (a prefix))" in capsys.readouterr().err
    np.savez(tmp_path / "short.npz", codes=np.zeros((1, 3), np.int64), lengths=np.array([2]))
    assert _run("detokenize", ws / "grid", tmp_path / "short.npz", "-o", tmp_path / "o") == 2
    assert "this model reads 16 tokens per image (all 16)" in capsys.readouterr().err
