"""``titok generate`` (class-conditional sampling to a grid or PNGs) and ``titok pretokenize``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from tqdm import tqdm

from titok.cli import (
    CommandError,
    add_common,
    add_model_argument,
    add_sampling_arguments,
    load_model,
    sampling_options,
)
from titok.cli.precision import add_precision_argument


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="sample images with a MaskGIT generator and its tokenizer",
        description="Sample codes for classes with the generator and decode them with the tokenizer. Settings not "
        "given take the generator's defaults (for released generators: their released sampling settings).",
    )
    add_model_argument(p, "tokenizer", "--tokenizer-weights")
    add_model_argument(p, "generator", "--generator-weights")
    p.add_argument("--classes", help="comma-separated class ids (default: the first 10 classes)")
    p.add_argument("--per-class", type=int, default=4, help="samples per class (one grid row per class)")
    p.add_argument("--unconditional", type=int, metavar="N", help="N samples without classes instead")
    p.add_argument("-o", "--output", help="the grid PNG to write")
    p.add_argument("--out-dir", help="also write one PNG per sample here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    add_sampling_arguments(p)
    add_common(p)
    add_precision_argument(p)
    p.set_defaults(run=run_generate)

    p = sub.add_parser(
        "pretokenize",
        help="a tokenizer's codes of a whole dataset, for generator training",
        description="Encode DATA with TOKENIZER into a tokens folder (memory-mapped codes, labels, image ids). "
        "Evaluation preprocessing (shorter side resized, center crop). Resumable: run the same command again. "
        "Under torchrun/accelerate each process encodes its own slice.",
    )
    add_model_argument(p, "tokenizer", "--weights")
    p.add_argument("data", help="a folder of images (class subfolders give labels) or fashion-mnist[:train|:test]")
    p.add_argument("-o", "--output", required=True, help="the tokens folder to write")
    p.add_argument("--flip", action="store_true", help="also store each image's horizontally flipped copy")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=2)
    add_common(p)
    add_precision_argument(p)
    p.set_defaults(run=run_pretokenize)


def _labels(args: argparse.Namespace, num_classes: int) -> torch.Tensor | None:
    if args.unconditional is not None:
        if args.unconditional < 1:
            raise CommandError(f"--unconditional must be at least 1, got {args.unconditional}")
        return None
    try:
        classes = [int(c) for c in args.classes.split(",")] if args.classes else list(range(min(num_classes, 10)))
    except ValueError:
        raise CommandError(f"--classes must be comma-separated integers, got {args.classes!r}") from None
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise CommandError(f"class id {bad[0]} is out of range: the generator knows classes [0, {num_classes})")
    if args.per_class < 1:
        raise CommandError(f"--per-class must be at least 1, got {args.per_class}")
    return torch.tensor(classes).repeat_interleave(args.per_class)


def run_generate(args: argparse.Namespace) -> int:
    from titok.data.images import save_grid, save_png, to_uint8
    from titok.models import ImageTokenizer, MaskedGenerator

    if not args.output and not args.out_dir:
        raise CommandError("say where to write: -o GRID.png and/or --out-dir DIR")
    tokenizer = load_model(args.tokenizer, args.tokenizer_weights, args.device)
    generator = load_model(args.generator, args.generator_weights, args.device)
    if not isinstance(tokenizer, ImageTokenizer) or not isinstance(generator, MaskedGenerator):
        raise CommandError("usage: titok generate TOKENIZER GENERATOR (a tokenizer first, then a generator)")
    if (tokenizer.codebook_size, tokenizer.num_tokens) != (generator.codebook_size, generator.num_tokens):
        raise CommandError(
            f"the generator models {generator.num_tokens} codes of {generator.codebook_size}; the tokenizer has "
            f"{tokenizer.num_tokens} codes of {tokenizer.codebook_size}"
        )
    labels = _labels(args, generator.config.num_classes)
    total = args.unconditional if labels is None else len(labels)
    settings = sampling_options(args)
    try:
        generator.config.sampling.replace(**settings)
    except ValueError as e:
        raise CommandError(str(e)) from None
    rng = torch.Generator(args.device).manual_seed(args.seed)
    images, start = [], time.perf_counter()
    for lo in tqdm(range(0, total, args.batch_size), unit="batch", desc="generate", disable=None):
        n = min(args.batch_size, total - lo)
        batch_labels = None if labels is None else labels[lo : lo + n]
        codes = generator.generate(batch_labels, num_samples=n, generator=rng, **settings)
        images.append(tokenizer.detokenize(codes).clamp(0, 1).float().cpu())
    elapsed = time.perf_counter() - start
    images_t = torch.cat(images)
    if args.out_dir:
        for i, image in enumerate(to_uint8(images_t)):
            tag = "" if labels is None else f"_class{int(labels[i])}"
            save_png(image, Path(args.out_dir) / f"{i:05d}{tag}.png")
    if args.output:
        save_grid(images_t, args.output, nrow=args.per_class if labels is not None else 8)
    used = generator.config.sampling.replace(**settings).to_dict()
    print(f"{total} sample(s) in {elapsed:.2f} s ({total / elapsed:.1f} samples/s), seed {args.seed}")
    print("sampling: " + ", ".join(f"{k}={v}" for k, v in used.items()))
    print("wrote " + " and ".join(x for x in (args.output, args.out_dir) if x))
    return 0


def _dataset(spec: str, size: int, limit: int | None):
    from titok.data.build import DataConfig, build_dataset

    if spec.startswith("fashion-mnist") or spec.startswith("fashion_mnist"):
        split = spec.split(":", 1)[1] if ":" in spec else "train"
        cfg = DataConfig(source="fashion_mnist", split=split, limit=limit)  # type: ignore[arg-type]
    else:
        cfg = DataConfig(source="folder", path=spec, limit=limit)
    return build_dataset(cfg, size, train=False), cfg.to_dict()


def run_pretokenize(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from titok.train.pretokenize import pretokenize

    state = PartialState(cpu=args.device.type == "cpu")
    device = state.device if state.num_processes > 1 else args.device
    tokenizer = load_model(args.tokenizer, args.weights, device)
    try:
        dataset, description = _dataset(args.data, tokenizer.image_size, args.limit)
        meta = pretokenize(
            tokenizer,
            dataset,
            args.output,
            tokenizer_name=args.tokenizer,
            data_description={**description, "image_size": tokenizer.image_size, "preprocessing": "resize+center-crop"},
            flip_copies=args.flip,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            rank=state.process_index,
            world=state.num_processes,
            barrier=state.wait_for_everyone,
        )
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        raise CommandError(str(e)) from None
    if meta is not None:
        print(f"wrote {meta.count} sequence(s) of {meta.num_tokens} codes to {args.output} ({meta.skipped} skipped)")
    return 1 if meta is not None and meta.skipped else 0
