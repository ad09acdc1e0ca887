"""Packaging: the distribution's name (titok-tokenizer; the import and the command stay titok) in pyproject.toml and
in every install hint; the wheel holds every shipped asset and recipe; and (with TITOK_TEST_WHEEL=1, minutes) the
wheel installed non-editable in a fresh environment runs the demo, trains a recipe by name and loads every asset."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from titok.extras import DISTRIBUTION, EXTRAS, install_hint

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_distribution_name_and_its_extras_agree_with_the_install_hints():
    project = _pyproject()["project"]
    assert project["name"] == DISTRIBUTION != "titok"
    extras = project["optional-dependencies"]
    assert set(extras) == set(EXTRAS)
    assert all(dep.startswith(f"{DISTRIBUTION}[") for dep in extras["dev"] if dep.split("[")[0].startswith("titok"))
    code = "\n".join(p.read_text() for p in (ROOT / "titok").rglob("*.py"))
    assert not re.search(r"pip install .?titok\[", code)  # every hint goes through install_hint
    named = set(re.findall(r"install_hint\(['\"](\w+)['\"]\)", code))
    assert {"train", "eval", "webdataset", "wandb"} <= named <= set(extras)
    assert install_hint("wandb") == "pip install 'titok-tokenizer[wandb]'"
    with pytest.raises(ValueError, match="no extra 'gpu'"):
        install_hint("gpu")


def test_the_wheel_holds_every_asset_and_recipe(tmp_path):
    """Built (without build isolation) from a copy of the tracked files, so that the source tree is not touched."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    for name in tracked:
        if (ROOT / name).is_file():
            (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tmp_path / "src" / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path)]
    done = subprocess.run([*cmd, str(tmp_path / "src")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("titok_tokenizer-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n for n in tracked if n.startswith(("titok/assets/", "titok/configs/")) and not n.endswith(".py")}
    assert shipped and shipped <= names, sorted(shipped - names)
    info = next(n for n in names if n.endswith(".dist-info/METADATA"))
    metadata = zipfile.ZipFile(wheel).read(info).decode()
    assert "Name: titok-tokenizer" in metadata and "Provides-Extra: wandb" in metadata
    entry_points = zipfile.ZipFile(wheel).read(info.replace("METADATA", "entry_points.txt")).decode()
    assert "titok = titok.cli:main" in entry_points


@pytest.mark.skipif(os.environ.get("TITOK_TEST_WHEEL") != "1", reason="minutes: set TITOK_TEST_WHEEL=1")
def test_the_installed_wheel_runs_outside_the_repository():
    done = subprocess.run([sys.executable, str(ROOT / ".ci" / "check_wheel.py")], capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "the wheel installs and runs" in done.stdout


def test_pretokenize_without_accelerate_names_the_extra(tmp_path, monkeypatch, capsys):
    from titok.cli import main

    monkeypatch.setitem(sys.modules, "accelerate", None)  # not installed
    assert main(["pretokenize", "tok", "fashion-mnist", "-o", str(tmp_path / "t"), "--device", "cpu"]) == 2
    assert "pretokenize needs accelerate: pip install 'titok-tokenizer[train]'" in capsys.readouterr().err
