"""MaskGIT decoding as pure functions: mask schedules, guidance schedules, and the decoding loop.

The loop starts from all-masked codes and, over ``num_sample_steps`` steps, samples every masked position, keeps the
most confident samples and re-masks the rest, until nothing is masked. It calls a ``tokens_to_logits(codes, drop)``
callable: codes (B, N) with masked positions set to the mask id, and ``drop`` (B,) bool marking unconditional rows;
it returns logits (B, N, K). Conditional and unconditional rows of a guided step go through one batched call.
Randomness comes from an optional ``torch.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from titok.config import Config

TokensToLogits = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# ``on_step(step, codes, sampled)`` after each step (0-based): ``codes`` (B, N) the codes kept so far with the
# still-masked positions set to the mask id, ``sampled`` (B, N) this step's guess at every position (the kept codes
# and a sample at each masked one). Both are copies; after the last step nothing is masked and they are equal.
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]

# Fraction of tokens still masked after a fraction t of the steps (t in [0, 1]): 1 at t = 0, 0 at t = 1.
MASK_SCHEDULES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "arccos": lambda t: torch.acos(t) / (math.pi / 2),
    "cosine": lambda t: torch.cos(t * (math.pi / 2)),
    "linear": lambda t: 1.0 - t,
    "square": lambda t: 1.0 - t * t,
    "sqrt": lambda t: 1.0 - torch.sqrt(t),
}

GUIDANCE_DECAYS = ("constant", "linear", "power-cosine")


def mask_ratio(schedule: str, t: torch.Tensor | float) -> torch.Tensor:
    """The schedule's masked fraction at progress ``t`` (elementwise; floats are computed in float64), in [0, 1]."""
    if schedule not in MASK_SCHEDULES:
        raise ValueError(f"unknown mask schedule {schedule!r}; expected one of {list(MASK_SCHEDULES)}")
    t = t if isinstance(t, torch.Tensor) else torch.tensor(t, dtype=torch.float64)
    return MASK_SCHEDULES[schedule](t.clamp(0.0, 1.0)).clamp(0.0, 1.0)


def guidance_at(step: int, num_steps: int, scale: float, decay: str, power: float = 3.0) -> float:
    """The guidance value of ``step`` (0-based), as the reference schedules it.

    ``constant``: ``scale`` throughout. ``linear``: ``step * scale / num_steps`` (the first step is unguided).
    ``power-cosine``: ``(scale - 1) * (1 - cos(pi * (step / num_steps) ** power)) / 2 + 1``.
    """
    if decay == "constant":
        return scale
    if decay == "linear":
        return step / num_steps * scale
    if decay == "power-cosine":
        return (scale - 1) * 0.5 * (1 - math.cos(math.pi * (step / num_steps) ** power)) + 1
    raise ValueError(f"unknown guidance_decay {decay!r}; expected one of {list(GUIDANCE_DECAYS)}")


def guide(cond: torch.Tensor, uncond: torch.Tensor, cfg: float, decay: str) -> torch.Tensor:
    """Combine guided logits. The reference uses ``cond + cfg * (cond - uncond)`` (an effective weight of
    ``1 + cfg``) for the constant and linear decays, and the standard ``uncond + cfg * (cond - uncond)`` for
    power-cosine; both are kept so its released settings mean what they meant there."""
    base = uncond if decay == "power-cosine" else cond
    return base + cfg * (cond - uncond)


