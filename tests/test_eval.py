"""``titok eval recon | gen | stats`` end to end on tiny models, Fashion-MNIST images and the FD-fmnist extractor."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import build

import titok
from titok.cli import main
from titok.data.datasets import FashionMNIST
from titok.data.images import load_image
from titok.data.npz import NpzImages
from titok.eval.reference_stats import image_statistics
from titok.metrics.extractors import fmnist
from titok.metrics.fid import FeatureStats, InceptionScore, Statistics, frechet_distance
from titok.metrics.image import psnr
from titok.models import GeneratorConfig

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--extractor", "fmnist", "--workers", "0", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    build("titok_pixels_vq").save_pretrained(root / "tok")  # 32 px, 4 codes of 32
    build("titok_vae").save_pretrained(root / "vae")
    # generation: a 2-D VQGAN decoder (256 codes of 16), whose random samples differ visibly from one another
    vqgan = build("vqgan")
    with torch.no_grad():  # centre its output in [0, 1]
        vqgan.decoder.conv_out.weight.mul_(0.5)
        vqgan.decoder.conv_out.bias.add_(0.5)
    vqgan.save_pretrained(root / "vq2d")
    torch.manual_seed(0)
    config = GeneratorConfig(codebook_size=16, num_tokens=256, num_classes=10, hidden_size=16, depth=1, num_heads=2)
    titok.models.build_model(config.replace(mlp_dim=32)).save_pretrained(root / "gen")
    images = root / "images"
    images.mkdir()
    data = FashionMNIST("test")
    for i in range(24):
        Image.fromarray(data.images[i].numpy()).save(images / f"{i:02d}.png")  # 28x28 grayscale
    (images / "corrupt.png").write_bytes(b"\x89PNG not really")
    image_statistics(str(images), fmnist(), 32, progress=False)[0].save(root / "ref.npz")
    return root


def _json(path: Path) -> dict:
    report = json.loads(path.read_text())
    report["values"] = {m["name"]: m["value"] for m in report["metrics"]}
    return report


def test_recon_end_to_end(ws, capsys):
    out = ws / "recon.json"
    args = ["eval", "recon", str(ws / "tok"), str(ws / "images"), "-o", str(out), "--batch-size", "5", *COMMON]
    assert main(args) == 1  # the corrupt file was skipped and reported
    captured = capsys.readouterr()
    assert "rFD-fmnist" in captured.out and "corrupt.png" in captured.err
    report = _json(out)
    assert report["num_images"] == 24 and len(report["skipped"]) == 1
    v = report["values"]
    assert v["rFD-fmnist"] > 0 and v["IS-fmnist-cnn"] >= 1 and 0 < v["codebook usage"] <= 1
    assert 0 <= v["codebook entropy"] <= 5 and -1 <= v["SSIM"] <= 1 and (v["LPIPS"] is None or v["LPIPS"] >= 0)
    protocol = report["protocol"]
    assert protocol["extractor"] == "fmnist-cnn" and len(protocol["extractor_sha256"]) == 64
    assert "bicubic" in protocol["preprocessing"] and protocol["resolution"] == 32
    # FD-fmnist has no published 50k numbers; 24 images in 10 IS splits is flagged
    assert not any("published" in w for w in report["warnings"])
    assert any("rFD-fmnist from 24 images (< 1,000)" in w for w in report["warnings"])
    assert any("IS-fmnist-cnn over 24 images is 10 splits of ~2" in w for w in report["warnings"])
    assert protocol["precision"] == "fp32"  # the pinned protocol, whatever the CPU does well
    # the PSNR is the mean over images of the uint8-rounded reconstruction against the uint8-rounded original
    tokenizer = titok.load(ws / "tok")
    x = torch.stack([load_image(p, 32) for p in sorted((ws / "images").glob("[0-9]*.png"))])
    recon = tokenizer.detokenize(tokenizer.tokenize(x))
    q = lambda t: t.clamp(0, 1).mul(255).round() / 255  # noqa: E731
    assert v["PSNR"] == pytest.approx(psnr(q(recon), q(x)).mean().item(), rel=1e-6)  # batch sizes differ


def test_unreadable_files_change_nothing_in_the_others_result(ws, tmp_path, capsys):
    """12 good images and 2 bad ones that sort 4th and 5th: counted in, they filled a whole IS split (samples i of
    14 went to split 10 i // 14), and the evaluation was thrown away. Now the report is the 12 images' own."""
    good, mixed = tmp_path / "good", tmp_path / "mixed"
    good.mkdir(), mixed.mkdir()
    for i in range(12):
        data = (ws / "images" / f"{i:02d}.png").read_bytes()
        (good / f"{i:02d}.png").write_bytes(data)
        (mixed / f"{i:02d}.png").write_bytes(data)
    (mixed / "03x.png").write_bytes(b"not a PNG")
    Image.new("L", (4000, 10)).save(mixed / "03y.png")  # too elongated to read
    reports = {}
    for folder in (good, mixed):
        out = tmp_path / f"{folder.name}.json"
        argv = ["eval", "recon", str(ws / "tok"), str(folder), "-o", str(out), "--batch-size", "4", *COMMON]
        assert main(argv) == (1 if folder is mixed else 0)
        reports[folder.name] = _json(out)
    assert "03x.png" in capsys.readouterr().err
    assert reports["mixed"]["num_images"] == 12 and len(reports["mixed"]["skipped"]) == 2
    assert "03y.png" in reports["mixed"]["skipped"][1] and "aspect ratio" in reports["mixed"]["skipped"][1]
    for name, value in reports["good"]["values"].items():  # LPIPS is None where its backbone is not installed
        expected = value if value is None else pytest.approx(value, rel=1e-9, abs=1e-12)
        assert reports["mixed"]["values"][name] == expected, name
    assert reports["mixed"]["values"]["IS-fmnist-cnn"] >= 1


def test_recon_of_fewer_images_than_splits_still_reports(ws, tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes((ws / "images" / f"{i:02d}.png").read_bytes())
    (tmp_path / "bad.png").write_bytes(b"")
    out = tmp_path / "r.json"
    assert main(["eval", "recon", str(ws / "tok"), str(tmp_path), "-o", str(out), *COMMON]) == 1
    report = _json(out)
    assert report["values"]["IS-fmnist-cnn"] is None and report["values"]["PSNR"] > 0
    assert "fewer than 10 images scored (3)" in json.dumps(report["metrics"])


def test_recon_of_a_vae_is_seeded_and_has_no_codebook(ws):
    from torch.utils.data import Subset

    from titok.eval import ReconOptions, evaluate_reconstruction
    from titok.eval.data import open_source

    tokenizer, extractor = titok.load(ws / "vae"), fmnist()
    dataset = Subset(open_source("fashion-mnist:test", 32)[0], range(20))
    options = ReconOptions(batch_size=8, lpips_net=None, seed=5, progress=False)
    first = evaluate_reconstruction(tokenizer, dataset, extractor, options)
    again = evaluate_reconstruction(tokenizer, dataset, extractor, options)
    assert [m.name for m in first.metrics if "codebook" in m.name] == []
    assert first.value("rFD-fmnist") == again.value("rFD-fmnist") and first.value("LPIPS") is None
    assert "seeded 5" in first.protocol["vae_latents"]


def test_gen_end_to_end_with_export_and_cached_reference(ws, monkeypatch, capsys):
    out, npz, cache = ws / "gen.json", ws / "samples.npz", ws / "cache"
    args = ["eval", "gen", str(ws / "vq2d"), str(ws / "gen"), "--ref", str(ws / "images"), "--num", "25"]
    args += ["--batch-size", "10", "--steps", "2", "--export-npz", str(npz), "--cache-dir", str(cache), "-o", str(out)]
    assert main(args + COMMON) == 0
    said = capsys.readouterr().err  # before sampling: how many; after the first batch: how long, how fast
    assert "eval gen: generating 25 samples in batches of 10" in said
    estimate = r"generating 25 samples: about [\d,]+ (s|min) at [\d,.]+ samples/s \(timed on the first batch of 10\)"
    assert re.search("eval gen: " + estimate, said), said
    report = _json(out)
    assert report["num_images"] == 25 and report["values"]["gFD-fmnist"] > 0
    sampling = report["protocol"]["sampling"]
    defaults = titok.load(ws / "gen").config.sampling.to_dict()
    assert sampling == {**defaults, "num_sample_steps": 2} and report["protocol"]["seed"] == 42
    assert report["protocol"]["precision"] == "fp32"
    assert any("not a multiple of the 10 classes" in w for w in report["warnings"])
    assert any("gFD-fmnist from 25 images" in w for w in report["warnings"])
    assert not any("published" in w for w in report["warnings"])
    assert any("IS-fmnist-cnn over 25 images" in w for w in report["warnings"])
    with np.load(npz) as data:
        assert data["arr_0"].shape == (25, 32, 32, 3) and data["arr_0"].dtype == np.uint8
        np.testing.assert_array_equal(data["arr_1"], np.arange(25) % 10)
    assert len(list(cache.glob("*.npz"))) == 1
    # a second run reads the cached reference statistics and, with the same seed, makes the same samples
    monkeypatch.setattr("titok.eval.reference_stats.image_statistics", lambda *a, **k: pytest.fail("cache not used"))
    assert main([*args[:-2], "-o", str(ws / "gen2.json"), *COMMON]) == 0
    assert _json(ws / "gen2.json")["values"] == report["values"]


def test_gen_against_its_own_samples_is_zero(ws):
    """FD(x, x) = 0 end to end: the exported samples, read back as the reference, against the same samples."""
    npz = ws / "own.npz"
    args = ["eval", "gen", str(ws / "vq2d"), str(ws / "gen"), "--num", "30", "--seed", "7", "--steps", "3"]
    vs_real, vs_own = ws / "vs_real.json", ws / "vs_own.json"
    assert main([*args, "--ref", str(ws / "ref.npz"), "--export-npz", str(npz), "-o", str(vs_real), *COMMON]) == 0
    assert main([*args, "--ref", str(npz), "--cache-dir", str(ws / "cache2"), "-o", str(vs_own), *COMMON]) == 0
    assert _json(vs_real)["values"]["gFD-fmnist"] > 1  # the samples are nothing like Fashion-MNIST ...
    assert _json(vs_own)["values"]["gFD-fmnist"] == pytest.approx(0, abs=1e-4)  # ... but exactly like themselves


def test_gen_refuses_statistics_of_another_extractor_and_warns_on_resolution(ws, capsys):
    ref = Statistics.load(ws / "ref.npz")
    Statistics(ref.mu, ref.sigma, ref.count, {**ref.meta, "extractor": "inception-v3-compat"}).save(ws / "other.npz")
    args = ["eval", "gen", str(ws / "vq2d"), str(ws / "gen"), "--num", "10", "--steps", "1", *COMMON]
    assert main([*args, "--ref", str(ws / "other.npz")]) == 2
    assert "computed with inception-v3-compat" in capsys.readouterr().err
    Statistics(ref.mu, ref.sigma, ref.count, {**ref.meta, "resolution": "64"}).save(ws / "res64.npz")
    assert main([*args, "--ref", str(ws / "res64.npz"), "-o", str(ws / "res64.json")]) == 0
    assert any("resolution is '64'" in w for w in _json(ws / "res64.json")["warnings"])


def test_bad_input_is_a_clear_error_and_writes_nothing(ws, tmp_path, capsys, monkeypatch):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "r.json"
    assert main(["eval", "recon", str(ws / "tok"), str(tmp_path / "empty"), "-o", str(out), *COMMON]) == 2
    assert "holds no image files" in capsys.readouterr().err
    assert main(["eval", "gen", str(ws / "vae"), str(ws / "gen"), "--ref", str(ws / "ref.npz"), *COMMON]) == 2
    assert "continuous (VAE)" in capsys.readouterr().err
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TITOK_INCEPTION_WEIGHTS", raising=False)
    args = ["eval", "recon", str(ws / "tok"), str(ws / "images"), "-o", str(out), "--device", "cpu"]
    assert main(args) == 2
    assert "weights-inception-2015-12-05-6726825d.pth" in capsys.readouterr().err
    assert not out.exists()


def test_stats_command(ws):
    out = ws / "stats.npz"
    assert main(["eval", "stats", str(ws / "images"), "--size", "32", "-o", str(out), *COMMON]) == 1  # corrupt.png
    stats, ref = Statistics.load(out), Statistics.load(ws / "ref.npz")
    assert stats.count == 24 and stats.meta == {**ref.meta, "source": str((ws / "images").resolve())}
    np.testing.assert_allclose(stats.sigma, ref.sigma, rtol=1e-12)


def test_two_processes_merge_to_the_statistics_of_one(ws):
    """torchrun with 2 CPU processes: each samples its half; the merged gFD and IS equal those computed in one
    process over the union of their samples (read back from the merged export)."""
    npz, out = ws / "dist.npz", ws / "dist.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "titok.cli"]
    cmd += ["eval", "gen", str(ws / "vq2d"), str(ws / "gen"), "--ref", str(ws / "ref.npz"), "--num-samples", "24"]
    cmd += ["--batch-size", "5", "--steps", "2", "--export-npz", str(npz), "-o", str(out), *COMMON]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = _json(out)
    assert report["protocol"]["processes"] == 2
    assert list(ws.glob("dist.npz.rank*")) == []  # shards merged and removed
    with np.load(npz) as data:
        np.testing.assert_array_equal(data["arr_1"], np.arange(24) % 10)
    extractor, samples = fmnist(), NpzImages(npz, 32)
    images = torch.stack([samples[i][0] for i in range(len(samples))])
    features, logits = extractor((images * 255).round().to(torch.uint8))
    stats, score = FeatureStats(128), InceptionScore(10)
    stats.update(features)
    score.update(logits, torch.arange(24))
    one, ref = stats.compute(), Statistics.load(ws / "ref.npz")
    assert report["values"]["gFD-fmnist"] == pytest.approx(frechet_distance(ref.mu, ref.sigma, one.mu, one.sigma))
    assert report["values"]["IS-fmnist-cnn"] == pytest.approx(score.compute()[0], rel=1e-6)  # other batch sizes


def test_small_count_warnings():
    from titok.eval.scoring import count_warning, is_warning
    from titok.metrics.extractors import fmnist

    assert "published 50k" in count_warning("gFID", 10_000)[0] and count_warning("gFID", 50_000) == []
    assert count_warning("gFD-fmnist", 10_000) == [] and "< 1,000" in count_warning("rFD-fmnist", 999)[0]
    extractor = fmnist()
    assert "10 splits of ~2 (< 500 per split)" in is_warning(extractor, (2.0, 0.5), 23)[0]
    assert is_warning(extractor, (2.0, 0.5), 5_000) == [] and is_warning(extractor, None, 5) == []
