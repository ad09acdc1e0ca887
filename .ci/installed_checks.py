"""Run by check_wheel.py with the fresh environment's Python, from a folder outside the repository:
``python installed_checks.py REPO ASSET...`` checks that ``titok`` is the installed, non-editable package of the
distribution titok-tokenizer, that it holds exactly the assets ASSET... (paths under ``titok/``), and loads each of
them and every shipped recipe."""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

import titok
from titok.configs import recipe_files
from titok.train.config import read_recipe
from titok.train.recipes import parse


def check_installed(repo: Path) -> Path:
    package = Path(titok.__file__).resolve().parent
    if repo in package.parents:
        raise SystemExit(f"titok is imported from the repository ({package}), not from the installed wheel")
    version = importlib.metadata.version("titok-tokenizer")
    if version != titok.__version__:
        raise SystemExit(f"the distribution's version {version} is not titok.__version__ {titok.__version__}")
    direct = importlib.metadata.distribution("titok-tokenizer").read_text("direct_url.json")
    if direct and json.loads(direct).get("dir_info", {}).get("editable"):
        raise SystemExit("titok-tokenizer is installed editable")
    print(f"titok {version} installed at {package}")
    return package


def load_asset(path: Path) -> str:
    """Load one shipped file; what it held, in words."""
    if path.name == "config.json" and (path.parent / "model.safetensors").is_file():
        model = titok.load(path.parent)
        return f"{type(model).__name__}, {model.num_parameters():,} parameters"
    if path.suffix == ".safetensors":
        return f"{len(load_file(path))} tensors"
    if path.suffix == ".npz":
        with np.load(path) as data:
            return ", ".join(f"{k} {data[k].shape}" for k in data.files)
    if path.suffix == ".json":
        return f"{len(json.loads(path.read_text()))} keys"
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise SystemExit(f"{path} is empty")
    return f"{len(text.splitlines())} lines"


def main() -> None:
    repo, expected = Path(sys.argv[1]).resolve(), sorted(sys.argv[2:])
    package = check_installed(repo)
    shipped = sorted(str(p.relative_to(package)) for p in (package / "assets").rglob("*") if p.is_file())
    if shipped != expected:
        missing, extra = sorted(set(expected) - set(shipped)), sorted(set(shipped) - set(expected))
        raise SystemExit(f"the wheel's assets differ from the repository's: missing {missing}, extra {extra}")
    for name in shipped:
        print(f"  {name}: {load_asset(package / name)}")
    recipes = recipe_files()
    if sorted(recipes) != sorted(p.stem for p in (repo / "titok" / "configs").rglob("*.yaml")):
        raise SystemExit(f"the wheel's recipes {sorted(recipes)} differ from the repository's")
    for path in recipes.values():
        parse(read_recipe(path), str(path)).model_config()
    print(f"{len(shipped)} assets and {len(recipes)} recipes load")


if __name__ == "__main__":
    main()
