"""The reference-parity fixtures: rebuild each case's seeded weights and write them in the reference's layouts."""

from __future__ import annotations

import json
import math
import re
from functools import cache
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

FIXTURES = Path(__file__).parent / "fixtures" / "reference"
_NORM = re.compile(r"(^|_)(ln|norm|layernorm)", re.IGNORECASE)


@cache
def cases() -> dict:
    return json.loads((FIXTURES / "cases.json").read_text())


def outputs(name: str) -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / f"{name}.safetensors")


def reference_state(name: str) -> dict[str, torch.Tensor]:
    """The case's state_dict, drawn by the fixtures' documented recipe (a fresh dict of shared, read-only tensors)."""
    return dict(_draw(name))


@cache
def _draw(name: str) -> dict[str, torch.Tensor]:
    case = cases()[name]
    rs = np.random.RandomState(case["seed"])
    state = {}
    for key, shape in case["state"]:
        n = rs.standard_normal(size=shape).astype(np.float32)
        parts = key.split(".")
        module, leaf = (parts[-2] if len(parts) > 1 else ""), parts[-1]
        if len(shape) <= 1:
            value = 1 + 0.1 * n if _NORM.search(module) and leaf == "weight" else 0.02 * n
        else:
            value = n / math.sqrt(math.prod(shape[1:]))
        state[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    return state


def write_reference_folder(name: str, folder: Path, *, pickle: bool = False) -> Path:
    """The reference's Hub layout: its ``config.json`` beside ``model.safetensors`` (or ``pytorch_model.bin``)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cases()[name]["reference_config"], indent=4))
    state = reference_state(name)
    if pickle:
        torch.save(state, folder / "pytorch_model.bin")
    else:
        save_file(state, folder / "model.safetensors")
    return folder


def write_vqgan_bin(folder: Path) -> Path:
    """The MaskGIT-VQGAN as the reference distributes it: a bare state_dict file."""
    path = folder / "maskgit-vqgan-imagenet-f16-256.bin"
    torch.save(reference_state("maskgit_vqgan"), path)
    return path


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours.double() - ref.double()).norm() / ref.double().norm())


def to_ref_tokens(x: torch.Tensor) -> torch.Tensor:
    """titok's (B, N, C) -> the reference's (B, C, 1, N)."""
    return x.transpose(1, 2).unsqueeze(2)


def to_ref_logits(x: torch.Tensor) -> torch.Tensor:
    """titok's proxy logits (B, G, K) -> the reference's (B, K, h, w)."""
    b, g, k = x.shape
    side = math.isqrt(g)
    return x.transpose(1, 2).reshape(b, k, side, side)
