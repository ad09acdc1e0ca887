"""``titok train tokenizer|generator CONFIG [key=value ...]``: run a training recipe (also under torchrun /
accelerate)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from titok.cli.common import EXIT_INPUT, CommandError, check_output_dir

logger = logging.getLogger("titok")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a recipe (a shipped recipe's name or a YAML file)",
        description="Run a training recipe: the name of a shipped recipe (titok train --list shows them) or a YAML "
        "file. Overrides look like train.max_steps=1000 optim.lr=3e-4. Launch under torchrun or `accelerate "
        "launch` for several processes (on CPU, set ACCELERATE_USE_CPU=1).",
        allow_abbrev=False,
    )
    p.add_argument("--list", action="store_true", help="list the shipped recipes, one line each, and exit")
    p.set_defaults(run=run_list, kind=None)
    kinds = p.add_subparsers(dest="kind", metavar="KIND")
    t = kinds.add_parser(
        "tokenizer",
        help="a tokenizer: recipe vqgan, stage1, stage2 or single_stage",
        description="Train a 2-D VQGAN teacher (vqgan), a two-stage TiTok (stage1, then stage2) or a single-stage "
        "TiTok (single_stage) from a recipe: a shipped recipe's name (titok train --list) or a YAML file. "
        "Overrides look like train.max_steps=1000.",
        allow_abbrev=False,
    )
    _recipe_arguments(t)
    t.set_defaults(run=run_recipe, allowed={"vqgan", "stage1", "stage2", "single_stage"})
    g = kinds.add_parser(
        "generator",
        help="a MaskGIT generator on pretokenized codes",
        description="Train a class-conditional MaskGIT generator (BERT or U-ViT) on the codes of a tokens folder "
        "written by `titok pretokenize`, from a recipe: a shipped recipe's name (titok train --list) or a YAML file. "
        "Overrides look like train.max_steps=1000.",
        allow_abbrev=False,
    )
    _recipe_arguments(g)
    g.set_defaults(run=run_recipe, allowed={"generator"})


def run_list(args: argparse.Namespace) -> int:
    """``titok train --list``: the shipped recipes, one line each."""
    from titok.configs import KINDS, recipe_files, summary

    if not args.list:
        raise CommandError("give a KIND (tokenizer or generator) and a recipe, or --list")
    for kind in KINDS:
        print(f"{kind} recipes (titok train {kind} NAME):")
        files = recipe_files(kind)
        width = max(map(len, files))
        for name, path in files.items():
            print(f"  {name:<{width}}  {summary(path)}")
    return 0


def _recipe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="a shipped recipe's name (titok train --list) or a recipe YAML file")
    p.add_argument("overrides", nargs="*", help="key=value settings that replace the recipe's")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in train.output_dir")
    p.add_argument("--resume-from", metavar="CHECKPOINT", help="continue from this checkpoint folder")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")


def _resume(args: argparse.Namespace) -> bool | str:
    return args.resume_from or args.resume


def run_recipe(args: argparse.Namespace) -> int:
    """Parse the recipe (only the names ``args.allowed``) and run its training function."""
    from titok.configs import missing_inputs, resolve
    from titok.train.config import read_recipe
    from titok.train.recipes import parse, recipes

    try:
        path = resolve(args.config, args.kind)
        raw = read_recipe(path, args.overrides)
        recipe = parse(raw, str(path), args.allowed)
    except (ValueError, FileNotFoundError) as e:
        raise CommandError(str(e)) from None
    missing = missing_inputs(raw, path)
    if missing:
        raise CommandError(f"{path.stem} needs an earlier run: " + "; ".join(missing))
    check_output_dir(str(recipe.train.output_dir), "train.output_dir")  # before the data and the model are built
    train = recipes()[recipe.recipe][1]
    _show_announcements()
    _print_precision(recipe.train.mixed_precision)
    return _run(lambda: train(recipe, _resume(args)), Path(recipe.train.output_dir) / "final" / "model.safetensors")


def _print_precision(mixed_precision: str) -> None:
    """Say (once, from the first process) what ``train.mixed_precision`` means on this machine."""
    import os
    import sys

    import torch

    from titok.precision import accelerate_precision

    if os.environ.get("RANK", "0") != "0":
        return
    try:
        _, choice = accelerate_precision(mixed_precision, torch.cuda.is_available())
    except ValueError:
        return  # the run stops with the reason
    print(f"precision: {choice} [train.mixed_precision={mixed_precision}]", file=sys.stderr)


class _Stderr(logging.Handler):
    """Plain lines on the current ``sys.stderr`` (looked up on each message)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


def _show_announcements() -> None:
    """Show what a run says when it starts (device, processes, parameters, data, resume point) without -v."""
    announce = logging.getLogger("titok.train.announce")
    announce.setLevel(logging.INFO)
    announce.propagate = False
    if not any(isinstance(h, _Stderr) for h in announce.handlers):
        announce.addHandler(_Stderr())


def _written(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.is_file() else None


def _run(job, weights: Path | None = None) -> int:
    """Run the training ``job``; ``weights``: the exported model's weights file, to tell a finished run (left as
    it was) from a new export."""
    from titok.train.runtime import TrainingError

    before = _written(weights) if weights else None
    try:
        final = job()
    except TrainingError as e:  # the run cannot go on, for a reason its message gives: not a crash
        logger.error("%s", e)
        return EXIT_INPUT
    except (ValueError, FileNotFoundError) as e:
        logger.info("where it failed (the message follows)", exc_info=True)  # with -v: the traceback too
        raise CommandError(str(e)) from None
    if before is not None and _written(weights) == before:
        print(f"finished run, nothing to do: {final}")
    else:
        print(f"exported {final}")
    return 0
