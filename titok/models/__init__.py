"""Model classes, the preset table, and ``create_model`` / ``list_models``."""

from __future__ import annotations

from typing import Any

from titok.config import Config
from titok.models.base import ARCHITECTURES, ImageTokenizer, TitokModel
from titok.models.generator import BertGenerator, GeneratorConfig, MaskedGenerator, UViTGenerator
from titok.models.presets import PRESETS, Preset
from titok.models.tokenizer import TiTok
from titok.models.tokenizer_config import TiTokConfig, ViTConfig
from titok.models.vqgan import MaskGITVQGAN, VQGANConfig
from titok.sampling import SamplingConfig

MODEL_CLASSES: dict[str, type[TitokModel]] = ARCHITECTURES  # TiTok, MaskGITVQGAN, BertGenerator, UViTGenerator


def model_class(config: Config) -> type[TitokModel]:
    """The class that a config builds."""
    for cls in MODEL_CLASSES.values():
        if cls.accepts(config):
            return cls
    raise TypeError(f"no titok model is built from a {type(config).__name__}")


def build_model(config: Config) -> TitokModel:
    return model_class(config)(config)


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def create_model(name: str, **overrides: Any) -> TitokModel:
    """A randomly initialised model of preset ``name``, with config fields replaced by ``overrides``."""
    config = get_preset(name).config
    return build_model(config.replace(**overrides) if overrides else config)


def list_models() -> list[str]:
    return list(PRESETS)


__all__ = [
    "MODEL_CLASSES",
    "PRESETS",
    "BertGenerator",
    "GeneratorConfig",
    "ImageTokenizer",
    "MaskGITVQGAN",
    "MaskedGenerator",
    "Preset",
    "SamplingConfig",
    "TiTok",
    "TiTokConfig",
    "TitokModel",
    "UViTGenerator",
    "VQGANConfig",
    "ViTConfig",
    "build_model",
    "create_model",
    "get_preset",
    "list_models",
    "model_class",
]
