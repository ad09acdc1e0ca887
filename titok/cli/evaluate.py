"""``titok eval recon | gen | stats``: rFID/IS/PSNR/SSIM/LPIPS/codebook usage, gFID/IS, reference statistics.

Launched under torchrun or ``accelerate launch``, every process takes a contiguous share of the work and the
statistics are merged; process 0 prints the table and writes the files.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from titok.cli.common import (
    CommandError,
    add_common,
    add_model_argument,
    add_sampling_arguments,
    check_output_file,
    load_model,
    sampling_settings,
    torch,
)
from titok.cli.precision import add_precision_argument
from titok.data.sources import SOURCES_HELP

PROTOCOL = (
    "Images are converted to RGB, resized so that their shorter side is the tokenizer's resolution (bicubic, "
    "antialiased), center-cropped and rounded to uint8, for originals, reconstructions and samples alike. "
    "Inception features are torch-fidelity's FID Inception-v3 in float64 with the pytorch-fid weights (SHA-256 "
    "checked); IS uses its unbiased logits over 10 contiguous splits."
)
DATA_HELP = f"{SOURCES_HELP} (a bare fashion-mnist: its test split)"


def _add_extractor(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--extractor",
        choices=["inception", "fmnist"],
        default="inception",
        help="inception: the standard FID network (default); fmnist: titok's Fashion-MNIST classifier (FD-fmnist)",
    )
    p.add_argument(
        "--inception-weights",
        metavar="FILE",
        help="pt_inception-2015-12-05-6726825d.pth / weights-inception-2015-12-05-6726825d.pth "
        "(default: $TITOK_INCEPTION_WEIGHTS, then torch's checkpoint cache, then a download)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="images per batch")
    p.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="image-loading processes (default: the CPU count, at most 8)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars (shown on a terminal only)")


def _add_json_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", metavar="JSON", help="write every number and the protocol here")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval",
        help="evaluate tokenizers and generators",
        description="Evaluate a tokenizer's reconstructions (recon), a generator's samples (gen), or compute the "
        "feature statistics of real images for gen's --ref (stats).",
    )
    evsub = ev.add_subparsers(dest="eval_command", required=True, metavar="WHAT")

    p = evsub.add_parser(
        "recon",
        help="rFID, IS, PSNR, SSIM, LPIPS, codebook usage",
        description="Reconstruct DATA with TOKENIZER and score the reconstructions against the originals: rFID, "
        f"Inception Score, PSNR, SSIM, LPIPS and codebook usage. {PROTOCOL}",
    )
    add_model_argument(p, "tokenizer")
    p.add_argument("data", help=DATA_HELP)
    p.add_argument("--num", "--num-images", type=int, dest="num", help="evaluate the first NUM images (default: all)")
    p.add_argument("--lpips", default="alex", choices=["alex", "vgg", "squeeze", "none"], help="LPIPS backbone")
    p.add_argument("--seed", type=int, default=0, help="seed of the posterior draws of a VAE tokenizer")
    _add_extractor(p)
    _add_json_output(p)
    add_common(p)
    add_precision_argument(p, default="fp32")
    p.set_defaults(run=_leaving_the_group(run_recon))

    p = evsub.add_parser(
        "gen",
        help="gFID and IS of class-balanced samples",
        description="Sample NUM class-balanced images with GENERATOR, decode them with TOKENIZER and score them "
        f"against --ref: gFID and Inception Score. {PROTOCOL}",
    )
    add_model_argument(p, "tokenizer", "--tokenizer-weights")
    add_model_argument(p, "generator", "--generator-weights")
    p.add_argument("--ref", required=True, help=f"reference: an .npz of mu/sigma, or real images ({DATA_HELP})")
    p.add_argument(
        "--num",
        "--num-samples",
        type=int,
        default=50_000,
        dest="num",
        help="number of samples (default 50,000: about an hour on a CPU); under torchrun spell it --num-samples",
    )
    p.add_argument("--seed", type=int, default=42, help="process r samples with torch.Generator seeded SEED + r")
    p.add_argument("--export-npz", metavar="PATH", help="also write the samples for the ADM evaluator (arr_0, arr_1)")
    p.add_argument("--cache-dir", help="where statistics of reference images are cached (default ~/.cache/titok)")
    s = p.add_argument_group("sampling (default: the generator's own settings)")
    add_sampling_arguments(s)
    _add_extractor(p)
    _add_json_output(p)
    p.set_defaults(batch_size=125)
    add_common(p)
    add_precision_argument(p, default="fp32")
    p.set_defaults(run=_leaving_the_group(run_gen))

    p = evsub.add_parser(
        "stats",
        help="feature statistics of real images (an .npz for --ref)",
        description="Compute the feature statistics (mean and covariance) of the real images DATA and write them to "
        "an .npz that eval gen takes as --ref, so that they are computed once.",
    )
    p.add_argument("data", help=DATA_HELP)
    p.add_argument("--size", type=int, required=True, help="resolution the images are preprocessed to")
    p.add_argument("-o", "--output", metavar="NPZ", help="the .npz file to write the statistics to (required)")
    _add_extractor(p)
    add_common(p)
    p.set_defaults(run=_leaving_the_group(run_stats))


def _leaving_the_group(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``run``, then leave torchrun's process group (joined in :func:`_setup`), however it ended."""

    def wrapped(args: argparse.Namespace) -> int:
        from titok.eval.dist import shutdown

        try:
            return run(args)
        finally:
            shutdown()

    return wrapped


