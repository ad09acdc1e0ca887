"""Loading any model input: titok's layout, the reference's layouts, bare weights files, preset names, the Hub.

titok's own layout is read and written below the model classes (:mod:`titok.models.storage`, through
``save_pretrained``/``from_pretrained``); this module dispatches on what it is given, and converts the reference's
layouts (:mod:`titok.reference_layout`). Loading is strict: a missing, unexpected or mis-shaped key is an error that
names it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from titok import reference_layout
from titok.config import Config
from titok.models import PRESETS, TitokModel, base, get_preset, model_class
from titok.models.storage import (
    check_hub_id,
    folder_files,
    hub_files,
    is_titok_config,
    match_state_dict,
    read_config,
    read_weights,
    save_model,
)

logger = logging.getLogger(__name__)

__all__ = ["from_files", "from_weights", "instantiate", "load", "match_state_dict", "read_weights", "save_model"]


def instantiate(
    config: Config, state: Mapping[str, torch.Tensor], source: str, origin=None, allow_nonfinite: bool = False
) -> TitokModel:
    """Build the model of ``config`` without random initialisation and load ``state`` into it strictly; weights
    that are not finite are refused (see :func:`~titok.models.storage.check_finite`) unless ``allow_nonfinite``."""
    return base.instantiate(model_class(config), config, dict(state), source, origin, allow_nonfinite)


def from_files(
    config_path: str | Path,
    weights_path: str | Path,
    device: str | torch.device = "cpu",
    allow_nonfinite: bool = False,
) -> TitokModel:
    """A model from a ``config.json`` (titok's or the reference's) and its weights file."""
    raw = read_config(config_path)
    state = read_weights(weights_path, device)
    if is_titok_config(raw):
        return base.from_titok_config(raw, state, str(config_path), str(weights_path), allow_nonfinite)
    if not reference_layout.is_reference_config(raw):
        raise ValueError(f"{config_path} is neither a titok config nor a reference (model.vq_model/generator) one")
    kind = reference_layout.detect(set(state))
    if kind is None:
        raise ValueError(f"{weights_path} holds no TiTok, MaskGIT-VQGAN or generator weights that titok knows")
    try:
        config = reference_layout.config_for(raw, kind)
    except (TypeError, AttributeError, KeyError) as e:  # a value of the wrong JSON type somewhere in the file
        raise ValueError(f"{config_path}: malformed reference config ({type(e).__name__}: {e})") from None
    converted, origin = reference_layout.convert_state_dict(state, config)
    return instantiate(config, converted, f"{weights_path} (reference layout)", origin, allow_nonfinite)


def from_weights(
    path: str | Path, preset: str, device: str | torch.device = "cpu", allow_nonfinite: bool = False
) -> TitokModel:
    """A model of architecture ``preset`` from a bare weights file, in titok's or the reference's key names."""
    config = get_preset(preset).config
    state = read_weights(path, device)
    if reference_layout.detect(set(state)) is None:  # titok's own key names
        return instantiate(config, state, str(path), None, allow_nonfinite)
    converted, origin = reference_layout.convert_state_dict(state, config)
    return instantiate(config, converted, f"{path} (reference layout, preset {preset})", origin, allow_nonfinite)


def load(
    path_or_hub_id: str | Path,
    preset: str | None = None,
    device: str | torch.device | None = None,
    allow_nonfinite: bool = False,
    weights: str | None = None,
    **hub_kwargs: Any,
) -> TitokModel:
    """Load a tokenizer, 2-D VQGAN or generator, in eval mode, on ``device`` (default CPU).

    A training checkpoint folder (``runs/x/checkpoints/checkpoint-N``) loads too, with its EMA weights or, with
    ``weights="raw"``, the trained ones (see :mod:`titok.checkpoint_folder`); ``weights`` is for checkpoints only.

    ``path_or_hub_id`` is one of: a folder in titok's or the reference's layout (``config.json`` +
    ``model.safetensors`` or ``pytorch_model.bin``); a bare weights file, whose architecture ``preset`` names
    (e.g. ``maskgit-vqgan-imagenet-f16-256.bin`` with ``preset="maskgit_vqgan"``); a Hub id; or the name of a
    released preset (its Hub repo). ``hub_kwargs`` go to ``huggingface_hub.hf_hub_download``.

    Weights holding NaN or infinite values are refused with an error naming the tensors, unless
    ``allow_nonfinite=True``. A ``config.json`` that is not a JSON object is a ``ValueError``.
    """
    from titok.checkpoint_folder import from_checkpoint, is_checkpoint

    device = torch.device(device or "cpu")
    path = Path(path_or_hub_id)
    if path.is_dir() and is_checkpoint(path):
        return from_checkpoint(path, weights or "ema", device, allow_nonfinite)
    if weights is not None:
        raise ValueError(
            f"weights={weights!r} chooses the weights of a training checkpoint; {path_or_hub_id} is not one"
        )
    if path.is_file():
        if preset is None:
            raise ValueError(
                f"{path} is a bare weights file: name its architecture with preset= (one of {list(PRESETS)})"
            )
        return from_weights(path, preset, device, allow_nonfinite)
    if preset is not None:
        raise ValueError(f"preset= names the architecture of a bare weights file, but {path_or_hub_id} is not a file")
    if path.is_dir():
        return from_files(*folder_files(path), device, allow_nonfinite)
    name = str(path_or_hub_id)
    if name in PRESETS:
        hub_id = PRESETS[name].hub_id
        if hub_id is None:
            raise ValueError(f"preset {name!r} has no released weights; build it with titok.create_model({name!r})")
        name = hub_id
    check_hub_id(name, path_or_hub_id, [p for p in PRESETS if PRESETS[p].hub_id])
    return from_files(*hub_files(name, **hub_kwargs), device, allow_nonfinite)
