"""The ``titok`` command. This package alone configures logging, devices and backends."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence

from titok.cli.common import (
    EXIT_CODES,
    EXIT_FAILURE,
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    CommandError,
    configure_backends,
    pick_device,
)

logger = logging.getLogger("titok")


def build_parser() -> argparse.ArgumentParser:
    from titok import __version__
    from titok.cli import demo, evaluate, export, generate, info, serve, tokens, train

    parser = argparse.ArgumentParser(
        prog="titok",
        description="Compact 1-D image tokenizers (TiTok) and MaskGIT generators.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"titok {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (demo, tokens, info, generate, train, evaluate, export, serve):
        module.add_parsers(sub)
    _finish_parsers(parser)
    return parser


def _finish_parsers(parser: argparse.ArgumentParser) -> None:
    """In every (sub)command: options must be spelled whole (a prefix such as ``--num`` must not silently mean
    ``--num-workers``), and every option's help shows its default unless it already says it."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _finish_parsers(child)
        elif _shows_default(action):
            action.help = f"{action.help} (default: %(default)s)" if action.help else "(default: %(default)s)"


def _shows_default(action: argparse.Action) -> bool:
    default, text = action.default, action.help or ""
    if text == argparse.SUPPRESS or "default" in text or isinstance(action, argparse._HelpAction):
        return False
    return not any(default is v for v in (None, False, True, argparse.SUPPRESS)) and default != []


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv``; returns the exit status (see ``EXIT_CODES``)."""
    for stream in (sys.stdout, sys.stderr):  # a file name that is not valid UTF-8 must not crash a print
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
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
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug or a fault: one line (and the traceback with -v), never a bare traceback
        verbose = getattr(args, "verbose", False)
        if verbose:
            traceback.print_exc()
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        hint = "" if verbose else " (run with -v for the traceback)"
        print(f"error: unexpected failure: {type(e).__name__}{': ' + first if first else ''}{hint}", file=sys.stderr)
        return EXIT_FAILURE
