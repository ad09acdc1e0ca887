"""What every training recipe does the same way: devices and processes (accelerate), resume, data order,
gradient accumulation and clipping, a stop on NaN/inf, metrics, checkpoints and the final export.

Data: an indexed dataset is visited in :class:`ResumableSampler`'s order from ``Runtime.position``, the number of
items this process has taken (saved with every checkpoint, so a resumed run may change the batch size). A
stream (an ``IterableDataset`` with ``assign``, such as :class:`~titok.data.webdataset.ShardStream`) reports its
readers' cursors with every batch; :meth:`Runtime.save` stores them (with the fp16 scaler, if any) in the checkpoint
and a resumed run continues each reader where it stopped.
"""

from __future__ import annotations

import contextlib
import json
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
from torch.utils.data import DataLoader, Dataset, IterableDataset

from titok.data.sampler import ResumableSampler
from titok.io import atomic_write
from titok.train.checkpoint import CheckpointManager
from titok.train.config import OptimConfig, RunConfig
from titok.train.optim import lr_at, set_lr

logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """A run cannot go on (NaN loss, an output folder that already holds a run, ...); the message says why."""


def _accelerator(run: RunConfig):
    try:
        from accelerate import Accelerator
    except ImportError:
        raise ImportError("training needs accelerate: pip install 'titok[train]'") from None
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
    position: int = field(default=0, init=False)  # items this process has taken from its data order
    _images_seen: int = field(default=0, init=False)
    _stream: StreamBatches | None = field(default=None, init=False)
    _resumed_data: dict[str, Any] | None = field(default=None, init=False)
    _clock: float = field(default_factory=time.perf_counter, init=False)

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
        """Micro-batches of ``batch_size`` in the deterministic order, from ``position`` (restored on resume); for a
        stream: from the cursors of the checkpoint :meth:`load` read."""
        if isinstance(dataset, IterableDataset):
            return self._count(self._stream_batches(dataset, collate))
        return self._count(self._indexed_batches(dataset, collate))

    def _indexed_batches(self, dataset: Dataset, collate: Callable | None) -> Iterator[Any]:
        sampler = ResumableSampler(
            len(dataset), seed=self.run.seed, rank=self.rank, world=self.world, start=self.position
        )
        if len(dataset) // self.world < self.run.batch_size:
            raise TrainingError(f"{len(dataset)} item(s) cannot fill a batch of {self.run.batch_size} per process")
        loader = DataLoader(
            dataset,
            batch_size=self.run.batch_size,
            sampler=sampler,
            num_workers=self.run.num_workers,
            collate_fn=collate,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            persistent_workers=self.run.num_workers > 0,
            generator=torch.Generator().manual_seed(self.run.seed),  # keeps the global RNG untouched
        )
        return iter(loader)

    def _stream_batches(self, stream: IterableDataset, collate: Callable | None) -> Iterator[Any]:
        if not hasattr(stream, "assign"):
            raise TypeError(f"{type(stream).__name__} is an iterable dataset without assign(): it cannot be resumed")
        workers = max(1, self.run.num_workers)
        drawn = self.position // self.run.batch_size  # batches this process had taken
        cursors = self._stream_cursors(workers)
        # A DataLoader takes batches from its workers in turn, starting with worker 0: worker j plays the reader
        # whose turn it would have been in the uninterrupted run.
        roles = [(j + drawn) % workers for j in range(workers)]
        assigned = stream.assign(rank=self.rank, world=self.world, workers=workers, roles=roles, cursors=cursors)
        loader = DataLoader(
            assigned,
            batch_size=self.run.batch_size,
            num_workers=self.run.num_workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=self.run.num_workers > 0,
        )
        self._stream = StreamBatches(iter(loader), cursors)
        return self._stream

    def _count(self, batches: Iterator[Any]) -> Iterator[Any]:
        """``batches``, adding each one's items to ``position`` as it is taken."""
        for batch in batches:
            self.position += self.run.batch_size
            yield batch

    def _stream_cursors(self, workers: int) -> list[list[int]]:
        saved = self._resumed_data
        if not saved or saved.get("kind") != "stream":
            return [[0, 0, 0] for _ in range(workers)]
        if (saved["world"], saved["workers"]) == (self.world, workers):
            return [list(c) for c in saved["cursors"][self.rank * workers : (self.rank + 1) * workers]]
        epoch = min(c[0] for c in saved["cursors"])
        logger.warning(
            "the checkpoint's stream was read by %d process(es) x %d worker(s), this run has %d x %d: every reader "
            "restarts at the beginning of epoch %d (some samples of that epoch are seen again)",
            saved["world"],
            saved["workers"],
            self.world,
            workers,
            epoch,
        )
        return [[epoch, 0, 0] for _ in range(workers)]

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
        set_lr(optimizer, lr_at(step, cfg, total_steps or self.run.max_steps))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return norm

    def check_finite(self, step: int, values: Mapping[str, float]) -> None:
        """Stop every process (with a message naming the values) when any process's ``values`` are NaN or inf."""
        bad = {k: v for k, v in values.items() if not math.isfinite(v) and k != "grad_norm"}
        others = 0
        if self.world > 1:  # all processes decide together, or the healthy ones would wait in the next collective
            flags = self.accelerator.reduce(torch.tensor([float(bool(bad))], device=self.device), "sum")
            others = int(flags.item()) - bool(bad)
        if bad or others:
            last = self.checkpoints.latest()
            where = f"the last good checkpoint, {last}, is intact" if last else "no checkpoint was written yet"
            what = ", ".join(f"{k} = {v}" for k, v in bad.items()) or f"non-finite values in {others} other process(es)"
            raise TrainingError(f"step {step}: {what}; stopping ({where})")

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
        cursors too) and the fp16 scaler; every process calls it."""
        scaler = self.accelerator.scaler
        state = {
            **state,
            "data_position": self.position,
            "data_world": self.world,
            "scaler": scaler.state_dict() if scaler else None,
        }
        if self._stream is not None:
            state["data"] = self._stream_state()
        path = self.checkpoints.save(step, state, generators)
        if self.is_main:
            logger.info("saved %s", path)

    def load(self, generators: dict[str, torch.Generator] | None = None) -> dict[str, Any] | None:
        if self.resume_from is None:
            return None
        logger.info("resuming from %s", self.resume_from)
        state = self.checkpoints.load(self.resume_from, generators)
        self.position = state["data_position"]
        saved_world = state.get("data_world", self.world)
        if saved_world != self.world and state.get("data") is None:
            # The order is one permutation per epoch dealt out to the processes: keep the items taken in total.
            logger.warning(
                "the checkpoint was written by %d process(es), this run has %d: each process continues after "
                "%d of the %d items taken in all (the order is kept up to a batch at the boundary)",
                saved_world,
                self.world,
                self.position * saved_world // self.world,
                self.position * saved_world,
            )
            self.position = self.position * saved_world // self.world
        self._resumed_data = state.get("data")
        if state.get("scaler") and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        return state

    def _stream_state(self) -> dict[str, Any]:
        from accelerate.utils import gather_object

        mine = [list(c) for c in self._stream.cursors]
        cursors = mine if self.world == 1 else gather_object(mine)
        return {"kind": "stream", "world": self.world, "workers": len(self._stream.cursors), "cursors": cursors}

    def export(self, model: nn.Module, name: str = "final") -> Path:
        """``save_pretrained`` the model into ``output_dir/name`` (main process), so ``titok.load`` reads it."""
        path = self.output_dir / name
        if self.is_main:
            self.unwrap(model).save_pretrained(path)
        self.accelerator.wait_for_everyone()
        return path

    def close(self) -> None:
        self.metrics.close()
        self.accelerator.end_training()


class StreamBatches(Iterator):
    """A stream's batches without their cursors, which it keeps: ``cursors[role]`` is the last position reader
    ``role`` of this process delivered, (epoch, shard position, samples consumed)."""

    def __init__(self, batches: Iterator[Any], cursors: list[list[int]]) -> None:
        self.batches, self.cursors = batches, cursors

    def __next__(self) -> list[Any]:
        *batch, cursor = next(self.batches)
        role, *position = cursor[-1].tolist()
        self.cursors[role] = position
        return batch


def start(run: RunConfig, recipe: Mapping[str, Any], resume: bool | str = False) -> Runtime:
    """Set up a run: accelerator, seeds, output folder (with the resolved recipe), metrics and checkpoints.

    ``resume``: False (the output folder must hold no checkpoint), True (continue from the latest, if any), or
    the path of a checkpoint folder.
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
    resume_from = None
    if isinstance(resume, str):
        resume_from = Path(resume)
        if not (resume_from / "state.pt").is_file():
            raise TrainingError(f"--resume {resume}: not a checkpoint folder (no state.pt)")
    elif resume:
        resume_from = manager.latest()
    elif manager.latest() is not None:
        raise TrainingError(
            f"{out} already holds checkpoints ({manager.latest().name}): pass --resume to continue that run, "
            "or choose another train.output_dir"
        )
    seed = run.seed + accelerator.process_index
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "recipe.json", lambda p: Path(p).write_text(json.dumps(dict(recipe), indent=2) + "\n"))
    resume_step = None
    if resume_from is not None:
        resume_step = torch.load(resume_from / "state.pt", map_location="cpu", weights_only=True)["step"]
    metrics = MetricsLogger(
        out,
        enabled=accelerator.is_main_process,
        tensorboard=run.tensorboard,
        wandb_project=run.wandb_project,
        resume_step=resume_step,
        recipe=recipe,
    )
    accelerator.wait_for_everyone()
    return Runtime(run, accelerator, out, manager, metrics, resume_from)


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
            kept = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= resume_step]
        atomic_write(self.path, lambda p: Path(p).write_text("".join(line + "\n" for line in kept)))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ImportError("tensorboard logging needs tensorboard: pip install 'titok[train]'") from None
            self.tb = SummaryWriter(str(directory / "tensorboard"))
        if wandb_project:
            try:
                import wandb
            except ImportError:
                raise ImportError("train.wandb_project needs wandb: pip install wandb") from None
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
