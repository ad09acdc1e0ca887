"""Recipes ``stage1``, ``stage2`` and ``single_stage``: training TiTok tokenizers.

- ``stage1``: the two-stage recipe's first stage. A TiTok with the ``proxy`` head learns to predict, for every
  patch, the code a frozen 2-D VQGAN (the "teacher": the released MaskGIT-VQGAN, or one trained with the ``vqgan``
  recipe) gives that patch of the same augmented image: cross-entropy + the VQ loss. Everything in the TiTok trains.
  The teacher's codes are computed on the fly, or read from a tokens folder written by
  ``titok pretokenize TEACHER DATA`` (center crops, so no random crop; random flips only with a ``--flip`` cache).
- ``stage2``: the second stage. The stage-1 tokenizer gains the teacher's codebook and pixel decoder (head
  ``vqgan``); encoder, latent tokens and quantizer are frozen, and the decoder, the proxy head, the codebook and the
  pixel decoder are fine-tuned with L2 + perceptual + GAN (+ LeCam), as the reference does.
- ``single_stage``: a TiTok with the ``pixels`` head (VQ or VAE) trained from scratch with L2 + perceptual + GAN.

Defaults are the reference's values (spec §5); ``configs/tokenizer/`` holds paper-scale and small CPU recipes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from titok.config import Config
from titok.data.build import DataConfig, build_dataset, first_images
from titok.data.tokens import WithCachedCodes
from titok.models import MaskGITVQGAN, TiTok, TiTokConfig, build_model, model_section
from titok.models.tokenizer import check_proxy_teacher, two_stage_from
from titok.train.codebook import CodebookConfig
from titok.train.config import OptimConfig, RunConfig
from titok.train.gan import GANConfig, resume_architecture
from titok.train.heldout import HeldOutConfig
from titok.train.loop import PreviewConfig, fit, seeded
from titok.train.objectives import LossConfig, PixelObjective, ProxyObjective
from titok.train.ordering import OrderingConfig
from titok.train.runtime import Runtime, start

logger = logging.getLogger(__name__)


def adamw(warmup: int, betas: tuple[float, float] = (0.9, 0.999)) -> OptimConfig:
    """The reference's tokenizer optimizer: AdamW lr 1e-4, weight decay 1e-4, warm-up then cosine to 1e-5."""
    return OptimConfig(lr=1e-4, betas=betas, weight_decay=1e-4, warmup_steps=warmup, end_lr=1e-5)


@dataclass(frozen=True)
class ProxyLossConfig(Config):
    quantizer_weight: float = 1.0


@dataclass(frozen=True)
class Stage1Recipe(Config):
    recipe: Literal["stage1"] = "stage1"
    teacher: str = ""  # a 2-D VQGAN: a folder/Hub id for titok.load, or a bare weights file with teacher_preset
    teacher_preset: str | None = None  # e.g. maskgit_vqgan for maskgit-vqgan-imagenet-f16-256.bin
    teacher_codes: str | None = None  # a tokens folder of the teacher's codes of the same data
    model: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    losses: ProxyLossConfig = field(default_factory=ProxyLossConfig)
    codebook: CodebookConfig = field(default_factory=CodebookConfig)
    ordering: OrderingConfig = field(default_factory=OrderingConfig)
    optim: OptimConfig = field(default_factory=lambda: adamw(10_000, betas=(0.9, 0.99)))
    train: RunConfig = field(default_factory=RunConfig)
    preview: PreviewConfig = field(default_factory=PreviewConfig)
    heldout: HeldOutConfig = field(default_factory=HeldOutConfig)

    def __post_init__(self) -> None:
        if not self.teacher:
            raise ValueError("teacher: the 2-D VQGAN whose codes stage 1 predicts is required")
        if self.teacher_codes and self.data.random_crop:
            raise ValueError(
                "teacher_codes were computed on center crops (titok pretokenize): set data.random_crop=false, or "
                "leave teacher_codes unset to compute the codes of random crops on the fly"
            )

    def model_config(self) -> TiTokConfig:
        return _tokenizer_config(self, "proxy", "stage 1 trains the 'proxy' head, got {} (set model.head=proxy)")


