"""Stage 1's objective: predict a frozen 2-D VQGAN's code of every patch ("proxy codes") from the 1-D tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def proxy_code_loss(logits: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy (no label smoothing) and argmax accuracy of ``logits`` (B, G, K) against the teacher's
    ``codes`` (B, G) int64, patches in raster order. Computed in float32."""
    if logits.shape[:2] != codes.shape:
        raise ValueError(f"proxy logits {tuple(logits.shape)} do not match teacher codes {tuple(codes.shape)}")
    loss = F.cross_entropy(logits.float().transpose(1, 2), codes)
    accuracy = (logits.argmax(-1) == codes).float().mean()
    return loss, accuracy
