"""The training loop that every tokenizer recipe (``vqgan``, ``stage1``, ``stage2``, ``single_stage``) runs.

A recipe builds its model, its data and an :class:`Objective` (what a step minimises, plus anything trained beside
the model, such as a discriminator) and hands them to :func:`fit`, which owns the rest: AdamW with warm-up + cosine,
gradient accumulation and clipping, EMA, the NaN/inf stop, metrics, reconstruction previews, checkpoints, resume
and the export of the (EMA) weights.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from titok.config import Config
from titok.data.batch import TrainBatch
from titok.data.images import save_grid
from titok.metrics.codebook import code_histogram, codebook_stats
from titok.train import announce
from titok.train.ema import EMA
from titok.train.heldout import HeldOut, plot_curves
from titok.train.optim import make_optimizer
from titok.train.runtime import Runtime

logger = logging.getLogger(__name__)


def full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off: the reference computes its losses (and the stage-1 teacher) in float32."""
    return torch.autocast(device.type, enabled=False)


def seeded(build, seed: int, device: torch.device) -> nn.Module:
    """``build()`` under ``seed`` without touching the global random state: the same weights in every process."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return build().to(device)


class CodeUsage:
    """The histogram of the codes a VQ model emitted since the last log, summed over processes every step (so every
    process holds the same window, and a checkpoint of it resumes exactly)."""

    def __init__(self, codebook_size: int, device: torch.device) -> None:
        self.window = torch.zeros(codebook_size, dtype=torch.int64, device=device)
        self.pending = torch.zeros_like(self.window)

    def add(self, codes: torch.Tensor) -> None:
        self.pending += code_histogram(codes.detach(), len(self.window))

    def flush(self, rt: Runtime) -> None:
        self.window += rt.accelerator.reduce(self.pending, "sum")
        self.pending.zero_()

    def stats(self) -> dict[str, float]:
        values = codebook_stats(self.window).as_dict()
        self.window.zero_()
        return values


@dataclass(frozen=True)
class PreviewConfig(Config):
    """Reconstruction grids written every ``train.preview_every`` steps: the first ``count`` images of the data
    (evaluation preprocessing) above their reconstructions by the EMA model. 0: none."""

    count: int = 8


class Objective(Protocol):
    """What a recipe's step minimises. ``loss`` runs per micro-batch under autocast and returns ``{'loss': total,
    <name>: value...}`` (every value is logged); ``after_step`` runs once the model's optimizer has stepped (e.g. a
    discriminator update) and returns more values; ``window`` returns statistics over the steps since the last log
    (called in every process on logging steps); ``reconstruct`` makes preview images (B, 3, H, W)."""

    generators: dict[str, torch.Generator]

    def loss(self, model: nn.Module, batch: TrainBatch, step: int) -> dict[str, torch.Tensor]: ...

    def after_step(self, step: int) -> dict[str, float]: ...

    def window(self) -> dict[str, float]: ...

    def reconstruct(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def fit(
    rt: Runtime,
    recipe: Config,
    model: nn.Module,
    objective: Objective,
    data: Dataset,
    *,
    frozen: Sequence[str] = (),
    previews: torch.Tensor | None = None,
) -> Path:
    """Train ``model`` (its frozen parameters excluded; the submodules named in ``frozen`` kept in eval mode) on
    ``data`` with ``recipe.optim`` and ``recipe.train``; returns the folder of the exported (EMA) model.

    ``previews``: fixed images (n, 3, S, S) whose reconstructions are written every ``train.preview_every`` steps.
    """
    run, optim = recipe.train, recipe.optim
    ema = EMA(model, run.ema_decay) if run.ema_decay > 0 else None
    optimizer = make_optimizer(model, optim)
    model, optimizer = rt.prepare(model, optimizer)
    step, skipped, ema = _resume(rt, model, optimizer, ema, objective)
    if final := announce.finished(rt, step):
        return final
    announce.start(rt, model, data, step, recipe.recipe)
    batches = rt.batches(data)
    heldout = _heldout(rt, recipe, rt.unwrap(model))
    bar = tqdm(total=run.max_steps, initial=step, unit="step", desc=recipe.recipe, disable=not rt.is_main)
    while step < run.max_steps:
        _train_mode(rt.unwrap(model), frozen)
        micro = [next(batches) for _ in range(run.grad_accum)]
        values = rt.accumulate(model, micro, lambda mb, s=step: objective.loss(model, mb, s))
        rt.check_finite(step + 1, values)
        values["grad_norm"] = rt.apply_gradients(model, optimizer, optim, step)
        values["lr"] = optimizer.param_groups[0]["lr"]
        values.update(objective.after_step(step))
        step += 1
        if ema is not None:
            ema.update(rt.unwrap(model))
        skipped += float(rt.accelerator.reduce(sum(mb.skipped.sum() for mb in micro).to(rt.device).float(), "sum"))
        if rt.log_due(step):
            values.update(objective.window(), skipped_images=skipped)
        if logged := rt.log(step, values, images=run.batch_size * run.grad_accum):
            bar.set_postfix(loss=f"{logged['loss']:.4f}", img_s=f"{logged['images_per_s']:.1f}")
        bar.update()
        if rt.due(step, run.save_every):
            if heldout is not None:  # logged before the checkpoint: a resume from it never lacks its scores
                _score_heldout(rt, heldout, ema.model if ema else rt.unwrap(model), step)
            _save(rt, step, model, optimizer, ema, objective, skipped_images=skipped, recipe=recipe.to_dict())
        if previews is not None and rt.is_main and rt.due(step, run.preview_every):
            _preview(rt, objective, ema.model if ema else rt.unwrap(model), previews, step)
    bar.close()
    final = rt.export(ema.model if ema else model)
    rt.close()
    return final


def _resume(rt: Runtime, model: nn.Module, optimizer, ema: EMA | None, objective: Objective):
    """(step, skipped images, EMA) of the checkpoint resumed from, with its state loaded; (0, 0, ema) for a new run."""
    state = rt.load(objective.generators)
    if not state:
        return 0, 0.0, ema
    rt.unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if ema is not None and state.get("ema") is not None:
        ema.load_state_dict(state["ema"])
    elif ema is not None:
        logger.warning("the checkpoint holds no EMA weights (ema_decay was 0): the EMA starts from the model now")
        ema = EMA(rt.unwrap(model), ema.max_decay)
    objective.load_state_dict(state["objective"])
    return state["step"], state["skipped_images"], ema


def _save(rt: Runtime, step: int, model, optimizer, ema: EMA | None, objective: Objective, **extra: Any) -> None:
    state = {"model": rt.unwrap(model).state_dict(), "optimizer": optimizer.state_dict()}
    state.update(ema=ema.state_dict() if ema else None, objective=objective.state_dict(), **extra)
    rt.save(step, state, objective.generators)


def _heldout(rt: Runtime, recipe: Config, model: nn.Module) -> HeldOut | None:
    cfg = getattr(recipe, "heldout", None)
    if cfg is None or cfg.source is None:
        return None
    if not hasattr(model, "tokenize"):
        raise ValueError(f"heldout scores need a tokenizer; the {recipe.recipe} recipe trains a {type(model).__name__}")
    return HeldOut(cfg, model.image_size, rt.device)


def _score_heldout(rt: Runtime, heldout: HeldOut, model: nn.Module, step: int) -> None:
    """Score ``model`` on the held-out images (every process takes part), log and plot the curves."""
    with torch.random.fork_rng(devices=[rt.device] if rt.device.type == "cuda" else []):
        values = heldout.scores(model)  # the run's random state is left as it was
    rt.metrics.log(step, values)
    if rt.is_main:
        logger.info(
            "step %d held-out: %s", step, ", ".join(f"{k.removeprefix('heldout_')} {v:.4g}" for k, v in values.items())
        )
        plot_curves(rt.metrics.path, rt.output_dir / "previews" / "heldout.png")


def _train_mode(model: nn.Module, frozen: Sequence[str]) -> None:
    model.train()
    for name in frozen:
        model.get_submodule(name).eval()


@torch.no_grad()
def _preview(rt: Runtime, objective: Objective, model: nn.Module, images: torch.Tensor, step: int) -> None:
    """Originals above, reconstructions below, as ``output_dir/previews/step-NNNNNNN.png`` (and in tensorboard)."""
    was_training = model.training
    recon = objective.reconstruct(model.eval(), images.to(rt.device)).float().clamp(0, 1).cpu()
    model.train(was_training)
    path = rt.output_dir / "previews" / f"step-{step:07d}.png"
    grid = save_grid(torch.cat([images, recon]), path, nrow=len(images))
    rt.metrics.image(step, "reconstructions", grid)
