"""The ``titok`` command. This package alone configures logging, devices and backends."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import torch

logger = logging.getLogger("titok")


class CommandError(Exception):
    """A failure to report as ``error: ...`` with exit status 2 (bad input), without a traceback."""


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
        f"or a preset name with {flag} FILE",
    )
    parser.add_argument(flag, metavar="FILE", help="a bare weights file (.safetensors/.bin) of the preset MODEL")


def add_sampling_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """MaskGIT sampling options under the reference's names (unset: the generator's own settings); read them back
    with :func:`sampling_options`."""
    from titok.sampling import GUIDANCE_DECAYS, MASK_SCHEDULES

    parser.add_argument("--steps", type=int, dest="num_sample_steps", help="sampling steps")
    parser.add_argument("--guidance", type=float, dest="guidance_scale", help="classifier-free guidance scale")
    parser.add_argument("--guidance-decay", choices=list(GUIDANCE_DECAYS), dest="guidance_decay")
    parser.add_argument("--guidance-pow", type=float, dest="guidance_scale_pow", help="power of power-cosine")
    parser.add_argument("--temperature", type=float, dest="randomize_temperature", help="Gumbel-noise temperature")
    parser.add_argument(
        "--annealing",
        "--anneal",
        action=argparse.BooleanOptionalAction,
        dest="softmax_temperature_annealing",
        default=None,
        help="softmax-temperature annealing",
    )
    parser.add_argument("--mask-schedule", "--schedule", choices=list(MASK_SCHEDULES), dest="mask_schedule")


def sampling_options(args: argparse.Namespace) -> dict:
    """The sampling settings given on the command line (see :func:`add_sampling_arguments`), by their names in
    :class:`~titok.sampling.SamplingConfig`."""
    from dataclasses import fields

    from titok.sampling import SamplingConfig

    names = (f.name for f in fields(SamplingConfig))
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def load_model(spec: str, weights: str | None, device: torch.device):
    import titok

    try:
        if weights:
            return titok.load(weights, preset=spec, device=device)
        return titok.load(spec, device=device)
    except (ValueError, FileNotFoundError, TypeError) as e:
        raise CommandError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    from titok import __version__
    from titok.cli import demo, evaluate, generate, tokens, train

    parser = argparse.ArgumentParser(
        prog="titok",
        description="Compact 1-D image tokenizers (TiTok) and MaskGIT generators.",
    )
    parser.add_argument("--version", action="version", version=f"titok {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (demo, tokens, generate, train, evaluate):
        module.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse cannot read positional key=value overrides that follow an option (`CONFIG --resume a=1`)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if hasattr(args, "device"):
            args.device = pick_device(args.device)
            configure_backends(args.device)
        from titok.cli.precision import precision_scope

        with precision_scope(args):
            return int(args.run(args) or 0)
    except CommandError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
