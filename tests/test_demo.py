"""``titok demo``: the grid, the printed codes, PSNR, FD and timings."""

from __future__ import annotations

import torch
from PIL import Image
from tiny import tiny_titok

from titok.cli import main
from titok.models import GeneratorConfig, build_model


def test_demo_with_given_models(tmp_path, capsys):
    torch.manual_seed(0)
    build_model(tiny_titok()).save_pretrained(tmp_path / "tok")
    gen = GeneratorConfig(
        codebook_size=32, num_tokens=4, num_classes=10, hidden_size=16, depth=1, num_heads=2, mlp_dim=32
    )
    build_model(gen).save_pretrained(tmp_path / "gen")
    out = tmp_path / "demo.png"
    args = [
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
    assert main(args) == 0
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
