"""The speed benchmark's quick mode runs every row's code path in every default mode (so the benchmark never rots)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = ["encode", "decode", "generate+decode", "stage1_train", "generator_train"]


def test_speed_benchmark_quick(tmp_path):
    out = tmp_path / "speed.json"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "speed.py"),
        "--device",
        "cpu",
        "--quick",
        "--int8",
        "-o",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["threads"] >= 1 and report["cpu"] and report["auto"].startswith(("fp32 on cpu", "bf16 on cpu"))
    results = report["results"]
    assert [r["row"] for r in results if r["mode"] == "fp32"] == ROWS
    assert [r["row"] for r in results if r["mode"] == "bf16"] == ROWS
    assert [r["row"] for r in results if r["mode"] == "int8"] == ROWS[:3]  # inference only
    assert all(r["items_per_s"] > 0 and r["speedup_vs_fp32"] > 0 for r in results)
    assert all(r["speedup_vs_fp32"] == 1 for r in results if r["mode"] == "fp32")


def test_precision_quality_benchmark_quick(tmp_path):
    out = tmp_path / "quality.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "precision_quality.py"), "--quick", "--samples", "20"]
    cmd += ["--seeds", "0", "1", "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    row, vae = report["tokenizers"]
    assert row["model"] == "tiny (random)" and row["codebook"] == "64x8 l2" and row["images"] == 8
    assert vae["codebook"] == "VAE 8" and vae["agree"] is None and vae["near_ties"] is None  # no codes: latents only
    assert 0 < vae["drift"] < 0.05 and abs(vae["psnr_bf16"] - vae["psnr_fp32"]) < 0.5
    assert 0.5 <= row["agree"] <= 1 and 0 <= row["near_ties"] <= 1 and 0 < row["drift"] < 0.05  # bf16: ~0.4%
    assert abs(row["psnr_bf16"] - row["psnr_fp32"]) < 0.5
    assert [g["seed"] for g in report["generator"]] == [0, 1]
    assert all(g["gfd_fp32"] > 0 and g["gfd_bf16"] > 0 for g in report["generator"])
    assert "near_ties" in done.stdout and "gFD-fmnist bf16: mean" in done.stdout


def test_near_ties_counts_positions_with_a_second_code_within_one_percent():
    import importlib.util

    import torch

    from titok.quantizers import VectorQuantizer

    spec = importlib.util.spec_from_file_location("precision_quality", ROOT / "benchmarks" / "precision_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    vq = VectorQuantizer(2, 2)
    with torch.no_grad():
        vq.embedding.weight.copy_(torch.tensor([[0.0, 0.0], [2.0, 0.0]]))
    # distances to the two codes: (0.5, 1.5), (1.0, 1.0), (0.996, 1.004), (0.98, 1.02)
    latents = torch.tensor([[[0.5, 0.0], [1.0, 0.0], [0.996, 0.0], [0.98, 0.0]]])
    assert module.near_ties(vq, latents) == 0.5


def test_stream_memory_benchmark_smoke(tmp_path):
    out = tmp_path / "memory.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "stream_memory.py"), "--shards", "2", "--per-shard", "40"]
    cmd += ["--payload-kb", "4", "--buffers", "4", "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(out.read_text())["results"]
    assert row["buffer"] == "4" and row["peak_reader_mb"] >= 0 and row["samples_per_s"] > 0
    assert "peak MB per reader" in done.stdout


def test_startup_benchmark_smoke(tmp_path):
    out = tmp_path / "startup.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "startup.py"), "--runs", "1", "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = {r["command"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"import torch", "titok --help", "titok info"}
    assert rows["import torch"]["ratio_to_import_torch"] == 1.0
    assert all(r["seconds"] > 0 for r in rows.values())
    assert "x import torch" in done.stdout
