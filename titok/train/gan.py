"""The adversarial half of the ``vqgan``, ``stage2`` and ``single_stage`` recipes, written once.

From step ``gan.start`` on, the tokenizer's loss gains ``gan.weight * -mean D(x_hat)`` (the discriminator frozen for
that step), and after the tokenizer's update the discriminator takes a step of its own on the same images and
(detached) reconstructions: hinge loss + ``lecam_weight`` x LeCam, its own AdamW, clipping and warm-up + cosine
schedule counted from ``gan.start``. As in the reference, the weight is constant (no adaptive gradient-norm weight).
The LeCam averages follow the batch-mean logits of all processes, so every process holds the same averages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from titok.config import Config
from titok.losses.gan import LeCam, NLayerDiscriminator, hinge_d_loss, hinge_g_loss
from titok.train.config import OptimConfig
from titok.train.loop import full_precision, seeded
from titok.train.optim import make_optimizer
from titok.train.runfolder import ARCHITECTURE
from titok.train.runtime import Runtime

DISCRIMINATOR_SHAPE = ("gan.hidden_channels", "gan.num_stages", "gan.norm_groups", "gan.pool_size")


@dataclass(frozen=True)
class GANConfig(Config):
    """The discriminator and its schedule. ``weight`` 0 trains without a GAN (no discriminator is built)."""

    weight: float = 0.1  # the reference's discriminator_weight x discriminator_factor
    start: int = 200_000  # discriminator_start: the step the GAN terms begin
    lecam_weight: float = 0.001
    lecam_decay: float = 0.999
    hidden_channels: int = 128
    num_stages: int = 3
    norm_groups: int = 32
    pool_size: int = 16
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4, warmup_steps=5000)
    )

    def __post_init__(self) -> None:
        if self.weight < 0 or self.lecam_weight < 0:
            raise ValueError(f"gan.weight and gan.lecam_weight must be >= 0, got {self.weight}, {self.lecam_weight}")
        if self.start < 0:
            raise ValueError(f"gan.start must be >= 0, got {self.start}")


def resume_architecture(stored: Mapping[str, Any]) -> tuple[str, ...]:
    """The keys a resume of a GAN recipe may not change: the model's, and the discriminator's shape when the
    checkpoint (written with ``stored``) holds a discriminator (``gan.weight`` > 0)."""
    has_discriminator = (stored.get("gan") or {}).get("weight", 0) > 0
    return (*ARCHITECTURE, *(DISCRIMINATOR_SHAPE if has_discriminator else ()))


class Adversary:
    """A discriminator trained against a tokenizer (see the module docstring)."""

    def __init__(self, rt: Runtime, cfg: GANConfig, seed: int) -> None:
        self.rt, self.cfg = rt, cfg
        disc = seeded(
            lambda: NLayerDiscriminator(3, cfg.hidden_channels, cfg.num_stages, cfg.norm_groups, cfg.pool_size),
            seed,
            rt.device,
        )
        self.lecam = LeCam(cfg.lecam_decay).to(rt.device)
        self.disc, self.optimizer = rt.accelerator.prepare(disc, make_optimizer(disc, cfg.optim))

    def active(self, step: int) -> bool:
        """Whether the GAN terms are on at (0-based) step ``step``."""
        return step >= self.cfg.start

    def generator_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """``-mean D(fake)`` for reconstructions ``fake`` (B, 3, H, W), unweighted; the discriminator is frozen, so
        the gradient reaches the tokenizer only."""
        disc = self.rt.unwrap(self.disc).requires_grad_(False)
        return hinge_g_loss(disc(fake.float()))

    def step(self, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], step: int) -> dict[str, float]:
        """One discriminator update on the micro-batches' (images, reconstructions); its values prefixed ``d_``."""
        if not self.active(step) or not pairs:
            return {}
        self.rt.unwrap(self.disc).requires_grad_(True)
        values = {f"d_{k}": v for k, v in self.rt.accumulate(self.disc, list(pairs), self._loss).items()}
        self.rt.check_finite(step + 1, values)
        total = max(1, self.rt.run.max_steps - self.cfg.start)
        values["d_grad_norm"] = self.rt.apply_gradients(
            self.disc, self.optimizer, self.cfg.optim, step - self.cfg.start, total
        )
        values["d_lr"] = self.optimizer.param_groups[0]["lr"]
        return values

    def _loss(self, pair: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        real, fake = pair
        with full_precision(self.rt.device):
            # one pass over both halves: GroupNorm is per sample, so this equals two separate passes
            logits = self.disc(torch.cat([real, fake]).float())
            real_logits, fake_logits = logits.chunk(2)
            hinge = hinge_d_loss(real_logits, fake_logits)
            real_mean, fake_mean = real_logits.mean(), fake_logits.mean()
            lecam = self.cfg.lecam_weight * self.lecam.loss(real_mean, fake_mean)
        reduce = self.rt.accelerator.reduce
        self.lecam.update(reduce(real_mean.detach(), "mean"), reduce(fake_mean.detach(), "mean"))
        values = {"hinge": hinge, "lecam": lecam, "logits_real": real_mean, "logits_fake": fake_mean}
        return {"loss": hinge + lecam, **values}

    def state_dict(self) -> dict[str, Any]:
        return {
            "discriminator": self.rt.unwrap(self.disc).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lecam": self.lecam.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rt.unwrap(self.disc).load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lecam.load_state_dict(state["lecam"])
