"""Adaptive length: ``tokenize(images, quality=...)`` picks per image the smallest candidate length that meets the
target (checked against brute force), ragged rows decode, and bad quality specs are refused by name."""

from __future__ import annotations

import pytest
import torch
from tiny import TINY_CONFIGS

import titok
from titok.data import codes_file
from titok.metrics.image import psnr, ssim
from titok.models import adaptive
from titok.models.adaptive import Quality


def _model(n: int = 8, **overrides) -> titok.TiTok:
    """A tiny ordered tokenizer whose weights are large enough that every token changes the picture (at its
    initialisation they hardly do): PSNR then moves up and down with the length, not monotonically."""
    torch.manual_seed(0)
    model = titok.models.build_model(TINY_CONFIGS["titok_pixels_vq"].replace(ordered=True, num_tokens=n, **overrides))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0, 0.3)
    return model.eval()


def _brute(model, images: torch.Tensor, metric) -> torch.Tensor:
    """(N, B): every image's score from every prefix length, one length at a time."""
    codes = model.tokenize(images)
    n = codes.shape[1]
    return torch.stack([metric(model.detokenize(codes[:, :k]).clamp(0, 1), images) for k in range(1, n + 1)])


def _targets_between(scores: torch.Tensor) -> list[float]:
    """Targets halfway between two scores at least 1e-3 apart (so that rounding cannot flip a verdict), the ones
    nearest the median score first."""
    values = scores.flatten().sort().values
    middle = len(values) // 2
    gaps = [i for i in range(len(values) - 1) if values[i + 1] - values[i] > 1e-3]
    return [float(values[i] + values[i + 1]) / 2 for i in sorted(gaps, key=lambda i: abs(i - middle))]


def _target_between(scores: torch.Tensor) -> float:
    return _targets_between(scores)[0]


def _smallest_passing(scores: torch.Tensor, target: float, ks: list[int], higher: bool = True) -> list[int | None]:
    passing = scores >= target if higher else scores <= target
    return [next((k for k in ks if passing[k - 1, i]), None) for i in range(scores.shape[1])]


@pytest.mark.parametrize("batch_size", [5, 64])  # 64: a learned tail decodes every length in one call
@pytest.mark.parametrize("tail", ["cut", "learned"])
@pytest.mark.parametrize("candidates", ["all", "pow2", [2, 3, 7]])
def test_quality_picks_the_smallest_passing_length(tail, candidates, batch_size):
    model = _model(tail=tail)
    images = torch.rand(7, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    scores = _brute(model, images, psnr)
    ks = adaptive.candidate_lengths(8, candidates).tolist()
    # a target that some images never meet, and the others at different lengths
    target, expected = next(
        (t, e)
        for t in _targets_between(scores)
        if None in (e := _smallest_passing(scores, t, ks)) and len(set(e) - {None}) > 1
    )
    out = model.tokenize(images, quality=Quality(psnr=target), candidates=candidates, batch_size=batch_size)
    assert out.lengths.tolist() == [e or ks[-1] for e in expected]
    assert out.met.tolist() == [e is not None for e in expected]
    picked = scores[out.lengths - 1, torch.arange(7)]
    torch.testing.assert_close(out.scores["psnr"], picked, atol=1e-4, rtol=0)
    full = model.tokenize(images)
    for row, code_row, k in zip(out.codes, full, out.lengths.tolist()):
        assert torch.equal(row[:k], code_row[:k]) and (row[k:] == adaptive.PAD).all()
    assert out.codes.shape[1] == int(out.lengths.max())


def test_several_targets_must_all_be_met():
    model = _model()
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    by_psnr, by_ssim = _brute(model, images, psnr), _brute(model, images, ssim)
    t_psnr, t_ssim = _target_between(by_psnr), _target_between(by_ssim)
    both = (by_psnr >= t_psnr) & (by_ssim >= t_ssim)
    expected = [next((k for k in range(1, 9) if both[k - 1, i]), 8) for i in range(6)]
    out = model.tokenize(images, quality={"psnr": t_psnr, "ssim": t_ssim})
    assert out.lengths.tolist() == expected and set(out.scores) == {"psnr", "ssim"}


def test_an_lpips_target_uses_the_perceptual_network(monkeypatch):
    class MeanAbs(torch.nn.Module):  # stands in for LPIPS (whose backbone weights are not downloaded here)
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, y, normalize=True):
            return (x - y).abs().flatten(1).mean(1)

    monkeypatch.setattr("titok.metrics.perceptual.load_lpips", lambda net, device: (MeanAbs(), ""))
    model = _model()
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    scores = _brute(model, images, lambda x, y: (x - y).abs().flatten(1).mean(1).double())
    target = _target_between(scores)
    out = model.tokenize(images, quality=f"lpips={target}")
    assert out.lengths.tolist() == [e or 8 for e in _smallest_passing(scores, target, list(range(1, 9)), False)]
    monkeypatch.setattr("titok.metrics.perceptual.load_lpips", lambda net, device: (None, "no weights at /x"))
    with pytest.raises(ValueError, match="an LPIPS target needs LPIPS-vgg, which cannot run here: no weights at /x"):
        model.tokenize(images, quality={"lpips": 0.2})


