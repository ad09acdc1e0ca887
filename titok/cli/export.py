"""``titok export MODEL -o DIR``: a clean model folder (config.json + model.safetensors) from a training checkpoint
or anything else ``titok.load`` reads."""

from __future__ import annotations

import argparse

from titok.cli.common import add_common, add_model_argument, check_output_dir, load_model


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="a model folder from a training checkpoint (or any model titok loads)",
        description="Write MODEL as a model folder (config.json + model.safetensors) that titok.load, every command "
        "and save_pretrained/push_to_hub users read: typically a training checkpoint folder "
        "(runs/x/checkpoints/checkpoint-N) with its EMA or raw weights (--weights ema|raw).",
        allow_abbrev=False,
    )
    add_model_argument(p)
    p.add_argument("-o", "--output", required=True, help="the model folder to write")
    add_common(p)
    p.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    check_output_dir(args.output, "-o")
    model = load_model(args.model, args.weights, args.device)
    model.save_pretrained(args.output)
    print(f"wrote {type(model).__name__} ({model.num_parameters():,} parameters) to {args.output}")
    return 0
