"""What the tokenizer recipes minimise.

- :class:`PixelObjective` (``vqgan``, ``stage2``, ``single_stage``): ``reconstruction_weight`` x L2 (or L1) +
  perceptual (LPIPS / ConvNeXt-S logits) + ``quantizer_weight`` x the VQ loss + ``kl_weight`` x KL (VAE) +
  ``gan.weight`` x the generator's hinge term, computed in float32 on raw (unclamped) reconstructions, with a
  discriminator step after each update. Each term is logged unweighted (``perceptual`` as its weighted sum of LPIPS
  and ConvNeXt), ``loss`` is the weighted total.
- :class:`ProxyObjective` (``stage1``): cross-entropy of the proxy logits against a frozen 2-D VQGAN's codes of the
  same (augmented) image + ``quantizer_weight`` x the VQ loss.

Our VectorQuantizer's loss follows the VQ-VAE convention: ``commitment_cost`` (beta) multiplies the commitment term
``mean((sg[q] - z)^2)``; the codebook term ``mean((q - sg[z])^2)`` has weight 1. (The MaskGIT-VQGAN code the
reference ported puts beta on the codebook term instead; it never trained with it.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from titok.config import Config
from titok.data.batch import CodedBatch, TrainBatch
from titok.losses.perceptual import build_perceptual
from titok.losses.proxy import proxy_code_loss
from titok.losses.reconstruction import kl_loss, reconstruction_loss
from titok.models import MaskGITVQGAN, TiTok
from titok.quantizers import DiagonalGaussian, VectorQuantizer
from titok.train.codebook import CodebookConfig, CodebookMaintenance
from titok.train.gan import Adversary, GANConfig
from titok.train.loop import CodeUsage, full_precision
from titok.train.ordering import OrderingConfig, draw_lengths
from titok.train.runtime import Runtime

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LossConfig(Config):
    """Weights of the pixel recipes' loss terms (0 switches a term off) and the perceptual networks' files.

    The perceptual weights are absolute: the reference's ``"lpips-convnext_s-1.0-0.1"`` x ``perceptual_weight`` 1.1
    is lpips 1.0 + convnext 0.1. Weight files default to torchvision's cache (see :mod:`titok.losses.perceptual`).
    """

    reconstruction: Literal["l2", "l1"] = "l2"
    reconstruction_weight: float = 1.0
    lpips_weight: float = 1.0
    convnext_weight: float = 0.1
    quantizer_weight: float = 1.0
    kl_weight: float = 1e-6  # continuous (VAE) tokenizers only
    lpips_vgg_weights: str | None = None  # torchvision's vgg16-397923af.pth
    lpips_heads: str | None = None  # LPIPS v0.1 linear heads; default: the copy inside the lpips package
    convnext_weights: str | None = None  # torchvision's convnext_small-0c510722.pth
    fmnist_feature_weight: float = 0.0  # LPIPS-style distance in a Fashion-MNIST classifier's activations
    fmnist_feature_network: str | None = None  # its weights (python -m titok.metrics.fmnist --seed 1 -o FILE)

    def __post_init__(self) -> None:
        weights = ("reconstruction_weight", "lpips_weight", "convnext_weight", "fmnist_feature_weight")
        for name in (*weights, "quantizer_weight", "kl_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"losses.{name} must be >= 0, got {getattr(self, name)}")


def codebook_maintenance(
    rt: Runtime, model: nn.Module, cfg: CodebookConfig | None, seed: int
) -> CodebookMaintenance | None:
    """The codebook remedies of ``cfg`` for ``model``'s quantizer; None when none is on. They act on a learned
    codebook only: asking for them with FSQ or continuous tokens is an error."""
    if cfg is None or not cfg.active:
        return None
    quantizer = getattr(model, "quantizer", None)
    if not isinstance(quantizer, VectorQuantizer):
        kind = "continuous tokens" if quantizer is None else type(quantizer).__name__
        raise ValueError(f"the codebook section's remedies need a learned (vq) codebook; this model has {kind}")
    return CodebookMaintenance(cfg, quantizer, seed + 104729, rt.device)


def _latents(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    encoded = model.encode(images)
    return encoded.mode() if isinstance(encoded, DiagonalGaussian) else model.quantize(encoded).quantized


class PixelObjective:
    """Reconstruct pixels, with perceptual and GAN terms (see the module docstring)."""

    def __init__(
        self,
        rt: Runtime,
        model: TiTok | MaskGITVQGAN,
        losses: LossConfig,
        gan: GANConfig,
        seed: int,
        codebook: CodebookConfig | None = None,
        ordering: OrderingConfig | None = None,
    ):
        self.rt, self.losses = rt, losses
        self.maintenance = codebook_maintenance(rt, model, codebook, seed)
        self.ordering = ordering if ordering is not None and ordering.per != "off" else None
        self.vae = isinstance(model, TiTok) and model.config.quantizer == "vae"
        perceptual = build_perceptual(
            losses.lpips_weight,
            losses.convnext_weight,
            lpips_vgg_weights=losses.lpips_vgg_weights,
            lpips_heads=losses.lpips_heads,
            convnext_weights=losses.convnext_weights,
            fmnist_feature_weight=losses.fmnist_feature_weight,
            fmnist_feature_network=losses.fmnist_feature_network,
        )
        self.perceptual = perceptual.to(rt.device) if perceptual is not None else None
        self.adversary = Adversary(rt, gan, seed + 1) if gan.weight > 0 else None
        self.usage = CodeUsage(model.codebook_size, rt.device) if model.codebook_size else None
        self.generators = {"posterior": torch.Generator(rt.device).manual_seed(seed + 7919 * (rt.rank + 1))}
        if self.ordering is not None:
            self.generators["ordering"] = torch.Generator().manual_seed(seed + 15485863 * (rt.rank + 1))
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def loss(self, model: nn.Module, batch: TrainBatch, step: int) -> dict[str, torch.Tensor]:
        images = batch.images.to(self.rt.device, non_blocking=True)
        kwargs = {"generator": self.generators["posterior"]} if self.vae else {}
        if self.ordering is not None:
            kwargs["keep"] = _kept(self.ordering, self.generators["ordering"], model, len(images))
        out = model(images, **kwargs)
        w = self.losses
        with full_precision(self.rt.device):
            recon = out.decoded.float()
            terms = {"rec": reconstruction_loss(recon, images, w.reconstruction)}
            total = w.reconstruction_weight * terms["rec"]
            if self.perceptual is not None:
                terms["perceptual"] = self.perceptual(recon, images)
                total = total + terms["perceptual"]
            if out.quantizer is not None:
                terms["quantizer"] = out.quantizer.loss
                total = total + w.quantizer_weight * terms["quantizer"]
            if getattr(out, "posterior", None) is not None:
                terms["kl"] = kl_loss(out.posterior)
                total = total + w.kl_weight * terms["kl"]
            if self.adversary is not None and self.adversary.active(step):
                terms["gan"] = self.adversary.generator_loss(recon)
                total = total + self.adversary.cfg.weight * terms["gan"]
                self._pairs.append((images, recon.detach()))
        if self.usage is not None and out.quantizer is not None:
            self.usage.add(out.quantizer.codes)
        if self.maintenance is not None:
            self.maintenance.observe(out.quantizer)
        return {"loss": total, **terms}

    def after_step(self, step: int) -> dict[str, float]:
        if self.usage is not None:
            self.usage.flush(self.rt)
        values = self.adversary.step(self._pairs, step) if self.adversary is not None else {}
        self._pairs.clear()
        if self.maintenance is not None:
            values.update(self.maintenance.step(self.rt.accelerator.gather))
        return values

    def window(self) -> dict[str, float]:
        return self.usage.stats() if self.usage is not None else {}

    def reconstruct(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model.decode(_latents(model, images))

    def state_dict(self) -> dict[str, Any]:
        return {
            "adversary": self.adversary.state_dict() if self.adversary is not None else None,
            "codes": self.usage.window if self.usage is not None else None,
            "codebook": self.maintenance.state_dict() if self.maintenance is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.adversary is not None and state["adversary"] is None:
            logger.warning("the checkpoint holds no discriminator (gan.weight was 0): a new one starts now")
        elif self.adversary is not None:
            self.adversary.load_state_dict(state["adversary"])
        elif state["adversary"] is not None:
            logger.warning("gan.weight is 0 now: the checkpoint's discriminator is not used")
        if self.usage is not None:
            self.usage.window.copy_(state["codes"])
        _load_maintenance(self.maintenance, state)


def _kept(cfg: OrderingConfig, generator: torch.Generator, model: nn.Module, batch: int) -> torch.Tensor:
    num_tokens = getattr(model, "module", model).num_tokens  # through a DDP wrapper
    return draw_lengths(cfg, batch, num_tokens, generator)


def _load_maintenance(maintenance: CodebookMaintenance | None, state: dict[str, Any]) -> None:
    saved = state.get("codebook")
    if maintenance is not None and saved is None:
        logger.warning("the checkpoint holds no codebook-maintenance state: the codebook remedies start now")
        maintenance.initialised = True  # a k-means initialisation would overwrite the trained codebook
    elif maintenance is not None:
        maintenance.load_state_dict(saved)
    elif saved is not None:
        logger.warning("the codebook remedies are off now: the checkpoint's codebook-maintenance state is not used")


class ProxyObjective:
    """Stage 1: predict the frozen ``teacher``'s codes. Codes come with the batch (a cache: a
    :class:`CodedBatch`) or are computed on the fly from the batch's images, in float32 under ``no_grad``.
    ``teacher`` may be None when every batch brings its codes and no previews are drawn."""

    def __init__(
        self,
        rt: Runtime,
        model: TiTok,
        teacher: MaskGITVQGAN | None,
        quantizer_weight: float,
        codebook: CodebookConfig | None = None,
        seed: int = 0,
        ordering: OrderingConfig | None = None,
    ) -> None:
        self.rt, self.teacher, self.quantizer_weight = rt, teacher, quantizer_weight
        self.ordering = ordering if ordering is not None and ordering.per != "off" else None
        self.generators: dict[str, torch.Generator] = {}
        if self.ordering is not None:
            self.generators["ordering"] = torch.Generator().manual_seed(seed + 15485863 * (rt.rank + 1))
        self.usage = CodeUsage(model.config.codebook_size, rt.device)
        self.maintenance = codebook_maintenance(rt, model, codebook, seed)

    @torch.no_grad()
    def teacher_codes(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's codes (B, G) of images (B, 3, S, S) in [0, 1]."""
        with full_precision(self.rt.device):
            return self.teacher.quantize(self.teacher.encode(images.float())).codes

    def loss(self, model: nn.Module, batch: TrainBatch, step: int) -> dict[str, torch.Tensor]:
        images = batch.images.to(self.rt.device, non_blocking=True)
        cached = isinstance(batch, CodedBatch)
        codes = batch.teacher_codes.to(self.rt.device) if cached else self.teacher_codes(images)
        keep = None
        if self.ordering is not None:
            keep = _kept(self.ordering, self.generators["ordering"], model, len(images))
        out = model(images, keep=keep)
        with full_precision(self.rt.device):
            ce, accuracy = proxy_code_loss(out.decoded, codes)
            total = ce + self.quantizer_weight * out.quantizer.loss
        self.usage.add(out.quantizer.codes)
        if self.maintenance is not None:
            self.maintenance.observe(out.quantizer)
        return {"loss": total, "proxy_ce": ce, "proxy_accuracy": accuracy, "quantizer": out.quantizer.loss}

    def after_step(self, step: int) -> dict[str, float]:
        self.usage.flush(self.rt)
        return self.maintenance.step(self.rt.accelerator.gather) if self.maintenance is not None else {}

    def window(self) -> dict[str, float]:
        return self.usage.stats()

    def reconstruct(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The proxy logits' argmax, decoded by the teacher."""
        return self.teacher.detokenize(model.proxy_logits(_latents(model, images)).argmax(-1))

    def state_dict(self) -> dict[str, Any]:
        return {
            "codes": self.usage.window,
            "codebook": self.maintenance.state_dict() if self.maintenance is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.usage.window.copy_(state["codes"])
        _load_maintenance(self.maintenance, state)
