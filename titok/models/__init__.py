"""Model classes, the preset table, and ``create_model`` / ``list_models``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from titok.config import Config, did_you_mean
from titok.models.adaptive import AdaptiveCodes, Quality
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
        raise ValueError(f"unknown preset {name!r}{did_you_mean(name, PRESETS)}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]


C = TypeVar("C", bound=Config)


def model_section(section: Mapping[str, Any] | None, expected: type[C], where: str = "model") -> C:
    """A recipe's ``model`` section: ``{preset: NAME, <field>: <value>...}`` (the preset's config with fields
    replaced) or a whole config of type ``expected``."""
    section = dict(section or {})
    preset = section.pop("preset", None)
    if preset is None:
        return expected.from_dict(section, where=where)
    base = get_preset(preset).config
    if not isinstance(base, expected):
        raise ValueError(f"{where}.preset {preset!r} is a {type(base).__name__}, expected a {expected.__name__}")
    try:
        return base.replace(**section)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def create_model(name: str, **overrides: Any) -> TitokModel:
    """A randomly initialised model of preset ``name``, with config fields replaced by ``overrides``."""
    config = get_preset(name).config
    return build_model(config.replace(**overrides) if overrides else config)


def list_models() -> list[str]:
    return list(PRESETS)


__all__ = [
    "MODEL_CLASSES",
    "PRESETS",
    "AdaptiveCodes",
    "BertGenerator",
    "GeneratorConfig",
    "ImageTokenizer",
    "MaskGITVQGAN",
    "MaskedGenerator",
    "Preset",
    "Quality",
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
    "model_section",
]
