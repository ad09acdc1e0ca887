"""The recipe names a YAML file's ``recipe:`` key may take, and the training function of each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def recipes() -> dict[str, tuple[type, Callable[..., Path]]]:
    """name -> (its config class, its ``train(recipe, resume)`` function). Imported on use: recipes are heavy."""
    from titok.train import generator, tokenizer, vqgan

    return {
        "generator": (generator.GeneratorRecipe, generator.train),
        "vqgan": (vqgan.VQGANRecipe, vqgan.train),
        "stage1": (tokenizer.Stage1Recipe, tokenizer.train_stage1),
        "stage2": (tokenizer.Stage2Recipe, tokenizer.train_stage2),
        "single_stage": (tokenizer.SingleStageRecipe, tokenizer.train_single_stage),
    }


def parse(raw: dict[str, Any], where: str, allowed: set[str] | None = None):
    """The recipe object of a recipe file's contents; ``allowed`` limits which recipe names are accepted."""
    table = recipes()
    name = raw.get("recipe")
    names = sorted(allowed or table)
    if name not in table or (allowed is not None and name not in allowed):
        raise ValueError(f"{where}: recipe {name!r} is not one of {names}")
    return table[name][0].from_dict(raw, where=where)
