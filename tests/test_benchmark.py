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
