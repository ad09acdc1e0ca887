"""``titok demo``: the shipped Fashion-MNIST models at work, on the CPU, with no download."""

from __future__ import annotations

import argparse
import sys

from titok.cli.common import CommandError, check_output_file
from titok.cli.precision import add_precision_argument


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="reconstruct and generate Fashion-MNIST with the shipped models (CPU, no download)",
        description="Reconstruct held-out Fashion-MNIST test images and generate samples of every class with the "
        "tokenizer and generator that titok ships; write one labelled grid and print codes, PSNR, FD and timings.",
    )
    p.add_argument("--out", default="demo.png", help="the grid PNG to write (default: demo.png)")
    p.add_argument("--tokenizer", help="another tokenizer (default: the shipped one)")
    p.add_argument("--generator", help="another generator (default: the shipped one)")
    p.add_argument("--images", type=int, default=1000, help="test images to reconstruct (default 1000)")
    p.add_argument("--samples-per-class", type=int, default=50, help="default 50")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars (the phases are still named)")
    add_precision_argument(p)
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    p.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    import torch

    from titok import demo

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 8)))
    if args.images < 10 or args.samples_per_class < 1:
        raise CommandError("--images must be at least 10 and --samples-per-class at least 1")
    check_output_file(args.out, "--out")
    try:
        result = demo.run(
            args.out,
            tokenizer=args.tokenizer or demo.TOKENIZER,
            generator=args.generator or demo.GENERATOR,
            num_images=args.images,
            samples_per_class=args.samples_per_class,
            seed=args.seed,
            say=lambda message: print(f"demo {message}", file=sys.stderr, flush=True),
            bars=not args.no_progress,
        )
    except (ValueError, FileNotFoundError) as e:
        raise CommandError(str(e)) from None
    codes = " ".join(map(str, result.example_codes))
    print(f"a test image ({result.example_label}) is {len(result.example_codes)} codes: {codes}")
    print(
        f"reconstruction of {result.num_images} held-out test images: PSNR {result.psnr_db:.2f} dB, "
        f"rFD-fmnist {result.rfd:.3f}"
    )
    if result.prefix_psnr_db:
        scores = ", ".join(f"{k}: {v:.2f}" for k, v in result.prefix_psnr_db.items())
        print(f"ordered tokenizer, PSNR (dB) from the first k codes: {scores}")
    print(f"{result.num_samples} generated samples ({args.samples_per_class} per class): gFD-fmnist {result.gfd:.3f}")
    print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in result.seconds.items()))
    more = "; last row: the first column's image from its first k codes" if result.prefix_psnr_db else ""
    print(f"wrote {result.grid} (columns: classes; rows: original, reconstruction, samples{more})")
    return 0
