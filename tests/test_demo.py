"""``titok demo``: the grid, the printed codes, PSNR, FD and timings."""

from __future__ import annotations

import torch
from PIL import Image
from tiny import tiny_titok

from titok.cli import main
from titok.models import GeneratorConfig, build_model


def _demo_args(tmp_path, ordered: bool = False) -> list[str]:
    torch.manual_seed(0)
    build_model(tiny_titok(ordered=ordered)).save_pretrained(tmp_path / "tok")
    gen = GeneratorConfig(
        codebook_size=32, num_tokens=4, num_classes=10, hidden_size=16, depth=1, num_heads=2, mlp_dim=32
    )
    build_model(gen).save_pretrained(tmp_path / "gen")
    out = tmp_path / "demo.png"
    return [
        "demo",
        "--out",
        str(out),
        "--tokenizer",
        str(tmp_path / "tok"),
        "--generator",
        str(tmp_path / "gen"),
        "--images",
        "40",
        "--samples-per-class",
        "4",
    ]


def test_demo_with_given_models(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(_demo_args(tmp_path)) == 0
    captured = capsys.readouterr()
    printed = captured.out
    phases = [
        "demo [1/5] loading the tokenizer and the generator",
        "demo [2/5] reconstructing 40 held-out test images",
        "demo [3/5] sampling 40 images (4 of each of 10 classes)",
        "demo [4/5] scoring: FD-fmnist",
        f"demo [5/5] drawing the grid: {out}",
    ]
    positions = [captured.err.find(phase) for phase in phases]  # on stderr, in this order
    assert -1 not in positions and positions == sorted(positions), captured.err
    assert "PSNR" in printed and "rFD-fmnist" in printed and "gFD-fmnist" in printed and "seconds:" in printed
    codes = printed.split("codes: ")[1].splitlines()[0].split()
    assert len(codes) == 4 and all(0 <= int(c) < 32 for c in codes)
    grid = Image.open(out)
    # 10 classes; original, recon, 4 samples; row names up to 14 characters ("reconstruction") on the left
    assert grid.size == (6 * 14 + 12 + 10 * (32 * 3 + 4), 22 + 6 * (32 * 3 + 4))
    assert "first k codes" not in printed  # a tokenizer not trained ordered: the grid as it always was


def test_demo_of_an_ordered_tokenizer_shows_prefixes(tmp_path, capsys):
    from titok.data.labelled import CAPTION

    assert main(_demo_args(tmp_path, ordered=True)) == 0
    printed = capsys.readouterr().out
    line = next(x for x in printed.splitlines() if x.startswith("ordered tokenizer, PSNR (dB) from the first k codes"))
    assert [part.split(":")[0] for part in line.split("codes: ")[1].split(", ")] == ["1", "2", "4"]  # N = 4
    # one more row, captioned above (k = 1, 2, 4); the row name "from k codes" is shorter than "reconstruction"
    assert Image.open(tmp_path / "demo.png").size == (6 * 14 + 12 + 10 * 100, 22 + 7 * 100 + CAPTION)


def test_demo_held_out_images_without_the_debian_package(monkeypatch, tmp_path):
    from titok import demo

    monkeypatch.setattr(demo, "FASHION_MNIST_DIR", tmp_path)  # as if the package were not installed
    images, labels, source = demo.held_out_images(1000)
    assert images.shape == (1000, 28, 28) and images.dtype == torch.uint8
    assert "shipped" in source and set(labels.tolist()) == set(range(10))


def test_the_demo_assets_agree_with_the_test_split():
    from titok import demo
    from titok.data.transforms import Preprocess
    from titok.metrics.extractors import fmnist
    from titok.metrics.fid import Statistics, frechet_distance

    raw, _, _ = demo.held_out_images(1000)
    mine = demo._features(fmnist(), torch.stack([Preprocess(32)(x[None]) for x in raw])).compute()
    ref = Statistics.load(demo.TEST_STATS)
    assert ref.count == 10_000 and ref.meta["extractor"] == "fmnist-cnn"
    assert frechet_distance(mine.mu, mine.sigma, ref.mu, ref.sigma) < 0.5  # 1,000 of its own images


def test_the_prefix_row_comes_from_the_shipped_ordered_tokenizer_beside_the_shipped_one(tmp_path, monkeypatch):
    from titok import demo, load

    build_model(tiny_titok()).save_pretrained(tmp_path / "fixed")
    build_model(tiny_titok(ordered=True)).save_pretrained(tmp_path / "ordered")
    monkeypatch.setattr(demo, "TOKENIZER", tmp_path / "fixed")
    fixed = load(tmp_path / "fixed")
    monkeypatch.setattr(demo, "ORDERED_TOKENIZER", tmp_path / "ordered")
    chosen = demo._prefix_tokenizer(fixed, tmp_path / "fixed")  # the shipped (fixed) tokenizer: its ordered twin
    assert chosen is not None and chosen.config.ordered
    assert demo._prefix_tokenizer(fixed, tmp_path / "other") is None  # another fixed tokenizer: no row
    ordered = load(tmp_path / "ordered")
    assert demo._prefix_tokenizer(ordered, tmp_path / "ordered") is ordered
    monkeypatch.setattr(demo, "ORDERED_TOKENIZER", tmp_path / "missing")
    assert demo._prefix_tokenizer(fixed, tmp_path / "fixed") is None  # not installed: no row
