"""Models from training checkpoint folders (``runs/x/checkpoints/checkpoint-N``): the architecture from the recipe
the checkpoint was written under, the EMA or raw weights from its ``state.pt``. ``titok.load`` reads such a folder,
so every command that takes a model does too, and ``titok export`` writes it as a clean model folder."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

STATE = "state.pt"
WEIGHT_CHOICES = ("ema", "raw")
RECIPES_OF_TOKENIZERS = ("stage1", "stage2", "single_stage")  # the others: generator, vqgan


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a training checkpoint folder (a ``state.pt`` and no model ``config.json``)."""
    path = Path(path)
    return (path / STATE).is_file() and not (path / "config.json").exists()


def _recipe(path: Path, state: dict[str, Any]) -> dict[str, Any]:
    if isinstance(state.get("recipe"), dict):
        return state["recipe"]
    run_recipe = path.parent.parent / "recipe.json"  # runs/x/checkpoints/checkpoint-N -> runs/x/recipe.json
    try:
        recipe = json.loads(run_recipe.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(
            f"{path} records no recipe, and {run_recipe} cannot be read ({e}): its model is unknown"
        ) from None
    if not isinstance(recipe, dict):
        raise ValueError(f"{run_recipe} is not a recipe (a JSON object)")
    return recipe


def read_state(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path / STATE, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise ValueError(f"cannot read {path / STATE} (damaged or incomplete): {type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ValueError(f"{path / STATE} holds no model weights: not a titok training checkpoint")
    return state


def weights_of(state: dict[str, Any], weights: str, path: Path) -> dict[str, torch.Tensor]:
    """The ``ema`` or ``raw`` weights of a checkpoint's state."""
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights={weights!r}: expected one of {list(WEIGHT_CHOICES)} for a training checkpoint")
    if weights == "raw":
        return state["model"]
    ema = state.get("ema")
    if not isinstance(ema, dict) or not isinstance(ema.get("model"), dict):
        raise ValueError(f"{path} holds no EMA weights (the run had train.ema_decay=0): load it with weights='raw'")
    return ema["model"]


def from_checkpoint(
    path: str | Path, weights: str = "ema", device: str | torch.device = "cpu", allow_nonfinite: bool = False
):
    """The model of the training checkpoint folder ``path``, with its EMA (default) or raw weights, in eval mode."""
    from titok.models import base, model_class

    path = Path(path)
    state = read_state(path)
    config = model_config(_recipe(path, state), path)
    chosen = weights_of(state, weights, path)
    source = f"{path} ({weights} weights, step {state.get('step', '?')})"
    model = base.instantiate(model_class(config), config, chosen, source, None, allow_nonfinite)
    return model.to(device)


def model_config(recipe: dict[str, Any], path: Path):
    """The model config of a training recipe (as saved with its checkpoints): its ``model`` section, of the kind
    its ``recipe`` trains (a table, so that loading a checkpoint needs none of the training code)."""
    from titok.models import GeneratorConfig, TiTokConfig, VQGANConfig, model_section

    kinds = {"generator": GeneratorConfig, "vqgan": VQGANConfig}
    kinds.update(dict.fromkeys(RECIPES_OF_TOKENIZERS, TiTokConfig))
    name = recipe.get("recipe")
    if name not in kinds:
        raise ValueError(f"{path}: recipe {name!r} is not one of {sorted(kinds)}")
    try:
        return model_section(recipe.get("model"), kinds[name])
    except ValueError as e:
        raise ValueError(f"{path}: the recipe's model section does not give the architecture: {e}") from None
