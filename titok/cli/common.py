"""What the ``titok`` subcommands share: exit codes, the error they report, output checks, device choice, common
arguments, model loading, and lazy imports that keep ``--help`` free of torch."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from titok.sampling import SamplingConfig


class _LazyModule(ModuleType):
    """A module imported on first attribute access: the CLI's modules use torch only inside commands, so that
    ``titok --help`` (and every command's ``--help``) starts without importing it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._name = name

    def __getattr__(self, attr: str):
        import importlib

        return getattr(importlib.import_module(self._name), attr)


def lazy(name: str) -> ModuleType:
    """``name``, imported when an attribute of it is first used."""
    return _LazyModule(name)


torch = lazy("torch")


def no_grad(function):
    """``@no_grad`` that imports torch when ``function`` runs, not when it is defined."""
    import functools

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with torch.no_grad():
            return function(*args, **kwargs)

    return wrapper


EXIT_OK, EXIT_SKIPPED, EXIT_INPUT, EXIT_FAILURE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = f"""exit status:
  {EXIT_OK}    all done
  {EXIT_SKIPPED}    done, but some inputs were skipped (each is named on stderr, and in the output where it has a list)
  {EXIT_INPUT}    usage or input error, or a run that cannot go on: a bad option, model, recipe or output path, no
       readable input, a training run stopped on a NaN loss (the message says which); checked before the work
       starts wherever it can be
  {EXIT_FAILURE}    unexpected failure (a bug, or a fault such as running out of memory): one line, -v for the traceback
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)"""


class CommandError(Exception):
    """A failure to report as ``error: ...`` with exit status 2 (bad input), without a traceback."""


def check_output_file(path: str | None, flag: str) -> None:
    """Raise ``CommandError`` unless a file can be written at ``path`` (None: no output): not a folder, in a folder
    that exists or can be made, and writable. Called before the work, so that no result is lost at the end."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise CommandError(f"{flag} {path} is a folder; give the path of the file to write")
    if target.exists() and not target.is_file():
        raise CommandError(f"{flag} {path} exists and is not a regular file")
    _check_writable(target.parent, flag, path)


def check_output_dir(path: str | None, flag: str) -> None:
    """Raise ``CommandError`` unless ``path`` is a folder (existing or not yet made) that files can be written in."""
    if path is None:
        return
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise CommandError(f"{flag} {path} exists and is not a folder")
    _check_writable(target, flag, path)


def _check_writable(folder: Path, flag: str, path: str) -> None:
    """Write and delete a probe file in ``folder`` or, if it does not exist yet, in its nearest existing parent
    (where it would be made); nothing is created."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CommandError(f"{flag} {path}: {existing} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".titok-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CommandError(f"{flag} {path}: cannot write in {existing} ({e.strerror or e})") from None


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA if available, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise CommandError(f"--device {name!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CommandError(f"--device {name!r}: CUDA is not available on this machine")
    return device


def configure_backends(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto = CUDA if present)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")


def add_model_argument(parser: argparse.ArgumentParser, name: str = "model", flag: str = "--weights") -> None:
    parser.add_argument(
        name,
        help="a folder (titok's or the reference's layout), a Hugging Face Hub id, a released preset name, "
        f"a preset name with {flag} FILE, or a training checkpoint folder (runs/x/checkpoints/checkpoint-N)",
    )
    parser.add_argument(
        flag,
        metavar="FILE|ema|raw",
        help=f"a bare weights file (.safetensors/.bin) of the preset named by {name.upper()}; or, for a training "
        "checkpoint folder, which of its weights: ema (default) or raw",
    )


# titok.sampling's names (a test checks that they agree), here so that building the parser imports no torch
MASK_SCHEDULES = ("arccos", "cosine", "linear", "square", "sqrt")
GUIDANCE_DECAYS = ("constant", "linear", "power-cosine")


def add_sampling_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """MaskGIT sampling options under the reference's names (unset: the generator's own settings); read them back
    with :func:`sampling_settings`."""
    parser.add_argument("--steps", type=int, dest="num_sample_steps", metavar="N", help="sampling steps")
    parser.add_argument(
        "--guidance", type=float, dest="guidance_scale", metavar="SCALE", help="classifier-free guidance scale"
    )
    parser.add_argument(
        "--guidance-decay",
        choices=list(GUIDANCE_DECAYS),
        dest="guidance_decay",
        metavar="DECAY",
        help=f"how guidance changes over the steps: {', '.join(GUIDANCE_DECAYS)}",
    )
    parser.add_argument(
        "--guidance-pow", type=float, dest="guidance_scale_pow", metavar="POW", help="power of power-cosine"
    )
    parser.add_argument(
        "--temperature", type=float, dest="randomize_temperature", metavar="T", help="Gumbel-noise temperature"
    )
    annealing = {"dest": "softmax_temperature_annealing", "action": argparse.BooleanOptionalAction, "default": None}
    parser.add_argument("--annealing", **annealing, help="softmax-temperature annealing (or --no-annealing)")
    parser.add_argument("--anneal", **annealing, help=argparse.SUPPRESS)  # short spellings, not listed twice
    schedule = {"choices": list(MASK_SCHEDULES), "dest": "mask_schedule", "metavar": "SCHEDULE"}
    parser.add_argument("--mask-schedule", **schedule, help=f"masking schedule: {', '.join(MASK_SCHEDULES)}")
    parser.add_argument("--schedule", **schedule, help=argparse.SUPPRESS)


def sampling_settings(args: argparse.Namespace, base: SamplingConfig) -> SamplingConfig:
    """``base`` (a generator's own settings) with those given on the command line (see
    :func:`add_sampling_arguments`); a bad value is a :class:`CommandError`."""
    from dataclasses import fields

    names = (f.name for f in fields(base))
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    try:
        return base.replace(**given)
    except ValueError as e:
        raise CommandError(str(e)) from None


def load_model(spec: str, weights: str | None, device: torch.device):
    """The model ``spec`` names (see :func:`add_model_argument`); ``weights`` a weights file of the preset
    ``spec``, or ``ema``/``raw`` for a training checkpoint folder."""
    import titok
    from titok.checkpoint_folder import WEIGHT_CHOICES, is_checkpoint

    try:
        if weights in WEIGHT_CHOICES and (is_checkpoint(spec) or not Path(weights).is_file()):
            if not is_checkpoint(spec):
                raise CommandError(f"--weights {weights} chooses a training checkpoint's weights; {spec} is not one")
            return titok.load(spec, device=device, weights=weights)
        if weights:
            return titok.load(weights, preset=spec, device=device)
        return titok.load(spec, device=device)
    except (ValueError, FileNotFoundError, TypeError) as e:
        raise CommandError(str(e)) from None


def grid_scale(image_size: int, scale: int | None) -> int:
    """``--scale``, or the default enlargement for ``image_size``-pixel pictures (see
    :func:`titok.data.labelled.readable_scale`); a bad value is a :class:`CommandError`."""
    from titok.data.labelled import readable_scale

    try:
        return readable_scale(image_size, scale)
    except ValueError as e:
        raise CommandError(f"--scale: {e}") from None
