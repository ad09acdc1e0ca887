"""What every training recipe does the same way: devices and processes (accelerate), resume, data order,
gradient accumulation and clipping, a stop on NaN/inf, metrics, checkpoints and the final export.

Data: :class:`~titok.train.data_order.DataOrder` (the position in an indexed dataset's order, a stream's reader
cursors); :meth:`Runtime.save` stores it (with the fp16 scaler, if any) in the checkpoint and a resumed run continues
where it stopped. Metrics: :class:`~titok.train.metrics_log.MetricsLogger`.

Faults: a NaN/inf loss stops every process, naming the newest good checkpoint (one whose weights gave a finite step;
the checkpoint whose weights gave the NaN is set aside); a checkpoint whose tensors are not all finite is never
written; a resume skips checkpoints that cannot be read and refuses a recipe that changes the architecture (see
:mod:`titok.train.state` and :mod:`titok.train.runfolder`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from titok.extras import install_hint
from titok.train import runfolder
from titok.train.config import OptimConfig, RunConfig
from titok.train.data_order import DataOrder, TrainingError
from titok.train.metrics_log import MetricsLogger
from titok.train.optim import lr_at, set_lr
from titok.train.state import CheckpointError, CheckpointManager, nonfinite, step_of

logger = logging.getLogger(__name__)


def _accelerator(run: RunConfig):
    try:
        from accelerate import Accelerator
    except ImportError:
        raise ImportError(f"training needs accelerate: {install_hint('train')}") from None
    from titok.precision import accelerate_precision

    cuda = torch.cuda.is_available()
    try:
        precision, choice = accelerate_precision(run.mixed_precision, cuda)
    except ValueError as e:
        raise TrainingError(f"train.mixed_precision={run.mixed_precision!r}: {e}") from None
    logger.info("training precision: %s", choice)
    return Accelerator(mixed_precision=precision, cpu=not cuda, dynamo_backend="inductor" if run.compile else "no")


@dataclass
class Runtime:
    run: RunConfig
    accelerator: Any
    output_dir: Path
    checkpoints: CheckpointManager
    metrics: MetricsLogger
    resume_from: Path | None = None
    data: DataOrder = field(init=False)
    _images_seen: int = field(default=0, init=False)
    _loaded: tuple[dict[str, Any], dict[str, Any] | None] | None = field(default=None, init=False)  # read by start
    _clock: float = field(default_factory=time.perf_counter, init=False)

    def __post_init__(self) -> None:
        self.data = DataOrder(self.run, self.rank, self.world, self.device)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def prepare(self, *objects: Any) -> Any:
        """``accelerator.prepare`` (devices, DDP, compile), after switching on activation checkpointing if asked."""
        if self.run.activation_checkpointing:
            for obj in objects:
                if hasattr(obj, "set_grad_checkpointing"):
                    obj.set_grad_checkpointing(True)
        return self.accelerator.prepare(*objects)

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The model itself: without DDP and without ``torch.compile``'s wrapper (``train.compile``), whose
        parameter names carry an ``_orig_mod.`` prefix that the EMA and the exported weights must not have."""
        return self.accelerator.unwrap_model(model, keep_torch_compile=False)

    def batches(self, dataset: Dataset, collate: Callable | None = None) -> Iterator[Any]:
        """Micro-batches of ``batch_size`` in the deterministic order (see :class:`DataOrder`), from where the
        checkpoint :meth:`load` read left off."""
        return self.data.batches(dataset, collate)

    def accumulate(self, model: nn.Module, micro_batches: list[Any], loss_fn: Callable[[Any], dict]) -> dict:
        """Forward and backward over the micro-batches of one step (``loss_fn(mb)['loss']`` is minimised); returns
        the mean of every returned value. Gradients are synchronised across processes on the last one only."""
        totals: dict[str, float] = {}
        n = len(micro_batches)
        for i, mb in enumerate(micro_batches):
            sync = contextlib.nullcontext() if i == n - 1 else self.accelerator.no_sync(model)
            with sync:
                with self.accelerator.autocast():
                    out = loss_fn(mb)
                self.accelerator.backward(out["loss"] / n)
            for k, v in out.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach()) / n
        return totals

    def apply_gradients(
        self, model: nn.Module, optimizer, cfg: OptimConfig, step: int, total_steps: int | None = None
    ) -> float:
        """Clip, set the learning rate of schedule step ``step`` (of ``total_steps``, default ``max_steps``), step
        and zero the optimizer; returns the pre-clip gradient norm."""
        norm = float("nan")
        if cfg.max_grad_norm > 0:
            norm = float(self.accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
        lr = lr_at(step, cfg, total_steps or self.run.max_steps)
        set_lr(optimizer, lr)
        try:
            optimizer.step()
        except RuntimeError as e:
            if "overflow" not in str(e):
                raise
            raise TrainingError(
                f"step {step + 1}: the update at learning rate {lr:g} overflows float32 ({e})"
            ) from None
        optimizer.zero_grad(set_to_none=True)
        return norm

    def check_finite(self, step: int, values: Mapping[str, float]) -> None:
        """Stop every process (with a message naming the values) when any process's ``values`` are NaN or inf."""
        bad = {k: v for k, v in values.items() if not math.isfinite(v) and k != "grad_norm"}
        others = self._others(bool(bad))
        if bad or others:
            what = ", ".join(f"{k} = {v}" for k, v in bad.items()) or f"non-finite values in {others} other process(es)"
            raise TrainingError(f"step {step}: {what}; stopping ({self._where(step, poisoned=True)})")
        self.checkpoints.proven()  # the weights of a checkpoint written at step - 1 gave finite values

    def _others(self, bad: bool) -> int:
        """How many other processes report ``bad`` too (all processes decide together, or the healthy ones would
        wait in the next collective)."""
        if self.world == 1:
            return 0
        flags = self.accelerator.reduce(torch.tensor([float(bad)], device=self.device), "sum")
        return int(flags.item()) - bad

    def _where(self, step: int, poisoned: bool) -> str:
        """The state of the checkpoints at a stop in step ``step``. ``poisoned``: the weights after step ``step - 1``
        gave non-finite values, so a checkpoint of that step is set aside (renamed; no resume picks it)."""
        found = [p for p in self.checkpoints.checkpoints() if step_of(p) < step]
        notes = []
        if poisoned and found and step_of(found[-1]) == step - 1:
            self.accelerator.wait_for_everyone()  # every process has listed the checkpoints before one moves
            bad = found.pop()
            moved = self.checkpoints.reject(bad)
            notes.append(
                f"{bad.name} holds the weights that gave them (a resume from it would stop here again): "
                f"set aside as {moved}"
            )
        notes.append(f"the last good checkpoint, {found[-1]}, is intact" if found else "no good checkpoint was written")
        return "; ".join(notes)

    def log_due(self, step: int) -> bool:
        """Whether :meth:`log` writes the metrics of finished step ``step`` (the same answer in every process)."""
        return step % self.run.log_every == 0 or step == self.run.max_steps

    def log(self, step: int, values: dict[str, float], images: int) -> dict[str, float]:
        """Record a finished step; every ``log_every`` steps, write metrics (with images/s) and return them."""
        self._images_seen += images
        if not self.log_due(step):
            return {}
        elapsed = time.perf_counter() - self._clock
        values = {**values, "images_per_s": self._images_seen * self.world / max(elapsed, 1e-9)}
        self._images_seen, self._clock = 0, time.perf_counter()
        self.metrics.log(step, values)
        return values

    def due(self, step: int, every: int) -> bool:
        return every > 0 and (step % every == 0 or step == self.run.max_steps)

    def save(self, step: int, state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
        """Checkpoint ``state`` (the recipe's weights and optimizers) with the data position (a stream's reader
        cursors too) and the fp16 scaler; every process calls it. Stops the run (writing nothing) when a tensor of
        ``state`` holds a NaN or inf in any process."""
        bad = nonfinite(state)
        if bad or self._others(bool(bad)):
            what = (
                f"{len(bad)} tensor(s): {', '.join(bad[:4])}{', ...' if len(bad) > 4 else ''}"
                if bad
                else "another process"
            )
            raise TrainingError(
                f"step {step}: the state to checkpoint holds NaN or inf values ({what}); stopping without writing it "
                f"({self._where(step, poisoned=False)})"
            )
        scaler = self.accelerator.scaler
        state = {**state, **self.data.state(), "scaler": scaler.state_dict() if scaler else None}
        path = self.checkpoints.save(step, state, generators)
        if self.is_main:
            logger.info("saved %s", path)

    def load(self, generators: dict[str, torch.Generator] | None = None) -> dict[str, Any] | None:
        if self.resume_from is None:
            return None
        logger.info("resuming from %s", self.resume_from)
        state, rng = self._loaded or self.checkpoints.read(self.resume_from)
        self._loaded = None
        self.checkpoints.restore(self.resume_from, state, rng, generators)
        self.data.restore(state)
        if state.get("scaler") and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        return state

    def export(self, model: nn.Module, name: str = "final") -> Path:
        """``save_pretrained`` the model into ``output_dir/name`` (main process), so ``titok.load`` reads it."""
        path = self.output_dir / name
        self.checkpoints.proven()  # the run is complete: prune to train.keep_checkpoints
        if self.is_main:
            runfolder.remove_leftovers(path, ())  # of an export that was killed
            self.unwrap(model).save_pretrained(path)
        self.accelerator.wait_for_everyone()
        return path

    def close(self) -> None:
        self.metrics.close()
        self.accelerator.end_training()


def start(
    run: RunConfig,
    recipe: Mapping[str, Any],
    resume: bool | str = False,
    *,
    architecture: runfolder.Architecture = runfolder.ARCHITECTURE,
) -> Runtime:
    """Set up a run: accelerator, seeds, output folder (with the resolved recipe), metrics and checkpoints.

    ``resume``: False (the output folder must hold no checkpoint), True (continue from the newest checkpoint that
    can be read, if any), or the path of a checkpoint folder. A resume compares ``recipe`` with the checkpoint's
    before anything is written: ``architecture`` names the keys it may not change (see
    :func:`titok.train.runfolder.check_resume`).
    """
    accelerator = _accelerator(run)
    out = Path(run.output_dir)
    manager = CheckpointManager(
        out / "checkpoints",
        rank=accelerator.process_index,
        world=accelerator.num_processes,
        keep=run.keep_checkpoints,
        barrier=accelerator.wait_for_everyone,
    )
    found = _resume_point(accelerator, manager, resume, out)
    changes, stored = {}, None
    if found is not None:
        stored = runfolder.stored_recipe(out, found[1])
        if stored is not None:
            changes = runfolder.check_resume(found[0], stored, recipe, architecture)
    _seed(run.seed + accelerator.process_index)
    if accelerator.is_main_process:
        _record(out, recipe, found, stored, changes)
    metrics = MetricsLogger(
        out,
        enabled=accelerator.is_main_process,
        tensorboard=run.tensorboard,
        wandb_project=run.wandb_project,
        resume_step=found[1]["step"] if found else None,
        recipe=recipe,
    )
    accelerator.wait_for_everyone()
    rt = Runtime(run, accelerator, out, manager, metrics, found[0] if found else None)
    rt._loaded = found[1:] if found else None
    return rt


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _record(out: Path, recipe: Mapping[str, Any], found, stored, changes) -> None:
    """Prepare the output folder and record the run's start or resume in it (main process)."""
    out.mkdir(parents=True, exist_ok=True)
    runfolder.remove_leftovers(out)
    if found is None:
        runfolder.record_start(out, recipe)
    else:
        runfolder.record_resume(out, found[0], found[1]["step"], stored, recipe, changes)


def _resume_point(accelerator, manager: CheckpointManager, resume: bool | str, out: Path):
    """(checkpoint folder, its state, this process's random states) to resume from, read and checked in every
    process, or None for a new run."""

    def everyone(ok: bool) -> bool:
        if accelerator.num_processes == 1:
            return ok
        return int(accelerator.reduce(torch.tensor([float(not ok)], device=accelerator.device), "sum").item()) == 0

    if isinstance(resume, str):
        path = Path(resume)
        if not (path / "state.pt").is_file():
            raise TrainingError(f"--resume {resume}: not a checkpoint folder (no state.pt)")
        try:
            loaded, error = manager.read(path), None
        except CheckpointError as e:
            loaded, error = None, e
        if not everyone(error is None):
            raise error or CheckpointError(f"--resume {resume}: another process cannot read its files")
        return (path, *loaded)
    if resume:
        return manager.newest_readable(everyone)
    if manager.latest() is not None:
        raise TrainingError(
            f"{out} already holds checkpoints ({manager.latest().name}): pass --resume to continue that run, "
            "or choose another train.output_dir"
        )
    return None
