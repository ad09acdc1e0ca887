"""Exponential moving average of a model's weights, with the reference's warm-up of the decay."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """A frozen copy of ``model`` tracking its weights.

    Update ``k`` (1-based) uses decay ``min(k / (k + 9), max_decay)`` (0 at the first update: a plain copy):
    ``shadow <- shadow + (1 - decay) * (param - shadow)``. Frozen parameters and buffers are copied.
    """

    def __init__(self, model: nn.Module, max_decay: float = 0.999) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.max_decay = max_decay
        self.updates = 0

    def decay(self) -> float:
        k = self.updates
        return 0.0 if k <= 1 else min(k / (k + 9), self.max_decay)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        weight = 1.0 - self.decay()
        shadow = dict(self.model.named_parameters())
        trained, targets = [], []
        for name, p in model.named_parameters():
            if p.requires_grad:
                trained.append(shadow[name])
                targets.append(p.detach().to(shadow[name].dtype))
            else:
                shadow[name].copy_(p)
        if trained:
            torch._foreach_lerp_(trained, targets, weight)
        for (_, b_shadow), (_, b) in zip(self.model.named_buffers(), model.named_buffers()):
            b_shadow.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
