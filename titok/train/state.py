"""Training checkpoints: written atomically and durably, resumed exactly, damaged ones skipped.

``checkpoint-{step}/`` holds ``state.pt`` (everything shared by the processes: weights, EMA, optimizers, scaler,
step, data position, the recipe) and ``rng-{rank}.pt`` per process (Python, NumPy, torch CPU/CUDA and the recipe's
own generators). The folder is assembled under a temporary name, every file and the folder are fsynced, and it is
renamed when complete (then its parent is fsynced), so a run killed (or a machine that loses power) while saving
leaves the previous checkpoint intact and never a half-written one.

Good checkpoints. A checkpoint is written only if every tensor in it is finite, and it stays the newest good one
only once its weights have given a finite step: the checkpoint whose weights give a NaN/inf loss at the next step is
set aside as ``checkpoint-{step}.rejected`` (see :meth:`CheckpointManager.reject`), and the older checkpoint is kept
until the new one has proved itself. Resume skips a checkpoint whose files cannot be read, saying why, and continues
from the newest one that loads.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from titok.io import fsync

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint-(\d+)$")


def capture_rng(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """This process's random states, as tensors and plain values (loadable with ``weights_only=True``)."""
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    rng = {
        "python": {"version": version, "state": torch.tensor(state, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    p = rng["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss"]))
    n = rng["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    for name, g in (generators or {}).items():
        if name in rng["generators"]:
            g.set_state(rng["generators"][name])


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed (a missing or unreadable file); the message names the file and why."""


def step_of(path: Path) -> int:
    """The step in a checkpoint folder's name (``checkpoint-{step}``)."""
    m = _NAME.match(Path(path).name)
    if m is None:
        raise ValueError(f"{path} is not named checkpoint-STEP")
    return int(m[1])


def nonfinite(state: Any, prefix: str = "") -> list[str]:
    """The names (dotted paths) of the floating-point tensors in the nested ``state`` that hold a NaN or inf."""
    named: list[tuple[str, torch.Tensor]] = []
    _tensors(state, prefix, named)
    named = [(n, t) for n, t in named if t.is_floating_point() or t.is_complex()]
    if not named:
        return []
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, t) in enumerate(named):
        by_device.setdefault(t.device, []).append(i)
    bad: list[int] = []
    for indices in by_device.values():  # one synchronisation per device, not per tensor
        flags = torch.stack([torch.isfinite(named[i][1]).all() for i in indices]).cpu().tolist()
        bad.extend(i for i, ok in zip(indices, flags) if not ok)
    return [named[i][0] for i in sorted(bad)]


def _tensors(value: Any, name: str, out: list[tuple[str, torch.Tensor]]) -> None:
    if isinstance(value, torch.Tensor):
        out.append((name, value))
    elif isinstance(value, dict):
        for k, v in value.items():
            _tensors(v, f"{name}.{k}" if name else str(k), out)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _tensors(v, f"{name}.{i}" if name else str(i), out)


def _save_durably(obj: Any, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def _read(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, zero bytes, not a torch file...: every way a file can be damaged
        first = (str(e).splitlines() or [""])[0][:200]
        raise CheckpointError(f"{path} cannot be read ({type(e).__name__}: {first or 'no detail'})") from None


class CheckpointManager:
    """Saves and finds checkpoints under ``directory``; ``barrier`` synchronises the processes of a run."""

    def __init__(self, directory: str | Path, *, rank: int = 0, world: int = 1, keep: int = 2, barrier=None) -> None:
        self.directory = Path(directory)
        self.rank, self.world, self.keep = rank, world, keep
        self.barrier = barrier or (lambda: None)
        self._unproven: Path | None = None  # the newest checkpoint, until its weights have given a finite step

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m[1]), p) for p in self.directory.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
        return [p for _, p in sorted(found) if (p / "state.pt").is_file()]

    def latest(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def save(self, step: int, state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> Path:
        final = self.directory / f"checkpoint-{step}"
        tmp = self.directory / f".checkpoint-{step}.tmp"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.barrier()
        _save_durably(capture_rng(generators), tmp / f"rng-{self.rank}.pt")
        if self.rank == 0:
            _save_durably({**state, "step": step, "world_size": self.world}, tmp / "state.pt")
        self.barrier()
        if self.rank == 0:
            fsync(tmp)
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            fsync(self.directory)
        self._unproven = final
        self._prune()
        self.barrier()
        return final

    def proven(self) -> None:
        """The newest checkpoint's weights gave a finite step: older ones beyond ``keep`` may go now."""
        if self._unproven is not None:
            self._unproven = None
            self._prune()

    def _prune(self) -> None:
        """Delete all but the ``keep`` newest checkpoints, keeping as well, while the newest is unproven, the
        newest one before it."""
        if self.rank != 0:
            return
        found = self.checkpoints()
        protect = []
        if self._unproven is not None:
            protect = [p for p in found if step_of(p) < step_of(self._unproven)][-1:]
        for path in found[: -self.keep]:
            if path not in protect:
                shutil.rmtree(path, ignore_errors=True)

    def reject(self, path: Path) -> Path:
        """Set checkpoint ``path`` aside as ``{name}.rejected`` (no resume picks it; it can still be inspected or
        named with ``--resume-from``); returns the new name. Only process 0 moves it."""
        target = path.with_name(f"{path.name}.rejected")
        if self.rank == 0:
            shutil.rmtree(target, ignore_errors=True)
            path.rename(target)
            fsync(path.parent)
        if self._unproven == path:
            self._unproven = None
        return target

    def read(self, path: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The shared state of checkpoint ``path`` and this process's random states (None when the checkpoint was
        written by another number of processes). Raises :class:`CheckpointError` naming a missing or unreadable
        file."""
        path = Path(path)
        state = _read(path / "state.pt")
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            raise CheckpointError(f"{path / 'state.pt'} holds no training state (no step)")
        if state.get("world_size") != self.world:
            return state, None
        rng = _read(path / f"rng-{self.rank}.pt")
        if not isinstance(rng, dict) or "python" not in rng:
            raise CheckpointError(f"{path / f'rng-{self.rank}.pt'} holds no random states")
        return state, rng

    def newest_readable(self, agree=None) -> tuple[Path, dict[str, Any], dict[str, Any] | None] | None:
        """The newest checkpoint every process can read, with what :meth:`read` gives (None when there is no
        checkpoint). Each one skipped is logged with the reason. ``agree(ok)`` returns whether every process's
        ``ok`` is true (default: this process alone). Raises :class:`CheckpointError` when none can be read."""
        agree = agree or (lambda ok: ok)
        found, reasons = self.checkpoints(), []
        for path in reversed(found):
            try:
                loaded, reason = self.read(path), None
            except CheckpointError as e:
                loaded, reason = None, str(e)
            if agree(reason is None):
                return (path, *loaded)
            if reason is not None or self.rank == 0:  # the process that could not read it says why
                logger.warning(
                    "skipped checkpoint %s: %s; trying an older one", path, reason or "another process cannot read it"
                )
            reasons.append(f"{path.name}: {reason or 'another process cannot read it'}")
        if found:
            raise CheckpointError(f"no checkpoint in {self.directory} can be resumed: {'; '.join(reasons)}")
        return None

    def load(self, path: str | Path, generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
        """The shared state of checkpoint ``path``; this process's random states are restored as a side effect."""
        state, rng = self.read(path)
        self.restore(path, state, rng, generators)
        return state

    def restore(
        self,
        path: str | Path,
        state: dict[str, Any],
        rng: dict[str, Any] | None,
        generators: dict[str, torch.Generator] | None = None,
    ) -> None:
        """Restore the random states :meth:`read` returned (a warning when there are none)."""
        if rng is not None:
            restore_rng(rng, generators)
            return
        logger.warning(
            "resuming %s with %d process(es) (it was saved by %s): random streams restart from the seed, "
            "so the continuation is not bit-identical",
            path,
            self.world,
            state.get("world_size"),
        )
