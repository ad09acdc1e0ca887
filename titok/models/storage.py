"""titok's own model files: a folder (or Hub repo) with ``config.json`` and ``model.safetensors``.

``config.json`` is ``{"format": "titok", "architecture": ..., "config": {...}}``. Loading is strict: a missing,
unexpected or mis-shaped key is an error that names it. Pickled weights (``.bin``/``.pt``) are read with
``weights_only=True``, so a checkpoint cannot run code. This module knows no model class: the classes call it
(``save_pretrained``/``from_pretrained``); :mod:`titok.checkpoints` reads every other input on top of it.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch

from titok.config import did_you_mean
from titok.io import atomic_write

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
PICKLE_NAME = "pytorch_model.bin"
FORMAT = "titok"
FORMAT_VERSION = 1


def save_model(model: torch.nn.Module, directory: str | Path) -> None:
    """Write ``config.json`` and ``model.safetensors`` for a titok model into ``directory`` (atomically)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": type(model).__name__,
        "config": model.config.to_dict(),
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(directory / SAFETENSORS_NAME, lambda p: save_file(state, p, metadata={"format": "pt"}))
    atomic_write(directory / CONFIG_NAME, lambda p: Path(p).write_text(json.dumps(meta, indent=2) + "\n"))


def read_config(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path``; ``ValueError`` naming the file if it is not UTF-8 JSON holding an object."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} holds a JSON {type(raw).__name__}; expected an object ({{...}}) describing a model")
    return raw


def is_titok_config(raw: Mapping[str, Any]) -> bool:
    return raw.get("format") == FORMAT


def check_format_version(meta: Mapping[str, Any], source: str) -> None:
    version = meta.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"{source}: format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{source}: format_version {meta['format_version']} is newer than this titok reads")


