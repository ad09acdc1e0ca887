"""``titok train tokenizer|generator CONFIG [key=value ...]``: run a training recipe (also under torchrun /
accelerate)."""

from __future__ import annotations

import argparse
import logging

from titok.cli import CommandError

logger = logging.getLogger("titok")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a recipe (YAML in configs/)",
        description="Run a training recipe. Overrides look like train.max_steps=1000 optim.lr=3e-4. Launch under "
        "torchrun or `accelerate launch` for several processes (on CPU, set ACCELERATE_USE_CPU=1).",
    )
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    t = kinds.add_parser(
        "tokenizer",
        help="a tokenizer: recipe vqgan, stage1, stage2 or single_stage",
        description="Train a 2-D VQGAN teacher (vqgan), a two-stage TiTok (stage1, then stage2) or a single-stage "
        "TiTok (single_stage) from a recipe in configs/tokenizer/. Overrides look like train.max_steps=1000.",
    )
    _recipe_arguments(t)
    t.set_defaults(run=run_recipe, allowed={"vqgan", "stage1", "stage2", "single_stage"})
    g = kinds.add_parser("generator", help="a MaskGIT generator on pretokenized codes")
    _recipe_arguments(g)
    g.set_defaults(run=run_recipe, allowed={"generator"})


def _recipe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="the recipe YAML")
    p.add_argument("overrides", nargs="*", help="key=value settings that replace the recipe's")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in train.output_dir")
    p.add_argument("--resume-from", metavar="CHECKPOINT", help="continue from this checkpoint folder")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")


def _resume(args: argparse.Namespace) -> bool | str:
    return args.resume_from or args.resume


def run_recipe(args: argparse.Namespace) -> int:
    """Parse the recipe (only the names ``args.allowed``) and run its training function."""
    from titok.train.config import read_recipe
    from titok.train.recipes import parse, recipes

    try:
        recipe = parse(read_recipe(args.config, args.overrides), args.config, args.allowed)
    except (ValueError, FileNotFoundError) as e:
        raise CommandError(str(e)) from None
    train = recipes()[recipe.recipe][1]
    _print_precision(recipe.train.mixed_precision)
    return _run(lambda: train(recipe, _resume(args)))


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


def _run(job) -> int:
    from titok.train.runtime import TrainingError

    try:
        final = job()
    except TrainingError as e:
        logger.error("%s", e)
        return 1
    except (ValueError, FileNotFoundError) as e:
        logger.info("where it failed (the message follows)", exc_info=True)  # with -v: the traceback too
        raise CommandError(str(e)) from None
    print(f"exported {final}")
    return 0
