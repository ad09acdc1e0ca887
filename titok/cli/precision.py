"""``--precision auto|fp32|bf16|fp16``: the number format a command computes in (see :mod:`titok.precision`)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # titok.precision.PRECISIONS, without importing torch for --help


def add_precision_argument(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    note = " (evaluation protocols are pinned to fp32)" if default == "fp32" else ""
    parser.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default=default,
        help=f"auto: bf16 on CPUs with native bf16 (AMX / AVX512-BF16 / ARM BF16) and on GPUs that support it, "
        f"fp32 elsewhere; fp16 needs a GPU (default: {default}{note})",
    )


@contextlib.contextmanager
def precision_scope(args: argparse.Namespace) -> Iterator[None]:
    """Run a command in the precision ``args.precision`` asks for on ``args.device`` (the CPU if it has none):
    print the choice to stderr and replace ``args.precision`` by the concrete one (fp32, bf16, fp16)."""
    if getattr(args, "precision", None) is None:
        yield
        return
    import torch

    from titok.cli.common import CommandError
    from titok.precision import resolve

    try:
        choice = resolve(args.precision, getattr(args, "device", None) or torch.device("cpu"))
    except ValueError as e:
        raise CommandError(f"--precision {args.precision}: {e}") from None
    print(f"precision: {choice}", file=sys.stderr)
    args.precision = choice.precision
    with choice.autocast():
        yield
