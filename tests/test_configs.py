"""Every recipe in configs/ parses under its recipe's strict config (so none of them rots)."""

from __future__ import annotations

from pathlib import Path

import pytest

from titok.train.config import read_recipe
from titok.train.recipes import parse

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_recipe_parses(path):
    recipe = parse(read_recipe(path), str(path))
    recipe.model_config()  # the model section builds a valid config
