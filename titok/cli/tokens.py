"""``titok tokenize | detokenize | reconstruct``: images <-> codes from the shell."""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from titok.cli.common import (
    EXIT_OK,
    EXIT_SKIPPED,
    CommandError,
    add_common,
    add_model_argument,
    check_output_dir,
    check_output_file,
    grid_scale,
    lazy,
    load_model,
    no_grad,
    torch,
)
from titok.cli.precision import add_precision_argument
from titok.data.codes_file import CodesFile, load_codes, save_codes
from titok.data.files import MAX_ASPECT_RATIO, find_images
from titok.io import atomic_write

_images = lazy("titok.data.images")

PREPROCESS = (
    "Images of any size and mode are converted to RGB, resized so that their shorter side is the model's resolution "
    "(bicubic, antialiased) and center-cropped. Unreadable files (also FIFOs, link loops, folders that cannot be "
    f"listed, images longer than {MAX_ASPECT_RATIO} times their width or the other way round) are reported and "
    "skipped; the exit status is 1 if any was skipped."
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenize", help="images -> codes (.npz)", description=f"Turn images into codes. {PREPROCESS}")
    add_model_argument(p)
    p.add_argument("images", nargs="+", help="image files and folders (searched recursively)")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="the .npz to write: codes (B x N int64), files, model; with --quality also lengths (B), the codes "
        "padded with -1 past each row's length",
    )
    length = p.add_mutually_exclusive_group()
    _add_tokens(length)
    length.add_argument(
        "--quality",
        metavar="SPEC",
        help="per image the fewest tokens whose reconstruction meets SPEC: psnr=DB, ssim=S, lpips=D (LPIPS-VGG by "
        "default, lpips_net=alex), comma-separated, e.g. psnr=30 (an ordered tokenizer; writes ragged rows)",
    )
    p.add_argument(
        "--candidates",
        default="all",
        metavar="all|pow2|LIST",
        help="the lengths --quality tries, smallest first: all (1..N), pow2 (1, 2, 4, ..., N) or a list (1,4,16)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    _add_workers(p)
    add_common(p)
    add_precision_argument(p)
    p.set_defaults(run=run_tokenize)

    p = sub.add_parser("detokenize", help="codes (.npz) -> images", description="Decode codes into one PNG per row.")
    add_model_argument(p)
    p.add_argument(
        "codes", help="a .npz written by `titok tokenize` (array 'codes', B x k for k <= N; ragged rows with 'lengths')"
    )
    p.add_argument("-o", "--output", required=True, help="folder for the PNGs")
    p.add_argument("--batch-size", type=int, default=16)
    add_common(p)
    add_precision_argument(p)
    p.set_defaults(run=run_detokenize)

    p = sub.add_parser(
        "reconstruct",
        help="images -> codes -> images, side by side, with PSNR",
        description="Write original | reconstruction PNGs, labelled with the PSNR and enlarged (nearest neighbour) "
        f"when small, and print each image's PSNR. {PREPROCESS}",
    )
    add_model_argument(p)
    p.add_argument("images", nargs="+", help="image files and folders (searched recursively)")
    p.add_argument("-o", "--output", required=True, help="folder for the side-by-side PNGs and psnr.csv")
    _add_tokens(p)
    p.add_argument(
        "--scale",
        type=int,
        help="enlarge the pictures this many times, nearest neighbour (default: enough for 128 px; 1 for none)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    _add_workers(p)
    add_common(p)
    add_precision_argument(p)
    p.set_defaults(run=run_reconstruct)


def _add_tokens(p) -> None:
    p.add_argument(
        "--tokens",
        type=int,
        metavar="K",
        help="only the first K of the N tokens per image (a prefix: coarse to fine for an ordered tokenizer)",
    )


def _prefix(args: argparse.Namespace, model) -> int | None:
    """``--tokens``, checked against ``model`` (1 <= K <= N, a 1-D TiTok), or None."""
    k = args.tokens
    if k is None:
        return None
    if not _decodes_prefixes(model):
        raise CommandError(f"--tokens needs a 1-D TiTok tokenizer; {args.model} decodes all of its tokens only")
    n = model.num_tokens
    if not 1 <= k <= n:
        raise CommandError(f"--tokens {k} is out of range: {args.model} has {n} tokens per image (give 1 to {n})")
    return k


def _quality(args: argparse.Namespace, model):
    """``--quality`` and ``--candidates``, checked against ``model``, or (None, None)."""
    from titok.models.adaptive import Quality, candidate_lengths

    if args.quality is None:
        if args.candidates != "all":
            raise CommandError(f"--candidates {args.candidates} sets the lengths --quality tries; give --quality too")
        return None, None
    if not _decodes_prefixes(model) or model.codebook_size is None:
        raise CommandError(f"--quality needs a 1-D TiTok tokenizer with codes; {args.model} is not one")
    candidates = args.candidates
    if candidates not in ("all", "pow2"):
        try:
            candidates = [int(c) for c in candidates.split(",")]
        except ValueError:
            raise CommandError(
                f"--candidates must be all, pow2 or comma-separated lengths, got {candidates!r}"
            ) from None
    try:
        candidate_lengths(model.num_tokens, candidates)
        return Quality.parse(args.quality), candidates
    except ValueError as e:
        raise CommandError(f"--quality {args.quality} --candidates {args.candidates}: {e}") from None


def _add_workers(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers",
        type=int,
        help="processes that read and resize images (default: none for a few batches, else up to 4)",
    )


def _workers(args: argparse.Namespace, count: int) -> int:
    if args.workers is None:
        return _images.default_workers(count, args.batch_size)
    if args.workers < 0:
        raise CommandError(f"--workers must be at least 0, got {args.workers}")
    return args.workers


def _tokenizer(args: argparse.Namespace):
    from titok.models import ImageTokenizer

    model = load_model(args.model, args.weights, args.device)
    if not isinstance(model, ImageTokenizer):
        raise CommandError(f"{args.model} is a {type(model).__name__}, not a tokenizer")
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be at least 1, got {args.batch_size}")
    return model


def _image_paths(inputs: list[str], failures: list[tuple[Path, str]]) -> list[Path]:
    """The image files of ``inputs``; what the search skipped (FIFOs, link loops, ...) goes to ``failures``."""
    try:
        paths = find_images(inputs, failures)
    except FileNotFoundError as e:
        raise CommandError(str(e)) from None
    if not paths:
        _report(failures, len(failures))
        raise CommandError(f"no image files found in {' '.join(inputs)}")
    return paths


def _report(failures: list[tuple[Path, str]], total: int) -> int:
    if failures:
        print(f"{len(failures)} of {total} input(s) could not be read and were skipped:", file=sys.stderr)
        for _, reason in failures:
            print(f"  {reason}", file=sys.stderr)
    return EXIT_SKIPPED if failures else EXIT_OK


def _stem(path: str | Path, limit: int = 100) -> str:
    """A file name's stem for an output name: at most ``limit`` bytes, so that a prefix still fits the file system's
    255; bytes that are not UTF-8 are kept as they were (``os.fsdecode``'s surrogate escapes)."""
    return os.fsdecode(os.fsencode(Path(path).stem)[:limit])


def _latents(model, images: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """Codes (VQ) or float32 posterior means (continuous tokenizers), all N or the first ``k``, on the model's
    device."""
    if model.codebook_size is None:
        encoded = model.encode(images.to(model.device)) if k is None else model.encode(images.to(model.device), k)
        return encoded.mean.float()
    return model.tokenize(images) if k is None else model.tokenize(images, num_tokens=k)


@no_grad
def _encode(model, images: torch.Tensor, k: int | None, quality, candidates) -> tuple[np.ndarray, np.ndarray | None]:
    """(codes or latents, lengths or None) of one batch, as numpy arrays; lengths of images that no candidate
    brought to ``quality`` are negated."""
    if quality is None:
        return _latents(model, images, k).cpu().numpy(), None
    try:
        result = model.tokenize(images, quality=quality, candidates=candidates)
    except ValueError as e:
        raise CommandError(f"--quality {quality.describe()}: {e}") from None
    return result.codes.cpu().numpy(), torch.where(result.met, result.lengths, -result.lengths).numpy()


def run_tokenize(args: argparse.Namespace) -> int:
    check_output_file(args.output, "-o")
    model = _tokenizer(args)
    k, (quality, candidates) = _prefix(args, model), _quality(args, model)
    failures: list[tuple[Path, str]] = []
    paths = _image_paths(args.images, failures)
    total = len(paths) + len(failures)
    rows, lengths, done = [], [], []
    batches = _images.iter_image_batches(paths, model.image_size, args.batch_size, failures, _workers(args, len(paths)))
    with tqdm(total=len(paths), unit="img", desc="tokenize", disable=None) as bar:
        for batch in batches:
            values, picked = _encode(model, batch.images, k, quality, candidates)
            rows.append(values)
            lengths.append(picked)
            done.extend(batch.paths)
            bar.update(len(done) + len(failures) - bar.n)
    if not rows:
        _report(failures, total)
        raise CommandError("no image could be read; nothing written")
    signed = np.concatenate(lengths) if quality is not None else None
    ragged = np.abs(signed) if signed is not None else None
    values = _pad_rows(rows) if quality is not None else np.concatenate(rows)
    written = save_codes(args.output, values, lengths=ragged, files=[str(p) for p in done], model=args.model)
    print(f"wrote {written.kind} {written.values.shape} of {len(done)} image(s) to {args.output}")
    if signed is not None:
        _summarize(quality, signed, model)
    return _report(failures, total)


def _summarize(quality, signed: np.ndarray, model) -> None:
    """Print the lengths that ``--quality`` picked (``signed``: negative where the target was not met)."""
    ragged = np.abs(signed)
    bits = math.log2(model.codebook_size)
    print(
        f"{quality.describe()}: {ragged.mean():.2f} of {model.num_tokens} tokens per image on average (min "
        f"{ragged.min()}, max {ragged.max()}; {ragged.mean() * bits / 8:.1f} bytes at {bits:g} bits per token)"
    )
    if (missed := int((signed < 0).sum())) > 0:
        print(f"{missed} image(s) did not meet it at any candidate length; they keep the longest ({ragged.max()})")


def _pad_rows(rows: list[np.ndarray]) -> np.ndarray:
    """Batches of padded codes (B_i, K_i) -> (B, max K_i), padded with -1."""
    width = max(r.shape[1] for r in rows)
    return np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1])), constant_values=-1) for r in rows])


