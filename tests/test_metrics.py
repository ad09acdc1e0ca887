"""Fréchet distance, streamed statistics, Inception Score, PSNR/SSIM and codebook usage against known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from titok.metrics.codebook import CodebookUsage
from titok.metrics.fid import FeatureStats, InceptionScore, Statistics, frechet_distance
from titok.metrics.image import psnr, ssim


def _gaussian(rng: np.random.Generator, d: int) -> tuple[np.ndarray, np.ndarray]:
    a = rng.standard_normal((d, d))
    return rng.standard_normal(d), a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_closed_form_for_diagonal_covariances():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 1) ** 2  # |dmu|^2 + sum (sqrt a - sqrt b)^2
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, abs=1e-12)


def test_frechet_distance_matches_scipy_sqrtm_on_random_gaussians():
    from scipy import linalg

    rng = np.random.default_rng(0)
    for d in (2, 16, 64):
        (mu1, s1), (mu2, s2) = _gaussian(rng, d), _gaussian(rng, d)
        covmean = linalg.sqrtm(s1 @ s2).real
        expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_torch_fidelity():
    metric_fid = pytest.importorskip("torch_fidelity.metric_fid")
    rng = np.random.default_rng(1)
    (mu1, s1), (mu2, s2) = _gaussian(rng, 32), _gaussian(rng, 32)
    theirs = metric_fid.fid_statistics_to_metric({"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2}, False)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(theirs["frechet_inception_distance"], rel=1e-9)


def test_frechet_distance_of_identical_and_singular_statistics_is_zero():
    x = torch.randn(20, 50, dtype=torch.float64)  # 20 samples of 50-d features: a singular covariance
    stats = FeatureStats(50)
    stats.update(x)
    s = stats.compute()
    # exactly 0 in exact arithmetic; the square roots of the ~1e-15 null-space eigenvalues leave ~1e-6 of ~50
    assert np.trace(s.sigma) > 10
    assert frechet_distance(s.mu, s.sigma, s.mu, s.sigma) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match=r"means \(D,\) and covariances"):
        frechet_distance(s.mu, s.sigma, s.mu[:3], s.sigma[:3, :3])


def test_streamed_statistics_equal_numpy_and_merge_exactly():
    x = torch.randn(301, 8, dtype=torch.float64) * 3 + 5
    whole = FeatureStats(8)
    for chunk in x.split(64):
        whole.update(chunk)
    first, second = FeatureStats(8), FeatureStats(8)
    first.update(x[:100])
    second.update(x[200:])
    second.update(x[100:200])  # order does not matter
    merged = first.merge(second).compute()
    ours = whole.compute()
    np.testing.assert_allclose(ours.mu, x.numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(ours.sigma, np.cov(x.numpy(), rowvar=False), rtol=1e-10)
    np.testing.assert_allclose(merged.mu, ours.mu, rtol=1e-12)
    np.testing.assert_allclose(merged.sigma, ours.sigma, rtol=1e-10)
    assert merged.count == ours.count == 301
    with pytest.raises(ValueError, match=r"shape \(B, 8\)"):
        whole.update(torch.zeros(2, 7))


def test_statistics_round_trip_with_metadata(tmp_path):
    s = Statistics(np.arange(3.0), np.eye(3), 10, {"extractor": "x", "resolution": "32"})
    s.save(tmp_path / "s.npz")
    back = Statistics.load(tmp_path / "s.npz")
    assert back.count == 10 and back.meta == s.meta
    np.testing.assert_array_equal(back.sigma, s.sigma)
    np.savez(tmp_path / "plain.npz", mu=np.zeros(3), sigma=np.eye(3))  # pytorch-fid's layout: no metadata
    assert Statistics.load(tmp_path / "plain.npz").meta == {}
    np.savez(tmp_path / "bad.npz", m=np.zeros(3))
    with pytest.raises(ValueError, match="holds no 'mu' and 'sigma'"):
        Statistics.load(tmp_path / "bad.npz")


def test_inception_score_of_a_uniform_classifier_is_one():
    score = InceptionScore(num_classes=7)
    score.update(torch.zeros(50, 7), torch.arange(50))
    mean, std = score.compute()
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_a_confident_balanced_classifier_is_the_class_count():
    labels = torch.arange(100) % 5
    score = InceptionScore(num_classes=5)
    score.update(torch.nn.functional.one_hot(labels, 5).double() * 100, torch.arange(100))
    assert score.compute()[0] == pytest.approx(5.0, rel=1e-9)


def test_inception_score_matches_torch_fidelity_and_merges():
    metric_isc = pytest.importorskip("torch_fidelity.metric_isc")
    logits = torch.randn(200, 12, dtype=torch.float64) * 2
    theirs = metric_isc.isc_features_to_metric(logits, splits=10, shuffle=False)
    whole = InceptionScore(12)
    whole.update(logits, torch.arange(200))
    parts = [InceptionScore(12) for _ in range(2)]
    parts[0].update(logits[:77], torch.arange(77))
    parts[1].update(logits[77:], torch.arange(77, 200))
    for mean, std in (whole.compute(), parts[0].merge(parts[1]).compute()):
        assert mean == pytest.approx(theirs["inception_score_mean"], rel=1e-9)
        assert std == pytest.approx(theirs["inception_score_std"], rel=1e-6)


def test_inception_score_never_drops_below_one():
    # identical predictions: the KL term is 0, and rounding used to make it -2e-16 (a score of 0.9999999999999998)
    for seed in range(20):
        row = torch.randn(1, 10, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3
        score = InceptionScore(10)
        score.update(row.repeat(30, 1), torch.arange(30))
        mean, std = score.compute()
        assert mean >= 1.0 and mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_splits_count_only_the_samples_scored():
    # samples 10-19 of 100 are missing (unreadable): the 90 others form the 10 splits, as if they were all there was
    logits = torch.randn(100, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    kept = torch.cat([torch.arange(10), torch.arange(20, 100)])
    with_gap, alone = InceptionScore(6), InceptionScore(6)
    with_gap.update(logits[kept[45:]], kept[45:])  # batches in any order
    with_gap.update(logits[kept[:45]], kept[:45])
    alone.update(logits[kept], torch.arange(90))
    for a, b in zip(with_gap.compute(), alone.compute()):
        assert a == pytest.approx(b, rel=1e-12)
    few = InceptionScore(6)
    few.update(logits[:9], torch.arange(9))
    with pytest.raises(ValueError, match="needs 10 samples or more, got 9"):
        few.compute()


def test_psnr_known_value():
    x = torch.full((2, 3, 8, 8), 0.5)
    assert torch.allclose(psnr(x + 0.1, x), torch.tensor([20.0, 20.0], dtype=torch.float64))  # MSE 0.01


def test_ssim_known_values():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))
    # constant images: only the luminance term is left, (2ab + C1) / (a^2 + b^2 + C1)
    a, b, c1 = 0.2, 0.7, 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim(torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b)).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 40, 48, generator=g)
    y = (x + 0.2 * torch.randn(1, 3, 40, 48, generator=g)).clamp(0, 1)
    theirs = metrics.structural_similarity(
        x[0].double().numpy(),
        y[0].double().numpy(),
        channel_axis=0,
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert ssim(x, y).item() == pytest.approx(theirs, abs=1e-6)


def test_codebook_usage_and_entropy():
    usage = CodebookUsage(8)
    usage.update(torch.tensor([[0, 1], [2, 3]]))
    usage.merge(CodebookUsage(8))
    assert usage.usage() == 0.5 and usage.entropy() == pytest.approx(2.0)
    usage.update(torch.tensor([0, 0, 0, 0]))  # p = (5/8, 1/8, 1/8, 1/8)
    expected = -(5 / 8 * math.log2(5 / 8) + 3 / 8 * math.log2(1 / 8))
    assert usage.entropy() == pytest.approx(expected)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 8\)"):
        usage.update(torch.tensor([8]))
