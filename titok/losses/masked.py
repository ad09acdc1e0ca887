"""MaskGIT's training objective: mask a schedule-drawn fraction of each sequence, predict every token."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from titok.sampling import mask_ratio


def random_mask(
    codes: torch.Tensor, schedule: str = "arccos", generator: torch.Generator | None = None
) -> torch.Tensor:
    """A boolean mask (B, N), True = masked: per row, t ~ U(0, 1), ratio = schedule(t) clamped to [1e-6, 1], and
    the ``max(1, round(N * ratio))`` positions ranked first by a random permutation are masked."""
    b, n = codes.shape
    t = torch.rand(b, generator=generator, device=codes.device)
    count = (n * mask_ratio(schedule, t).clamp(1e-6, 1.0)).round().clamp(min=1)
    ranks = torch.rand(b, n, generator=generator, device=codes.device).argsort(-1)
    return ranks < count[:, None]


def masked_token_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    *,
    label_smoothing: float = 0.1,
    unmasked_weight: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy over all N positions, weight 1 where masked and ``unmasked_weight`` elsewhere.

    ``logits`` (B, N, K), ``targets`` (B, N) int64, ``mask`` (B, N) bool. Returns the weighted mean loss and the
    argmax accuracy on masked positions.
    """
    ce = F.cross_entropy(logits.float().transpose(1, 2), targets, label_smoothing=label_smoothing, reduction="none")
    weight = torch.where(mask, 1.0, unmasked_weight)
    loss = (ce * weight).sum() / (weight.sum() + 1e-8)
    correct = (logits.argmax(-1) == targets) & mask
    accuracy = correct.sum() / mask.sum().clamp(min=1)
    return loss, accuracy