@dataclass(frozen=True)
class Stage2Recipe(Config):
    recipe: Literal["stage2"] = "stage2"
    init: str = ""  # the stage-1 tokenizer (titok.load), or a two-stage one (head 'vqgan') to fine-tune further
    teacher: str | None = None  # stage 1's teacher, whose codebook and decoder start the pixel decoder
    teacher_preset: str | None = None
    model: dict[str, Any] = field(default_factory=dict)  # the tokenizer init + teacher must give (checked)
    data: DataConfig = field(default_factory=DataConfig)
    losses: LossConfig = field(default_factory=lambda: LossConfig(lpips_weight=0.0, quantizer_weight=0.0))
    gan: GANConfig = field(default_factory=lambda: GANConfig(weight=0.01, start=20_000))
    ordering: OrderingConfig = field(default_factory=OrderingConfig)
    optim: OptimConfig = field(default_factory=lambda: adamw(5_000))
    train: RunConfig = field(default_factory=RunConfig)
    preview: PreviewConfig = field(default_factory=PreviewConfig)
    heldout: HeldOutConfig = field(default_factory=HeldOutConfig)

    def __post_init__(self) -> None:
        if not self.init:
            raise ValueError("init: the stage-1 tokenizer that stage 2 starts from is required")

    def model_config(self) -> TiTokConfig:
        return _tokenizer_config(self, "vqgan", "stage 2 trains the 'vqgan' head, got {}")


@dataclass(frozen=True)
class PixelRecipe(Config):
    """What the recipes that train a model from scratch on pixels (``single_stage``, ``vqgan``) share: L2 +
    perceptual + VQ + GAN losses, codebook maintenance, the reference's single-stage optimizer."""

    recipe: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    gan: GANConfig = field(default_factory=lambda: GANConfig(optim=adamw(10_000)))
    codebook: CodebookConfig = field(default_factory=CodebookConfig)
    optim: OptimConfig = field(default_factory=lambda: adamw(10_000))
    train: RunConfig = field(default_factory=RunConfig)
    preview: PreviewConfig = field(default_factory=PreviewConfig)
    heldout: HeldOutConfig = field(default_factory=HeldOutConfig)


@dataclass(frozen=True)
class SingleStageRecipe(PixelRecipe):
    recipe: Literal["single_stage"] = "single_stage"
    ordering: OrderingConfig = field(default_factory=OrderingConfig)

    def model_config(self) -> TiTokConfig:
        return _tokenizer_config(self, "pixels", "single-stage training needs the 'pixels' head, got {}")


def _tokenizer_config(recipe: Any, head: str, wrong_head: str) -> TiTokConfig:
    """The recipe's ``model`` section, which must have ``head`` (``wrong_head`` says so) and fit its ordering."""
    cfg = model_section(recipe.model, TiTokConfig)
    if cfg.head != head:
        raise ValueError("model.head: " + wrong_head.format(repr(cfg.head)))
    recipe.ordering.check(cfg.to_dict())
    return cfg


def load_teacher(path: str, preset: str | None = None) -> MaskGITVQGAN:
    """The frozen 2-D VQGAN at ``path`` (``titok.load``; a bare weights file needs ``preset``), in eval mode."""
    import titok

    model = titok.load(path, preset=preset)
    if not isinstance(model, MaskGITVQGAN):
        raise ValueError(f"teacher {path} is a {type(model).__name__}, not a 2-D VQGAN (MaskGITVQGAN)")
    return model.eval().requires_grad_(False)


def train_stage1(recipe: Stage1Recipe, resume: bool | str = False) -> Path:
    """Run the ``stage1`` recipe; returns the exported tokenizer's folder (``output_dir/final``)."""
    config = recipe.model_config()
    teacher = load_teacher(recipe.teacher, recipe.teacher_preset)
    check_proxy_teacher(config, teacher.config)
    rt = start(recipe.train, recipe.to_dict(), resume)
    data = _stage1_data(recipe, config, teacher)
    model = seeded(lambda: build_model(config), recipe.train.seed, rt.device)
    objective = ProxyObjective(
        rt,
        model,
        teacher.to(rt.device),
        recipe.losses.quantizer_weight,
        recipe.codebook,
        recipe.train.seed,
        recipe.ordering,
    )
    return fit(rt, recipe, model, objective, data, previews=_previews(rt, recipe, config.image_size))


