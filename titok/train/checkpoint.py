"""Training checkpoints: written atomically, resumed exactly.

``checkpoint-{step}/`` holds ``state.pt`` (everything shared by the processes: weights, EMA, optimizers, scaler,
step, data position, the recipe) and ``rng-{rank}.pt`` per process (Python, NumPy, torch CPU/CUDA and the recipe's
own generators). The folder is assembled under a temporary name and renamed when complete, so a run killed while
saving leaves the previous checkpoint intact and never a half-written one.
"""

from __future__ import annotations

import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

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


class CheckpointManager:
    """Saves and finds checkpoints under ``directory``; ``barrier`` synchronises the processes of a run."""

    def __init__(self, directory: str | Path, *, rank: int = 0, world: int = 1, keep: int = 2, barrier=None) -> None:
        self.directory = Path(directory)
        self.rank, self.world, self.keep = rank, world, keep
        self.barrier = barrier or (lambda: None)

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
        torch.save(capture_rng(generators), tmp / f"rng-{self.rank}.pt")
        if self.rank == 0:
            torch.save({**state, "step": step, "world_size": self.world}, tmp / "state.pt")
        self.barrier()
        if self.rank == 0:
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            for old in self.checkpoints()[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        self.barrier()
        return final

    def load(self, path: str | Path, generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
        """The shared state of checkpoint ``path``; this process's random states are restored as a side effect."""
        path = Path(path)
        if not (path / "state.pt").is_file():
            raise FileNotFoundError(f"{path} is not a complete checkpoint (no state.pt)")
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        rng_file = path / f"rng-{self.rank}.pt"
        if state.get("world_size") == self.world and rng_file.is_file():
            restore_rng(torch.load(rng_file, map_location="cpu", weights_only=True), generators)
        else:
            logger.warning(
                "resuming %s with %d process(es) (it was saved by %s): random streams restart from the seed, "
                "so the continuation is not bit-identical",
                path,
                self.world,
                state.get("world_size"),
            )
        return state
