"""AdamW parameter groups (the reference's weight-decay rule) and the learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from titok.train.config import OptimConfig

# Parameters whose names contain one of these take no weight decay (as do all parameters with fewer than 2 axes):
# embeddings, positional tables, learned tokens and codebooks.
NO_DECAY_NAMES = ("embed", "latent_tokens", "mask_token", "class_token", "codebook")


def param_groups(named: Iterable[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    """Trainable parameters split into a decayed and an undecayed group; frozen ones are left out."""
    decay, no_decay = [], []
    for name, p in named:
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or any(s in name for s in NO_DECAY_NAMES) else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(module: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    groups = param_groups(module.named_parameters(), cfg.weight_decay)
    if not any(g["params"] for g in groups):
        raise ValueError("nothing to optimise: every parameter is frozen")
    fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused or None)


def lr_at(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up from 0, then cosine to ``end_lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    return cfg.end_lr + (cfg.lr - cfg.end_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
