"""Every named model size, written once: the paper's variants and the released checkpoints.

``PRESETS[name]`` is a :class:`Preset`: the config, a one-line description, and where the released weights live on
the Hugging Face Hub (``None`` where the paper's variant was not released).
"""

from __future__ import annotations

from dataclasses import dataclass

from titok.config import Config
from titok.models.generator import GeneratorConfig
from titok.models.tokenizer_config import VIT_SIZES, TiTokConfig
from titok.models.vqgan import VQGANConfig
from titok.sampling import SamplingConfig


@dataclass(frozen=True)
class Preset:
    config: Config
    description: str
    hub_id: str | None = None


MASKGIT_VQGAN = VQGANConfig()


def _two_stage(enc: str, dec: str, tokens: int, image_size: int = 256) -> TiTokConfig:
    """The paper's two-stage recipe: 4096 x 12 l2 codebook, proxy head + the MaskGIT-VQGAN pixel decoder."""
    return TiTokConfig(
        image_size=image_size,
        num_tokens=tokens,
        encoder=VIT_SIZES[enc],
        decoder=VIT_SIZES[dec],
        codebook_size=4096,
        token_dim=12,
        l2_norm=True,
        head="vqgan",
        pixel_decoder=MASKGIT_VQGAN.replace(image_size=image_size),
        legacy_token_order=True,
    )


def _single_stage(enc: str, dec: str, tokens: int, vae: bool) -> TiTokConfig:
    """The single-stage releases: pixel head; VQ 8192 x 64 without l2, or a 16-channel VAE."""
    return TiTokConfig(
        num_tokens=tokens,
        encoder=VIT_SIZES[enc],
        decoder=VIT_SIZES[dec],
        quantizer="vae" if vae else "vq",
        codebook_size=8192,
        token_dim=16 if vae else 64,
        l2_norm=False,
        head="pixels",
    )


def _generator(arch: str, tokens: int, hidden: int, depth: int, mlp: int, sampling: SamplingConfig) -> GeneratorConfig:
    return GeneratorConfig(
        arch=arch,  # type: ignore[arg-type]
        codebook_size=4096,
        num_tokens=tokens,
        num_classes=1000,
        hidden_size=hidden,
        depth=depth,
        num_heads=16,
        mlp_dim=mlp,
        sampling=sampling,
    )


_HUB = "yucornetto/{}_imagenet"

# The released ImageNet sampling settings (softmax-temperature annealing on, guidance power 3.0).
_SAMPLE_L32 = SamplingConfig(8, 4.5, "linear", 3.0, 9.5, True)
_SAMPLE_B64 = SamplingConfig(8, 3.0, "linear", 3.0, 11.0, True)
_SAMPLE_S128 = SamplingConfig(64, 6.9, "power-cosine", 3.0, 2.8, True)

PRESETS: dict[str, Preset] = {
    "titok_l32": Preset(
        _two_stage("large", "large", 32), "TiTok-L-32, 256 px, 32 tokens", _HUB.format("tokenizer_titok_l32")
    ),
    "titok_b64": Preset(
        _two_stage("base", "base", 64), "TiTok-B-64, 256 px, 64 tokens", _HUB.format("tokenizer_titok_b64")
    ),
    "titok_s128": Preset(
        _two_stage("small", "small", 128), "TiTok-S-128, 256 px, 128 tokens", _HUB.format("tokenizer_titok_s128")
    ),
    "titok_l64": Preset(_two_stage("large", "large", 64, 512), "TiTok-L-64, 512 px, 64 tokens (paper; unreleased)"),
    "titok_b128": Preset(_two_stage("base", "base", 128, 512), "TiTok-B-128, 512 px, 128 tokens (paper; unreleased)"),
    "titok_bl64_vq8k": Preset(
        _single_stage("base", "large", 64, vae=False),
        "TiTok-BL-64 VQ, single-stage, 8192 x 64 codebook",
        _HUB.format("tokenizer_titok_bl64_vq8k"),
    ),
    "titok_bl128_vq8k": Preset(
        _single_stage("base", "large", 128, vae=False),
        "TiTok-BL-128 VQ, single-stage, 8192 x 64 codebook",
        _HUB.format("tokenizer_titok_bl128_vq8k"),
    ),
    "titok_sl256_vq8k": Preset(
        _single_stage("small", "large", 256, vae=False),
        "TiTok-SL-256 VQ, single-stage, 8192 x 64 codebook",
        _HUB.format("tokenizer_titok_sl256_vq8k"),
    ),
    "titok_ll32_vae": Preset(
        _single_stage("large", "large", 32, vae=True),
        "TiTok-LL-32 VAE, single-stage, 16 channels",
        _HUB.format("tokenizer_titok_ll32_vae_c16"),
    ),
    "titok_bl64_vae": Preset(
        _single_stage("base", "large", 64, vae=True),
        "TiTok-BL-64 VAE, single-stage, 16 channels",
        _HUB.format("tokenizer_titok_bl64_vae_c16"),
    ),
    "titok_bl128_vae": Preset(
        _single_stage("base", "large", 128, vae=True),
        "TiTok-BL-128 VAE, single-stage, 16 channels",
        _HUB.format("tokenizer_titok_bl128_vae_c16"),
    ),
    "maskgit_vqgan": Preset(
        MASKGIT_VQGAN, "MaskGIT-VQGAN, 2-D, 16 x 16 codes of 1024 (file: maskgit-vqgan-imagenet-f16-256.bin)"
    ),
    "generator_titok_l32": Preset(
        _generator("bert", 32, 768, 24, 3072, _SAMPLE_L32),
        "MaskGIT BERT 24 x 768 on TiTok-L-32 codes, ImageNet classes",
        _HUB.format("generator_titok_l32"),
    ),
    "generator_titok_b64": Preset(
        _generator("bert", 64, 768, 24, 3072, _SAMPLE_B64),
        "MaskGIT BERT 24 x 768 on TiTok-B-64 codes, ImageNet classes",
        _HUB.format("generator_titok_b64"),
    ),
    "generator_titok_s128": Preset(
        _generator("uvit", 128, 1024, 20, 4096, _SAMPLE_S128),
        "MaskGIT U-ViT 1024 x 20 (21 blocks) on TiTok-S-128 codes, ImageNet classes",
        _HUB.format("generator_titok_s128"),
    ),
}