def test_ragged_rows_decode_as_their_prefixes():
    for tail in ("cut", "learned"):
        model = _model(tail=tail)
        codes = model.tokenize(torch.rand(4, 3, 32, 32))
        lengths = torch.tensor([3, 1, 8, 3])
        padded = codes.clone()
        padded[torch.arange(8) >= lengths[:, None]] = adaptive.PAD
        images = model.detokenize(padded, lengths=lengths)
        for i, k in enumerate(lengths.tolist()):
            torch.testing.assert_close(images[i : i + 1], model.detokenize(codes[i : i + 1, :k]), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"lengths must be \(B,\) = \(4,\) in \[1, 8\]"):
        model.detokenize(padded, lengths=torch.tensor([3, 0, 8, 3]))
    assert adaptive.PAD == codes_file.PAD


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "needs at least one of psnr, ssim, lpips"),
        ("psnr", r"'psnr' is not NAME=VALUE \(e\.g\. psnr=30\)"),
        ("psnr=thirty", "psnr='thirty' is not a number"),
        ("pnsr=30", "unknown quality target 'pnsr'"),
        ({"psnr": float("nan")}, "quality psnr must be a finite number, got nan"),
        ({"ssim": 2}, r"quality ssim must lie in \(-1, 1\], got 2"),
        ({"lpips": -0.1}, r"quality lpips is a distance \(at least 0\), got -0.1"),
        ("lpips=0.1,lpips_net=resnet", "unknown LPIPS network 'resnet'"),
        (30, "quality must be a Quality, a dict or a 'psnr=30'-style string, got int"),
    ],
)
def test_bad_quality_specs_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        _model(4).tokenize(torch.rand(1, 3, 32, 32), quality=spec)


def test_bad_adaptive_calls():
    model, images = _model(4), torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="candidate lengths must lie in \\[1, 4\\], got \\[0, 2\\]"):
        model.tokenize(images, quality="psnr=30", candidates=[0, 2])
    with pytest.raises(ValueError, match="candidate lengths 'some'"):
        model.tokenize(images, quality="psnr=30", candidates="some")
    with pytest.raises(ValueError, match=r"num_tokens .* or quality .*, not both"):
        model.tokenize(images, num_tokens=2, quality="psnr=30")
    grid = titok.models.build_model(TINY_CONFIGS["titok_2d"])
    with pytest.raises(ValueError, match="a 2-D tokenizer decodes all 16 of its tokens"):
        grid.tokenize(images, quality="psnr=30")
    assert Quality.parse("psnr=30, ssim=0.5").describe() == "psnr >= 30, ssim >= 0.5"
