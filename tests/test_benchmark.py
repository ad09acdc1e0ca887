"""The speed benchmark's smoke mode runs every row's code path (so the benchmark never rots)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_speed_benchmark_smoke(tmp_path):
    out = tmp_path / "speed.json"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "speed.py"),
        "--device",
        "cpu",
        "--preset",
        "tiny",
        "--runs",
        "1",
        "--warmup",
        "1",
        "-o",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())["results"]
    assert [r["row"] for r in results] == ["encode", "decode", "generate+decode", "stage1_train", "generator_train"]
    assert all(r["items_per_s"] > 0 and r["gflop_per_item"] > 0 for r in results)


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