def _setup(args: argparse.Namespace):
    """Join torchrun's process group, check the common options, build the extractor."""
    from titok.eval.dist import init_from_env
    from titok.metrics.extractors import create_extractor

    args.device = init_from_env(args.device)
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be at least 1, got {args.batch_size}")
    num = getattr(args, "num", None)
    if num is not None and num < 2:
        raise CommandError(f"--num must be at least 2, got {num}")
    try:
        return create_extractor(args.extractor, args.device, args.inception_weights)
    except (FileNotFoundError, ValueError, ImportError) as e:
        raise CommandError(str(e)) from None


def _model(spec: str, weights: str | None, device: torch.device, kind: str):
    from titok.models import ImageTokenizer, MaskedGenerator

    model = load_model(spec, weights, device)
    wanted = ImageTokenizer if kind == "tokenizer" else MaskedGenerator
    if not isinstance(model, wanted):
        raise CommandError(f"{spec} is a {type(model).__name__}, not a {kind}")
    return model.eval()


def _finish(report, args: argparse.Namespace) -> int:
    from titok.eval.dist import current_shard

    if current_shard().rank != 0:
        return 0
    print(report.table())
    if args.output:
        report.save(args.output)
        print(f"wrote {args.output}")
    if report.skipped:
        print(f"{len(report.skipped)} unreadable file(s) skipped:", file=sys.stderr)
        for message in report.skipped:
            print(f"  {message}", file=sys.stderr)
    return 1 if report.skipped else 0


def run_recon(args: argparse.Namespace) -> int:
    from titok.eval.data import open_source
    from titok.eval.recon import ReconOptions, evaluate_reconstruction

    check_output_file(args.output, "-o")
    extractor = _setup(args)
    tokenizer = _model(args.tokenizer, args.weights, args.device, "tokenizer")
    try:
        dataset, described = open_source(args.data, tokenizer.image_size, args.num)
        lpips = None if args.lpips == "none" else args.lpips
        options = ReconOptions(
            batch_size=args.batch_size,
            workers=args.workers,
            lpips_net=lpips,
            seed=args.seed,
            progress=not args.no_progress,
        )
        report = evaluate_reconstruction(tokenizer, dataset, extractor, options, described)
    except (FileNotFoundError, ValueError) as e:
        raise CommandError(str(e)) from None
    report.protocol.update(tokenizer=args.weights or args.tokenizer, precision=args.precision)
    return _finish(report, args)


def run_gen(args: argparse.Namespace) -> int:
    from titok.eval.gen import GenOptions, check_pair, evaluate_generation
    from titok.eval.reference_stats import reference_statistics

    check_output_file(args.output, "-o")
    check_output_file(args.export_npz, "--export-npz")
    extractor = _setup(args)
    tokenizer = _model(args.tokenizer, args.tokenizer_weights, args.device, "tokenizer")
    generator = _model(args.generator, args.generator_weights, args.device, "generator")
    try:
        check_pair(tokenizer, generator)  # before the reference statistics, which can take a while
    except ValueError as e:
        raise CommandError(str(e)) from None
    options = GenOptions(
        num=args.num,
        batch_size=args.batch_size,
        seed=args.seed,
        sampling=sampling_settings(args, generator.config.sampling),
        export_npz=args.export_npz,
        progress=not args.no_progress,
        say=lambda message: print(f"eval gen: {message}", file=sys.stderr, flush=True),
    )
    try:
        reference = reference_statistics(
            args.ref, extractor, tokenizer.image_size, args.cache_dir, 64, args.workers, not args.no_progress
        )
        report = evaluate_generation(tokenizer, generator, extractor, reference, options)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise CommandError(str(e)) from None
    report.protocol.update(
        tokenizer=args.tokenizer_weights or args.tokenizer,
        generator=args.generator_weights or args.generator,
        ref=args.ref,
        precision=args.precision,
    )
    return _finish(report, args)


def run_stats(args: argparse.Namespace) -> int:
    from titok.eval.dist import current_shard
    from titok.eval.reference_stats import image_statistics

    if not args.output:
        raise CommandError("stats needs -o/--output FILE.npz")
    check_output_file(args.output, "-o")
    extractor = _setup(args)
    try:
        stats, skipped = image_statistics(
            args.data, extractor, args.size, args.batch_size, args.workers, not args.no_progress
        )
    except (FileNotFoundError, ValueError) as e:
        raise CommandError(str(e)) from None
    if current_shard().rank == 0:
        stats.save(args.output)
        print(f"statistics of {stats.count:,} images ({stats.meta['extractor']}, {args.size}px) -> {args.output}")
        for message in skipped:
            print(f"skipped: {message}", file=sys.stderr)
    return 1 if skipped else 0
