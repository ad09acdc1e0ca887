"""``titok generate`` (class-conditional sampling to a grid or PNGs) and ``titok pretokenize``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tqdm import tqdm

from titok.cli.common import (
    CommandError,
    add_common,
    add_model_argument,
    add_sampling_arguments,
    check_output_dir,
    check_output_file,
    grid_scale,
    load_model,
    sampling_settings,
    torch,
)
from titok.cli.precision import add_precision_argument
from titok.data.sources import SOURCES_HELP
from titok.extras import install_hint


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
    p.add_argument("-o", "--output", help="the grid PNG to write: one labelled row per class")
    p.add_argument("--out-dir", help="also write one PNG per sample here (at the model's resolution)")
    p.add_argument(
        "--codes", metavar="NPZ", help="also write the sampled codes (B x N int64) and labels here, for detokenize"
    )
    p.add_argument(
        "--scale",
        type=int,
        help="enlarge the grid's images this many times, nearest neighbour (default: enough for 128 px; 1 for none)",
    )
    p.add_argument(
        "--tokens",
        type=int,
        metavar="K",
        help="sample only the first K of the N codes and decode that prefix (an ordered tokenizer and generator)",
    )
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
        "Evaluation preprocessing (shorter side resized, center crop). Resumable: run the same command again "
        "(on a finished folder it does nothing). "
        "Under torchrun/accelerate each process encodes its own slice.",
    )
    add_model_argument(p, "tokenizer", "--weights")
    p.add_argument("data", help=f"{SOURCES_HELP} (a bare fashion-mnist: its train split)")
    p.add_argument("-o", "--output", required=True, help="the tokens folder to write")
    p.add_argument("--flip", action="store_true", help="also store each image's horizontally flipped copy")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=2)
    add_common(p)
    add_precision_argument(p)
    p.set_defaults(run=run_pretokenize)


def _labels(args: argparse.Namespace, generator) -> torch.Tensor | None:
    if args.unconditional is not None:
        if args.unconditional < 1:
            raise CommandError(f"--unconditional must be at least 1, got {args.unconditional}")
        return None
    num_classes = generator.config.num_classes
    try:
        classes = [int(c) for c in args.classes.split(",")] if args.classes else list(range(min(num_classes, 10)))
    except ValueError:
        raise CommandError(f"--classes must be comma-separated integers, got {args.classes!r}") from None
    try:
        generator.check_labels(classes)  # the generator's own check, once, before any sampling
    except ValueError as e:
        raise CommandError(str(e)) from None
    if args.per_class < 1:
        raise CommandError(f"--per-class must be at least 1, got {args.per_class}")
    return torch.tensor(classes).repeat_interleave(args.per_class)


def run_generate(args: argparse.Namespace) -> int:
    from titok.data.images import save_png, to_uint8
    from titok.models import ImageTokenizer, MaskedGenerator

    if not args.output and not args.out_dir and not args.codes:
        raise CommandError("say where to write: -o GRID.png, --out-dir DIR and/or --codes CODES.npz")
    check_output_file(args.output, "-o")
    check_output_dir(args.out_dir, "--out-dir")
    check_output_file(args.codes, "--codes")
    tokenizer = load_model(args.tokenizer, args.tokenizer_weights, args.device)
    generator = load_model(args.generator, args.generator_weights, args.device)
    if not isinstance(tokenizer, ImageTokenizer) or not isinstance(generator, MaskedGenerator):
        raise CommandError("usage: titok generate TOKENIZER GENERATOR (a tokenizer first, then a generator)")
    if (tokenizer.codebook_size, tokenizer.num_tokens) != (generator.codebook_size, generator.num_tokens):
        raise CommandError(
            f"the generator models {generator.num_tokens} codes of {generator.codebook_size}; the tokenizer has "
            f"{tokenizer.num_tokens} codes of {tokenizer.codebook_size}"
        )
    scale, k = grid_scale(tokenizer.image_size, args.scale), _prefix(args, tokenizer, generator)
    labels = _labels(args, generator)
    total = args.unconditional if labels is None else len(labels)
    settings = sampling_settings(args, generator.config.sampling)
    rng = torch.Generator(args.device).manual_seed(args.seed)
    images, codes, start = [], [], time.perf_counter()
    for lo in tqdm(range(0, total, args.batch_size), unit="batch", desc="generate", disable=None):
        n = min(args.batch_size, total - lo)
        batch_labels = None if labels is None else labels[lo : lo + n]
        codes.append(generator.generate(batch_labels, num_samples=n, sampling=settings, generator=rng, num_tokens=k))
        images.append(tokenizer.detokenize(codes[-1]).clamp(0, 1).float().cpu())
    elapsed = time.perf_counter() - start
    images_t = torch.cat(images)
    if args.codes:
        _write_codes(args.codes, torch.cat(codes), labels, args.tokenizer)
    if args.out_dir:
        for i, image in enumerate(to_uint8(images_t)):
            tag = "" if labels is None else f"_class{int(labels[i])}"
            save_png(image, Path(args.out_dir) / f"{i:05d}{tag}.png")
    if args.output:
        _write_grid(args.output, images_t, labels, args.per_class, scale)
    length = f", {k} of {generator.num_tokens} tokens each" if k else ""
    print(f"{total} sample(s){length} in {elapsed:.2f} s ({total / elapsed:.1f} samples/s), seed {args.seed}")
    print("sampling: " + ", ".join(f"{k}={v}" for k, v in settings.to_dict().items()))
    print("wrote " + " and ".join(x for x in (args.output, args.out_dir, args.codes) if x))
    return 0


def _write_codes(path: str, codes: torch.Tensor, labels: torch.Tensor | None, tokenizer: str) -> None:
    """The samples' codes as ``titok tokenize`` writes them (``codes``, ``model``), with their ``labels`` (-1:
    unconditional)."""
    import numpy as np

    from titok.io import atomic_write

    classes = np.full(len(codes), -1, dtype=np.int64) if labels is None else labels.numpy().astype(np.int64)
    arrays = {"codes": codes.cpu().numpy().astype(np.int64), "labels": classes, "model": np.array(tokenizer)}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def _prefix(args: argparse.Namespace, tokenizer, generator) -> int | None:
    """``--tokens``, checked: 1 <= K <= N, and a tokenizer that decodes prefixes when K < N."""
    k, n = args.tokens, generator.num_tokens
    if k is None:
        return None
    if not 1 <= k <= n:
        raise CommandError(f"--tokens {k} is out of range: {args.generator} models {n} tokens (give 1 to {n})")
    if k < n and getattr(tokenizer.config, "layout", None) != "1d":
        raise CommandError(f"--tokens {k}: {args.tokenizer} decodes all {n} of its tokens only (not a 1-D TiTok)")
    return k


def _write_grid(out: str, images: torch.Tensor, labels: torch.Tensor | None, per_class: int, scale: int) -> None:
    """One row per class, named on the left, samples numbered on top; unconditional samples in unnamed rows of 8."""
    from titok.data.labelled import write_grid

    if labels is None:
        rows = [("", chunk) for chunk in images.split(8)]
        write_grid(out, rows, [], scale)
        return
    rows = [(f"class {int(labels[i])}", images[i : i + per_class]) for i in range(0, len(images), per_class)]
    write_grid(out, rows, [f"sample {k + 1}" for k in range(per_class)], scale)


def _dataset(spec: str, size: int, limit: int | None):
    """The dataset ``spec`` names (a bare ``fashion-mnist`` is its training split), in order, with evaluation
    preprocessing (center crop, no flips), and its description for the tokens folder's metadata."""
    from titok.data.build import build_dataset
    from titok.data.sources import data_config

    cfg = data_config(spec, limit=limit, split="train")
    return build_dataset(cfg, size, train=False, ordered=True), cfg.to_dict()


def run_pretokenize(args: argparse.Namespace) -> int:
    from titok.train.pretokenize import finished, pretokenize

    try:
        from accelerate import PartialState
    except ImportError:
        raise CommandError(f"pretokenize needs accelerate: {install_hint('train')}") from None

    check_output_dir(args.output, "-o")
    state = PartialState(cpu=args.device.type == "cpu")
    device = state.device if state.num_processes > 1 else args.device
    tokenizer = load_model(args.tokenizer, args.weights, device)
    try:
        dataset, description = _dataset(args.data, tokenizer.image_size, args.limit)
        description = {**description, "image_size": tokenizer.image_size, "preprocessing": "resize+center-crop"}
        done = finished(args.output, tokenizer, args.tokenizer, description, args.flip)
        if done is not None:
            if state.is_main_process:
                print(f"{args.output} is already finished ({done.count} sequence(s)): nothing to do")
            return 0
        meta = pretokenize(
            tokenizer,
            dataset,
            args.output,
            tokenizer_name=args.tokenizer,
            data_description=description,
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