def _read_codes(path: str, model) -> CodesFile:
    """A ``titok tokenize`` output (codes or latents, fixed-length or ragged), checked against ``model``."""
    try:
        data = load_codes(path)
    except (ValueError, FileNotFoundError) as e:
        raise CommandError(str(e)) from None
    if (data.kind == "codes") != (model.codebook_size is not None):
        kind = "discrete codes" if data.kind == "codes" else "continuous latents"
        raise CommandError(f"{path} holds {kind}, which this tokenizer does not decode")
    n, width = model.num_tokens, data.values.shape[1]
    if width > n or (not _decodes_prefixes(model) and (width < n or data.lengths is not None)):
        most = f"at most {n} (a prefix)" if _decodes_prefixes(model) else f"all {n}"
        raise CommandError(
            f"{path} holds {data.kind} {data.values.shape}; this model reads {n} tokens per image ({most})"
        )
    kept = np.arange(width) < data.row_lengths()[:, None]
    if data.kind == "codes" and data.values.size and int(data.values[kept].max()) >= model.codebook_size:
        bad = int(data.values[kept].max())
        raise CommandError(f"{path}: code {bad} is out of range; this model's codes lie in [0, {model.codebook_size})")
    if data.kind == "latents" and data.values.shape[2] != model.config.token_dim:
        raise CommandError(
            f"{path} holds latents {data.values.shape}; this model reads {n} tokens per image, "
            f"{model.config.token_dim} wide"
        )
    return data