def _stage1_data(recipe: Stage1Recipe, config: TiTokConfig, teacher: MaskGITVQGAN):
    if recipe.teacher_codes is None:
        return build_dataset(recipe.data, config.image_size, seed=recipe.train.seed)
    if recipe.data.source == "webdataset":
        raise ValueError("teacher_codes index images by position: use them with folder, npz or fashion_mnist data")
    base = build_dataset(recipe.data.replace(random_flip=False), config.image_size)
    data = WithCachedCodes(base, recipe.teacher_codes, flip=recipe.data.random_flip)
    data.tokens.check(teacher.codebook_size, teacher.num_tokens)
    size = data.tokens.meta.data.get("image_size")
    if size != config.image_size:
        raise ValueError(
            f"{recipe.teacher_codes} holds codes of {size} px images; the tokenizer reads {config.image_size} px"
        )
    return data


def train_stage2(recipe: Stage2Recipe, resume: bool | str = False) -> Path:
    """Run the ``stage2`` recipe; returns the exported tokenizer's folder (``output_dir/final``)."""
    model = stage2_model(recipe)
    model.encoder.requires_grad_(False)  # with the latent tokens
    model.quantizer.requires_grad_(False)
    rt = start(recipe.train, recipe.to_dict(), resume, architecture=resume_architecture)
    return fit_pixels(rt, recipe, model.to(rt.device), frozen=("encoder", "quantizer"))


def stage2_model(recipe: Stage2Recipe) -> TiTok:
    """The tokenizer stage 2 starts from: ``init`` + ``teacher`` (or ``init`` alone if it has its pixel decoder),
    checked against the recipe's ``model``."""
    import titok

    expected = recipe.model_config().to_dict()
    init = titok.load(recipe.init)
    if not isinstance(init, TiTok):
        raise ValueError(f"init {recipe.init} is a {type(init).__name__}, not a TiTok tokenizer")
    if init.config.head == "proxy":
        if recipe.teacher is None:
            raise ValueError(
                f"init {recipe.init} is a stage-1 tokenizer: set teacher (stage 2 starts from its decoder)"
            )
        model = two_stage_from(init, load_teacher(recipe.teacher, recipe.teacher_preset))
    elif recipe.teacher is not None:
        raise ValueError(f"init {recipe.init} already has its pixel decoder (head {init.config.head!r}): unset teacher")
    else:
        model = init
    got = model.config.to_dict()
    differ = [f"{k} is {got[k]!r} there, {expected[k]!r} here" for k in expected if expected[k] != got[k]]
    if differ:
        raise ValueError(f"init {recipe.init} (with its teacher) does not give the recipe's model: {'; '.join(differ)}")
    return model


def train_single_stage(recipe: SingleStageRecipe, resume: bool | str = False) -> Path:
    """Run the ``single_stage`` recipe; returns the exported tokenizer's folder (``output_dir/final``)."""
    config = recipe.model_config()
    rt = start(recipe.train, recipe.to_dict(), resume, architecture=resume_architecture)
    return fit_pixels(rt, recipe, seeded(lambda: build_model(config), recipe.train.seed, rt.device))


def fit_pixels(rt: Runtime, recipe: Any, model: Any, frozen: tuple[str, ...] = ()) -> Path:
    """The pixel recipes' common part (also ``vqgan``'s)."""
    codebook = getattr(recipe, "codebook", None)  # stage 2 freezes the quantizer: no remedies
    ordering = getattr(recipe, "ordering", None)  # the 2-D vqgan recipe has no token order
    objective = PixelObjective(rt, model, recipe.losses, recipe.gan, recipe.train.seed, codebook, ordering)
    data = build_dataset(recipe.data, model.image_size, seed=recipe.train.seed)
    return fit(rt, recipe, model, objective, data, frozen=frozen, previews=_previews(rt, recipe, model.image_size))


def _previews(rt: Runtime, recipe: Any, image_size: int):
    if not rt.is_main or recipe.preview.count < 1:
        return None
    return first_images(recipe.data, image_size, recipe.preview.count)
