"""Recipe files: YAML (shipped ones in ``titok/configs/``), ``key=value`` overrides, strict typed sections.

A recipe is a YAML mapping with a ``recipe`` name and sections; each recipe module defines a :class:`Config`
subclass of the whole file, so an unknown key or a wrongly typed value anywhere is an error that names it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from titok.config import Config
from titok.data.build import DataConfig

__all__ = ["DataConfig", "OptimConfig", "RunConfig", "read_recipe"]


@dataclass(frozen=True)
class OptimConfig(Config):
    """AdamW with linear warm-up then cosine decay to ``end_lr`` (or constant), and global-norm clipping."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 1e-4
    eps: float = 1e-8
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 0
    end_lr: float = 1e-5
    max_grad_norm: float = 1.0  # <= 0: no clipping

    def __post_init__(self) -> None:
        for name in ("lr", "end_lr", "weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if not math.isfinite(value) or (value < 0 and name != "max_grad_norm"):
                raise ValueError(f"optim.{name} must be a finite number >= 0, got {value}")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"optim.eps must be a finite number > 0, got {self.eps}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas must lie in [0, 1), got {list(self.betas)}")


@dataclass(frozen=True)
class RunConfig(Config):
    """How a run goes: length, batch, precision, EMA, seeds, logging and checkpoints."""

    output_dir: str = "runs/titok"
    max_steps: int = 1000
    batch_size: int = 32  # per process and micro-batch
    grad_accum: int = 1
    # auto: bf16 on GPUs and CPUs that compute it natively (titok.precision), else fp32; "no" is fp32
    mixed_precision: Literal["auto", "no", "fp32", "bf16", "fp16"] = "auto"
    ema_decay: float = 0.999  # 0: no EMA
    seed: int = 42
    log_every: int = 10
    save_every: int = 1000
    keep_checkpoints: int = 2
    preview_every: int = 1000  # sample / reconstruction grids (PNG)
    num_workers: int = 2
    tensorboard: bool = True
    wandb_project: str | None = None
    compile: bool = False  # torch.compile the trained model (accelerate's inductor backend)
    activation_checkpointing: bool = False  # recompute transformer activations in backward: less memory

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum", "log_every", "save_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")


def read_recipe(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The YAML at ``path`` with ``a.b=value`` overrides applied (values parsed as YAML), interpolations resolved."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no recipe file at {path}")
    bad = [o for o in overrides if "=" not in o or o.startswith("=")]
    if bad:
        raise ValueError(f"overrides must look like key=value, got {bad}")
    try:
        merged = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(list(overrides)))
        raw = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as e:
        raise ValueError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise ValueError(_yaml_error(path, e)) from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not a UTF-8 text file (byte {e.start}: {e.reason})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a mapping, got {type(raw).__name__}")
    return raw


def _yaml_error(path: Path, e: Exception) -> str:
    """``FILE, line L, column C: not valid YAML: PROBLEM (CONTEXT at line L')``."""
    mark = getattr(e, "problem_mark", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context, context_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and context_mark is not None:
        problem += f" ({context} at line {context_mark.line + 1})"
    return f"{where}: not valid YAML: {problem}"
