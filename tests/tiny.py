"""Tiny configs of every model family, small enough to build and run in milliseconds."""

from __future__ import annotations

import titok
from titok.models import GeneratorConfig, TiTokConfig, ViTConfig, VQGANConfig

TINY_VIT = ViTConfig(width=32, depth=1, num_heads=2)
TINY_VQGAN = VQGANConfig(
    image_size=32,
    hidden_channels=8,
    channel_mult=(1, 2),
    num_res_blocks=1,
    z_channels=8,
    codebook_size=16,
    norm_groups=4,
)


def tiny_titok(**overrides) -> TiTokConfig:
    base = dict(
        image_size=32, patch_size=8, num_tokens=4, encoder=TINY_VIT, decoder=TINY_VIT, codebook_size=32, token_dim=8
    )
    return TiTokConfig(**{**base, **overrides})


TINY_CONFIGS = {
    "titok_pixels_vq": tiny_titok(l2_norm=False),
    "titok_proxy": tiny_titok(head="proxy", proxy_codebook_size=16, legacy_token_order=True),
    "titok_vqgan_head": tiny_titok(
        head="vqgan",
        proxy_codebook_size=16,
        legacy_token_order=True,
        pixel_decoder=TINY_VQGAN.replace(channel_mult=(1, 1, 1, 2)),
    ),
    "titok_vae": tiny_titok(quantizer="vae"),
    "titok_fsq": tiny_titok(quantizer="fsq", fsq_levels=(4, 3, 2), token_dim=3, codebook_size=24),
    "titok_2d": tiny_titok(layout="2d", num_tokens=16),
    "vqgan": TINY_VQGAN,
    "bert": GeneratorConfig(
        arch="bert", codebook_size=16, num_tokens=4, num_classes=3, hidden_size=16, depth=2, num_heads=2, mlp_dim=32
    ),
    "uvit": GeneratorConfig(
        arch="uvit", codebook_size=16, num_tokens=4, num_classes=3, hidden_size=16, depth=2, num_heads=2, mlp_dim=32
    ),
}


def build(name: str, seed: int = 0) -> titok.models.TitokModel:
    import torch

    torch.manual_seed(seed)
    return titok.models.build_model(TINY_CONFIGS[name]).eval()