def gumbel(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Gumbel(0, 1) noise ``-log(-log(u))``, each log clamped at 1e-20, drawn with ``generator`` on its device."""
    u = torch.rand(shape, generator=generator, device=generator.device if generator is not None else device)
    # in place: the same operations in the same order as -log(-log(u)), without a new (B, N, K) tensor for each
    return u.clamp_min_(1e-20).log_().neg_().clamp_min_(1e-20).log_().neg_().to(device)


def sample(logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Codes drawn from ``softmax(logits / temperature)`` over the last axis (Gumbel-max); greedy at 0."""
    if temperature > 0:
        noise = gumbel(logits.shape, generator, logits.device).mul_(temperature)
        # logits + temperature * noise, computed in the noise's buffer (addition commutes: the same sums)
        logits = noise.to(torch.promote_types(noise.dtype, logits.dtype)).add_(logits)
    return logits.argmax(-1)


@dataclass(frozen=True)
class SamplingConfig(Config):
    """Settings of MaskGIT sampling, under the reference's keyword names."""

    num_sample_steps: int = 8
    guidance_scale: float = 3.0
    guidance_decay: Literal["constant", "linear", "power-cosine"] = "constant"
    guidance_scale_pow: float = 3.0
    randomize_temperature: float = 2.0
    softmax_temperature_annealing: bool = False
    mask_schedule: Literal["arccos", "cosine", "linear", "square", "sqrt"] = "arccos"

    def __post_init__(self) -> None:
        if self.num_sample_steps < 1:
            raise ValueError(f"num_sample_steps must be at least 1, got {self.num_sample_steps}")
        if self.guidance_decay not in GUIDANCE_DECAYS:
            raise ValueError(f"unknown guidance_decay {self.guidance_decay!r}; expected one of {list(GUIDANCE_DECAYS)}")
        if self.mask_schedule not in MASK_SCHEDULES:
            raise ValueError(f"unknown mask schedule {self.mask_schedule!r}; expected one of {list(MASK_SCHEDULES)}")
        if self.randomize_temperature < 0:
            raise ValueError(f"randomize_temperature must be >= 0, got {self.randomize_temperature}")


def maskgit_decode(
    tokens_to_logits: TokensToLogits,
    *,
    batch_size: int,
    num_tokens: int,
    mask_token_id: int,
    conditional: bool,
    settings: SamplingConfig,
    device: torch.device,
    generator: torch.Generator | None = None,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Run MaskGIT decoding; returns codes (B, N) int64 with no masked position left.

    ``conditional=False`` samples without classes (every row unconditional, no guidance). ``on_step`` (see
    :data:`StepCallback`) watches the decoding, e.g. to draw it; it changes nothing in it.
    """
    s = settings
    steps, n = s.num_sample_steps, num_tokens
    ids = torch.full((batch_size, n), mask_token_id, dtype=torch.long, device=device)
    no_drop = torch.zeros(batch_size, dtype=torch.bool, device=device)
    drop_all = torch.ones(batch_size, dtype=torch.bool, device=device)
    for step in range(steps):
        ratio = (step + 1) / steps
        temperature = s.randomize_temperature * (1 - ratio)
        is_mask = ids == mask_token_id
        cfg = guidance_at(step, steps, s.guidance_scale, s.guidance_decay, s.guidance_scale_pow)
        if not conditional:
            logits = tokens_to_logits(ids, drop_all).float()
        elif cfg != 0:  # float32 from here on, whatever precision the model ran in
            cond, uncond = tokens_to_logits(torch.cat([ids, ids]), torch.cat([no_drop, drop_all])).float().chunk(2)
            logits = guide(cond, uncond, cfg, s.guidance_decay)
        else:
            logits = tokens_to_logits(ids, no_drop).float()
        if s.softmax_temperature_annealing:
            logits = logits / (0.5 + 0.8 * (1 - ratio))
        sampled = torch.where(is_mask, sample(logits, temperature, generator), ids)
        if step == steps - 1:
            if on_step is not None:
                on_step(step, sampled.clone(), sampled.clone())
            return sampled
        confidence = logits.gather(-1, sampled[..., None])[..., 0]
        confidence = torch.where(is_mask, confidence, torch.full_like(confidence, math.inf))
        if temperature > 0:
            confidence = confidence + temperature * gumbel(confidence.shape, generator, device)
        # how many to re-mask: the schedule's count, at least 1 and fewer than are masked now (counted on the
        # first row, as the reference does); kept on the device so the loop never waits for the GPU
        target = math.floor(n * float(mask_ratio(s.mask_schedule, ratio)))
        mask_len = (is_mask[:1].sum(-1, keepdim=True) - 1).clamp(max=target).clamp(min=1)  # (1, 1)
        threshold = confidence.sort(-1).values.gather(-1, (mask_len - 1).expand(batch_size, 1))
        ids = torch.where(confidence <= threshold, torch.full_like(sampled, mask_token_id), sampled)
        if on_step is not None:
            on_step(step, ids.clone(), sampled.clone())
    return ids