def read_weights(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A state_dict from a ``.safetensors`` file or a pickled one (read with ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        device = torch.device(device)
        try:  # safetensors takes "cpu" but not "cpu:0"
            return load_file(path, device="cpu" if device.type == "cpu" else str(device))
        except SafetensorError as e:
            raise ValueError(f"{path} is not a valid safetensors file: {e}") from None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"refusing to load {path}: it is not a plain state_dict of tensors (weights-only unpickling failed: "
            f"{str(e).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError) as e:
        raise ValueError(f"{path} is not a readable PyTorch weights file: {e}") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a flat state_dict of tensors")
    return dict(state)


def match_state_dict(
    model: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    origin: Mapping[str, str] | None = None,
) -> dict[str, torch.Tensor]:
    """Check ``state`` against ``model``'s keys and shapes; return it with singleton axes reshaped away.

    Raises ``ValueError`` naming every missing, unexpected or mis-shaped key (with its name in ``source``'s
    layout when ``origin`` maps it).
    """
    expected = model.state_dict()
    named = (lambda k: f"{k!r} (stored as {origin[k]!r})" if k in origin else repr(k)) if origin else repr
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        problems.append(f"missing {len(missing)} key(s): {', '.join(map(named, missing[:8]))}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {', '.join(map(named, unexpected[:8]))}")
    out = {}
    for key, value in state.items():
        if key not in expected:
            continue
        want = expected[key].shape
        if value.shape != want:
            if [d for d in value.shape if d != 1] != [d for d in want if d != 1]:
                problems.append(f"key {named(key)} has shape {tuple(value.shape)}, the model expects {tuple(want)}")
                continue
            value = value.reshape(want)
        out[key] = value
    if problems:
        raise ValueError(f"{source} does not fit a {type(model).__name__} of this config: " + "; ".join(problems))
    return out


def check_finite(state: Mapping[str, torch.Tensor], source: str, origin: Mapping[str, str] | None = None) -> None:
    """Raise ``ValueError`` naming the tensors of ``state`` that hold NaN or infinite values (with their names in
    ``source``'s layout when ``origin`` maps them): such weights make every output NaN, or every code 0."""
    bad = []
    for key, value in state.items():
        if value.is_floating_point() or value.is_complex():
            count = int((~torch.isfinite(value)).sum())
            if count:
                stored = f" (stored as {origin[key]!r})" if origin and key in origin else ""
                bad.append(f"{key!r}{stored}: {count:,} of {value.numel():,} values")
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more tensor(s)" if len(bad) > 5 else "")
        raise ValueError(
            f"{source} holds NaN or infinite weights: {shown} (pass allow_nonfinite=True to load them anyway)"
        )


def load_state(
    model: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    origin: Mapping[str, str] | None = None,
    allow_nonfinite: bool = False,
) -> None:
    """Load ``state`` into ``model`` (built on the meta device) strictly, taking the tensors over; weights that are
    not finite are refused (see :func:`check_finite`) unless ``allow_nonfinite``."""
    state = match_state_dict(model, state, source, origin)
    if not allow_nonfinite:
        check_finite(state, source, origin)
    model.load_state_dict(state, strict=True, assign=True)


def _hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub ``endpoint`` opens within ``timeout`` seconds (True behind a proxy,
    which this cannot probe): without one, ``huggingface_hub`` retries for ~25 s before giving up."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlsplit(endpoint)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


def hub_files(repo_id: str, **hub_kwargs: Any) -> tuple[str, str]:
    """The local paths of a Hub repo's ``config.json`` and weights (downloaded or cached). Offline
    (``HF_HUB_OFFLINE``) or when the Hub cannot be reached, only the cache is read, and a repo not in it fails
    within seconds with a message naming ``HF_HUB_OFFLINE``."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    if constants.HF_HUB_OFFLINE:
        why = "HF_HUB_OFFLINE is set"
    elif hub_kwargs.get("local_files_only"):
        why = "local_files_only=True"
    elif not _hub_reachable(constants.ENDPOINT):
        why = f"{constants.ENDPOINT} cannot be reached (no network?)"
        hub_kwargs = {**hub_kwargs, "local_files_only": True}
    else:
        why = "the Hub did not answer"
    try:
        config = hf_hub_download(repo_id, CONFIG_NAME, **hub_kwargs)
        try:
            weights = hf_hub_download(repo_id, SAFETENSORS_NAME, **hub_kwargs)
        except EntryNotFoundError:
            weights = hf_hub_download(repo_id, PICKLE_NAME, **hub_kwargs)
    except LocalEntryNotFoundError:
        raise FileNotFoundError(
            f"{repo_id!r} is not a local path nor a cached Hub model ({why}, so only the local cache was looked "
            "at). Download it once with network access (or copy its folder here and pass the folder); with "
            "HF_HUB_OFFLINE=1 titok never tries the network"
        ) from None
    except HfHubHTTPError as e:
        raise FileNotFoundError(f"cannot fetch {repo_id!r} from the Hugging Face Hub: {e}") from None
    return config, weights


def folder_files(folder: Path) -> tuple[Path, Path]:
    """A model folder's ``config.json`` and weights file (safetensors preferred)."""
    config = folder / CONFIG_NAME
    if config.exists() and not config.is_file():
        raise ValueError(f"{config} is not a regular file")
    if not config.is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG_NAME}")
    for name in (SAFETENSORS_NAME, PICKLE_NAME):
        if (folder / name).is_file():
            return config, folder / name
    raise FileNotFoundError(f"{folder} has neither {SAFETENSORS_NAME} nor {PICKLE_NAME}")


def check_hub_id(name: str, given: Any, names: Iterable[str] = ()) -> None:
    """``FileNotFoundError`` unless ``name`` looks like a Hub id; it suggests the closest of ``names`` (presets)."""
    if name.count("/") != 1 or name.startswith((".", "/")):
        hint = did_you_mean(name, names)
        raise FileNotFoundError(f"{given!r} is not a file, a folder, a preset name or a Hub id (owner/name){hint}")


def titok_files(name: str | Path, **hub_kwargs: Any) -> tuple[Path | str, Path | str] | None:
    """``config.json`` and weights of a folder or Hub repo in titok's layout; None for anything else (a file, a
    preset name, a training checkpoint, the reference's layout: ``titok.load`` reads those)."""
    path = Path(name)
    if path.is_dir():
        files: tuple[Path | str, Path | str] = folder_files(path)
    elif not path.exists() and str(name).count("/") == 1 and not str(name).startswith((".", "/")):
        files = hub_files(str(name), **hub_kwargs)
    else:
        return None
    return files if is_titok_config(read_config(files[0])) else None
