"""A run's scalars in ``metrics.jsonl`` (one JSON object per logged step), tensorboard and optionally wandb.

A process killed while appending leaves a torn last line; a resume drops it (and any other line that is not a
metrics entry) with a warning naming the file and the line, and keeps the entries up to the checkpoint's step.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from titok.extras import install_hint
from titok.io import atomic_write, read_jsonl

logger = logging.getLogger(__name__)


def entries_up_to(path: Path, step: int) -> list[str]:
    """The lines of metrics file ``path`` of steps up to ``step``; damaged lines are dropped with a warning."""

    def valid(entry: Any) -> bool:
        return isinstance(entry, dict) and isinstance(entry.get("step"), int)

    damaged = "is torn or not a metrics entry (%s): dropped"
    lines = read_jsonl(path, valid, "no integer 'step'", damaged, skip_blank=True)
    return [line for line, entry in lines if entry["step"] <= step]


class MetricsLogger:
    """Scalars to ``metrics.jsonl`` (one JSON object per logged step), tensorboard and optionally wandb; images to
    tensorboard. On resume, entries after the checkpoint's step are dropped, so the file reads as one run."""

    def __init__(
        self,
        directory: Path,
        *,
        enabled: bool,
        tensorboard: bool,
        wandb_project: str | None,
        resume_step: int | None,
        recipe: Mapping[str, Any],
    ) -> None:
        self.enabled = enabled
        self.path = directory / "metrics.jsonl"
        self.tb = self.wandb = None
        if not enabled:
            return
        kept = []
        if resume_step is not None and self.path.is_file():
            kept = entries_up_to(self.path, resume_step)
        atomic_write(self.path, lambda p: Path(p).write_text("".join(line + "\n" for line in kept)))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ImportError(f"tensorboard logging needs tensorboard: {install_hint('train')}") from None
            self.tb = SummaryWriter(str(directory / "tensorboard"))
        if wandb_project:
            try:
                import wandb
            except ImportError:
                raise ImportError(f"train.wandb_project needs wandb: {install_hint('wandb')}") from None
            self.wandb = wandb.init(project=wandb_project, config=dict(recipe), resume="allow")

    def log(self, step: int, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **{k: float(v) for k, v in values.items()}}) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(dict(values), step=step)

    def image(self, step: int, tag: str, grid: torch.Tensor) -> None:
        """``grid``: (3, H, W) float in [0, 1]."""
        if self.enabled and self.tb is not None:
            self.tb.add_image(tag, grid, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