def _decodes_prefixes(model) -> bool:
    """Whether ``model`` decodes the first k < N of its tokens (a 1-D TiTok)."""
    return getattr(model.config, "layout", None) == "1d"


def _decode(model, values: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    from titok.models.adaptive import decode_ragged

    try:
        if lengths is not None:
            return decode_ragged(model, values, lengths)
        if values.dtype.is_floating_point:
            with torch.no_grad():
                return model.decode(values.to(model.device))
        return model.detokenize(values)
    except ValueError as e:
        raise CommandError(str(e)) from None


def _name(index: int, files: list[str]) -> str:
    return f"{index:05d}_{_stem(files[index])}.png" if index < len(files) else f"{index:05d}.png"


def run_detokenize(args: argparse.Namespace) -> int:
    check_output_dir(args.output, "-o")
    model = _tokenizer(args)
    data = _read_codes(args.codes, model)
    values, files = torch.from_numpy(data.values), data.files
    lengths = torch.from_numpy(data.lengths) if data.lengths is not None else None
    out = Path(args.output)
    for start in tqdm(range(0, len(values), args.batch_size), unit="batch", desc="detokenize", disable=None):
        part = slice(start, start + args.batch_size)
        images = _images.to_uint8(_decode(model, values[part], lengths[part] if lengths is not None else None))
        for i, image in enumerate(images, start):
            _images.save_png(image, out / _name(i, files))
    print(f"wrote {len(values)} image(s) to {out}")
    return EXIT_OK


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    """``file,psnr_db`` rows, quoted as CSV needs. A file name that is not valid UTF-8 is written as its bytes
    (surrogateescape), so that it names the file on disk exactly; such a CSV is not valid UTF-8 throughout."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([("file", "psnr_db"), *rows])
    atomic_write(path, lambda tmp: Path(tmp).write_text(text.getvalue(), encoding="utf-8", errors="surrogateescape"))


def run_reconstruct(args: argparse.Namespace) -> int:
    from titok.data.labelled import write_grid
    from titok.metrics.image import psnr

    check_output_dir(args.output, "-o")
    model = _tokenizer(args)
    scale, k = grid_scale(model.image_size, args.scale), _prefix(args, model)
    failures: list[tuple[Path, str]] = []
    paths = _image_paths(args.images, failures)
    total = len(paths) + len(failures)
    out = Path(args.output)
    rows: list[tuple[str, str]] = []
    scores_db: list[float] = []
    for batch in tqdm(
        _images.iter_image_batches(paths, model.image_size, args.batch_size, failures, _workers(args, len(paths))),
        total=math.ceil(len(paths) / args.batch_size),
        unit="batch",
        desc="reconstruct",
        disable=None,
    ):
        recon = _decode(model, _latents(model, batch.images, k)).float().cpu()
        scores = psnr(recon, batch.images)
        for path, original, rebuilt, score in zip(batch.paths, batch.images, recon, scores.tolist()):
            pair = torch.stack([original, rebuilt.clamp(0, 1)])
            labels = ["original", f"{k} tokens {score:.1f} dB" if k else f"recon {score:.1f} dB"]
            write_grid(out / f"{len(rows):05d}_{_stem(path)}.png", [("", pair)], labels, scale)
            rows.append((str(path), f"{score:.3f}"))
            scores_db.append(score)
            print(f"{score:7.2f} dB  {path}")
    if not rows:
        _report(failures, total)
        raise CommandError("no image could be read; nothing written")
    _write_csv(out / "psnr.csv", rows)
    used = f" from the first {k} of {model.num_tokens} tokens" if k else ""
    print(f"mean PSNR {sum(scores_db) / len(rows):.2f} dB over {len(rows)} image(s){used}; pictures in {out}")
    return _report(failures, total)
