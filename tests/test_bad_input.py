"""Bad input to the Python API: clear errors that name the problem."""

from __future__ import annotations

import pytest
import torch
from tiny import build


@pytest.fixture(scope="module")
def tokenizer():
    return build("titok_pixels_vq")


@pytest.mark.parametrize(
    "images,message",
    [
        (torch.rand(3, 32, 32), r"shape \(B, 3, H, W\), got \(3, 32, 32\)"),
        (torch.rand(2, 1, 32, 32), r"shape \(B, 3, H, W\), got \(2, 1, 32, 32\)"),
        (torch.rand(2, 3, 64, 64), r"must be 32x32 for this model, got 64x64"),
        (torch.randint(0, 255, (2, 3, 32, 32)), r"float tensor in \[0, 1\], got dtype torch.int64"),
        (torch.rand(2, 3, 32, 32) * 255, r"must be in \[0, 1\], got values in"),
        ([[0.0]], r"must be a torch.Tensor, got list"),
    ],
)
def test_bad_images(tokenizer, images, message):
    with pytest.raises(ValueError, match=message):
        tokenizer.tokenize(images)


@pytest.mark.parametrize(
    "codes,message",
    [
        (torch.tensor([[0, 1, 2, 32]]), r"code 32 is out of range: codes must lie in \[0, 32\)"),
        (torch.tensor([[0, 1, -1, 3]]), r"code -1 is out of range"),
        (torch.zeros(2, 5, dtype=torch.long), r"codes must have shape \(B, k\) with 1 <= k <= 4, got \(2, 5\)"),
        (torch.zeros(4, dtype=torch.long), r"codes must have shape \(B, k\) with 1 <= k <= 4, got \(4,\)"),
        (torch.zeros(2, 4), r"integer tensor, got dtype torch.float32"),
    ],
)
def test_bad_codes(tokenizer, codes, message):
    with pytest.raises(ValueError, match=message):
        tokenizer.detokenize(codes)


def test_bad_latents(tokenizer):
    with pytest.raises(ValueError, match=r"latents must have shape \(B, k, 8\) with 1 <= k <= 4, got \(2, 4, 7\)"):
        tokenizer.decode(torch.zeros(2, 4, 7))


def test_vqgan_image_sides(tokenizer):
    vqgan = build("vqgan")  # downsamples 2x
    assert vqgan.tokenize(torch.rand(1, 3, 6, 4)).shape == (1, 6)
    with pytest.raises(ValueError, match="multiples of 2 for this VQGAN, got 5x4"):
        vqgan.tokenize(torch.rand(1, 3, 5, 4))


@pytest.mark.parametrize("name", ["bert", "uvit"])
def test_generator_bad_input(name):
    model = build(name)  # 16 codes, 3 classes, 4 tokens
    codes = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"class id 3 is out of range: this generator knows classes \[0, 3\)"):
        model.logits(codes, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="labels must be 2 integer class ids"):
        model.logits(codes, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"code 17 is out of range"):
        model.logits(torch.full((2, 4), 17), None)
