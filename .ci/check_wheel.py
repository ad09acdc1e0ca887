#!/usr/bin/env python3
"""The wheel as a user gets it: build it from the repository, install it (not editable) into a fresh virtual
environment, and from a folder outside the repository run ``titok demo``, train a Fashion-MNIST recipe by its bare
name for two steps, and load every shipped asset and recipe (``installed_checks.py``).

Usage: python .ci/check_wheel.py [--workdir DIR] [--keep]. Standard library only; pip's cache makes torch quick.
Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DISTRIBUTION = "titok-tokenizer"
TRAIN = [
    "titok", "train", "tokenizer", "single_stage_vq_fmnist", "train.max_steps=2", "train.batch_size=4",
    "train.num_workers=0", "train.save_every=2", "train.preview_every=2", "train.log_every=1", "heldout.num=20",
    "train.output_dir=run",
]  # fmt: skip


def step(what: str, cmd: list[str], **kwargs) -> None:
    start = time.perf_counter()
    print(f"== {what}: {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True, **kwargs)
    print(f"   ok ({time.perf_counter() - start:.0f} s)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="where to build and install (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="titok-wheel-")).resolve()
    if REPO in (work, *work.parents):
        parser.error(f"--workdir {work} is inside the repository; the checks must run outside it")
    try:
        run_checks(work)
    except subprocess.CalledProcessError as e:
        print(f"FAILED: {' '.join(map(str, e.cmd))} (exit status {e.returncode})", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("the wheel installs and runs")
    return 0


def run_checks(work: Path) -> None:
    dist, venv, cwd = work / "dist", work / "venv", work / "user"
    cwd.mkdir(parents=True, exist_ok=True)
    step("build the wheel", [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(REPO)])
    wheels = sorted(dist.glob("titok_tokenizer-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one titok_tokenizer wheel in {dist}, found {[w.name for w in wheels]}")
    step("a fresh virtual environment", [sys.executable, "-m", "venv", str(venv)])
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    step("install the wheel", [str(bin_dir / "python"), "-m", "pip", "install", "-q", f"{wheels[0]}[train]"])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", HF_HUB_OFFLINE="1")
    expected = sorted(str(p.relative_to(REPO / "titok")) for p in (REPO / "titok" / "assets").rglob("*") if p.is_file())
    checks = [str(bin_dir / "python"), str(REPO / ".ci" / "installed_checks.py"), str(REPO), *expected]
    step("the installed package, its assets and recipes", checks, cwd=cwd, env=env)
    step("titok demo", ["titok", "demo", "--out", "demo.png", "--no-progress"], cwd=cwd, env=env)
    step("train a recipe by its bare name", TRAIN, cwd=cwd, env=env)
    step("load the run", ["titok", "info", "run/final"], cwd=cwd, env=env)


if __name__ == "__main__":
    sys.exit(main())
