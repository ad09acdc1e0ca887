"""titok: compact 1-D image tokenizers (TiTok, arXiv 2406.07550) and MaskGIT generators over their tokens.

>>> import titok
>>> tokenizer = titok.load("yucornetto/tokenizer_titok_l32_imagenet")   # or a folder, or a file + preset=
>>> codes = tokenizer.tokenize(images)            # (B, 3, 256, 256) in [0, 1] -> (B, 32) int64
>>> images = tokenizer.detokenize(codes).clamp(0, 1)
>>> with titok.autocast("auto"):                 # bf16 where the hardware computes it natively
...     codes = tokenizer.tokenize(images)
"""

from titok.checkpoints import load
from titok.models import (
    BertGenerator,
    GeneratorConfig,
    MaskedGenerator,
    MaskGITVQGAN,
    SamplingConfig,
    TiTok,
    TiTokConfig,
    UViTGenerator,
    ViTConfig,
    VQGANConfig,
    create_model,
    list_models,
)
from titok.precision import autocast
from titok.quantizers import DiagonalGaussian, QuantizerOutput

__version__ = "0.1.0"

__all__ = [
    "BertGenerator",
    "DiagonalGaussian",
    "GeneratorConfig",
    "MaskGITVQGAN",
    "MaskedGenerator",
    "QuantizerOutput",
    "SamplingConfig",
    "TiTok",
    "TiTokConfig",
    "UViTGenerator",
    "VQGANConfig",
    "ViTConfig",
    "autocast",
    "create_model",
    "list_models",
    "load",
]
