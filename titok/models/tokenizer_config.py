"""The TiTok tokenizer's config: :class:`TiTokConfig`, its ViT sizes, and the checks that tie its fields together."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from titok.config import Config
from titok.models.vqgan import VQGANConfig


@dataclass(frozen=True)
class ViTConfig(Config):
    width: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0

    @property
    def mlp_dim(self) -> int:
        return int(self.width * self.mlp_ratio)


VIT_SIZES = {
    "small": ViTConfig(width=512, depth=8, num_heads=8),
    "base": ViTConfig(width=768, depth=12, num_heads=12),
    "large": ViTConfig(width=1024, depth=24, num_heads=16),
}


@dataclass(frozen=True)
class TiTokConfig(Config):
    """A TiTok tokenizer. ``legacy_token_order`` reproduces the released two-stage checkpoints' scramble of the
    encoder's latent tokens (see :class:`LegacyTokenOrder`); new models leave it off."""

    image_size: int = 256
    patch_size: int = 16
    num_tokens: int = 32
    encoder: ViTConfig = VIT_SIZES["large"]
    decoder: ViTConfig = VIT_SIZES["large"]
    quantizer: Literal["vq", "vae", "fsq"] = "vq"
    token_dim: int = 12
    codebook_size: int = 4096
    l2_norm: bool = True
    commitment_cost: float = 0.25
    fsq_levels: tuple[int, ...] = ()  # quantizer "fsq": levels per channel; token_dim = len, codebook_size = product
    head: Literal["pixels", "proxy", "vqgan"] = "pixels"
    proxy_codebook_size: int = 1024
    pixel_decoder: VQGANConfig | None = None
    legacy_token_order: bool = False
    layout: Literal["1d", "2d"] = "1d"  # "2d": the 2-D twin, one token per patch (see titok.models.grid)
    # Any prefix of the tokens decodes (see TiTokDecoder): "cut" reads only the kept tokens; "learned" puts a learned
    # token in place of each dropped one. ``ordered``: trained with tail drops, so prefixes are coarse-to-fine.
    tail: Literal["cut", "learned"] = "cut"
    ordered: bool = False

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.layout == "2d" and self.num_tokens != self.grid_size**2:
            raise ValueError(
                f"a 2-D tokenizer has a token per patch: num_tokens must be {self.grid_size**2}, not {self.num_tokens}"
            )
        if (self.head == "vqgan") != (self.pixel_decoder is not None):
            raise ValueError("head 'vqgan' needs a pixel_decoder config, and only that head takes one")
        if self.pixel_decoder is not None:
            pd = self.pixel_decoder
            if pd.codebook_size != self.proxy_codebook_size:
                raise ValueError(
                    f"pixel_decoder.codebook_size {pd.codebook_size} != proxy_codebook_size {self.proxy_codebook_size}"
                )
            if pd.downsample_factor != self.patch_size:
                raise ValueError(
                    f"the pixel decoder upsamples {pd.downsample_factor}x; patch_size is {self.patch_size}"
                )
        if self.quantizer == "fsq" and not self.fsq_levels:
            raise ValueError("quantizer 'fsq' needs fsq_levels, one per token channel, e.g. [8, 5, 5, 5] (1000 codes)")
        if self.quantizer == "fsq":
            levels = list(self.fsq_levels)
            if len(levels) != self.token_dim or math.prod(levels) != self.codebook_size:
                k = math.prod(levels)
                raise ValueError(
                    f"FSQ levels {levels} give {len(levels)}-d tokens and {k} codes: set token_dim={len(levels)} "
                    f"and codebook_size={k} (got {self.token_dim} and {self.codebook_size})"
                )
        elif self.fsq_levels:
            raise ValueError(f"fsq_levels {list(self.fsq_levels)} are for quantizer 'fsq', not {self.quantizer!r}")
        if self.layout == "2d" and (self.ordered or self.tail != "cut"):
            raise ValueError("a 2-D tokenizer's tokens are patches, not an ordered sequence: ordered/tail are 1-D only")
        if self.quantizer == "vae" and self.head == "vqgan":
            raise ValueError("a continuous (vae) tokenizer cannot use the 'vqgan' head")

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size
