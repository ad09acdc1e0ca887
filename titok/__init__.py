"""titok: compact 1-D image tokenizers (TiTok, arXiv 2406.07550) and MaskGIT generators over their tokens.

>>> import titok
>>> tokenizer = titok.load("yucornetto/tokenizer_titok_l32_imagenet")   # or a folder, or a file + preset=
>>> images = tokenizer.preprocess(["photo.jpg", "folder/"])  # or titok.load_images(paths or PIL images, 256)
>>> codes = tokenizer.tokenize(images)            # (B, 3, 256, 256) in [0, 1] -> (B, 32) int64
>>> images = tokenizer.detokenize(codes).clamp(0, 1)
>>> short = ordered.tokenize(images, quality=titok.Quality(psnr=30))   # an ordered tokenizer: fewest tokens each
>>> titok.save_codes("codes.npz", short.codes, lengths=short.lengths)  # ragged rows; titok.load_codes reads them
>>> with titok.autocast("auto"):                 # bf16 where the hardware computes it natively
...     codes = tokenizer.tokenize(images)
"""

import importlib
from typing import Any

# Imported on first use (PEP 562), so that `import titok.cli` and `titok --help` do not import torch.
_LAZY = {
    "load": "titok.checkpoints",
    "load_images": "titok.data.images",
    "autocast": "titok.precision",
    "load_codes": "titok.data.codes_file",
    "save_codes": "titok.data.codes_file",
    "DiagonalGaussian": "titok.quantizers",
    "QuantizerOutput": "titok.quantizers",
    **dict.fromkeys(
        (
            "AdaptiveCodes",
            "BertGenerator",
            "GeneratorConfig",
            "MaskedGenerator",
            "MaskGITVQGAN",
            "Quality",
            "SamplingConfig",
            "TiTok",
            "TiTokConfig",
            "UViTGenerator",
            "ViTConfig",
            "VQGANConfig",
            "create_model",
            "list_models",
        ),
        "titok.models",
    ),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in ("models", "checkpoints", "quantizers", "data", "sampling"):
        return importlib.import_module(f"titok.{name}")
    raise AttributeError(f"module 'titok' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__version__ = "0.1.0"

__all__ = [
    "AdaptiveCodes",
    "BertGenerator",
    "DiagonalGaussian",
    "GeneratorConfig",
    "MaskGITVQGAN",
    "MaskedGenerator",
    "Quality",
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
    "load_codes",
    "load_images",
    "save_codes",
]
