"""``titok tokenize | detokenize | reconstruct | info``: images <-> codes from the shell."""

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
from titok.data.files import MAX_ASPECT_RATIO, find_images
from titok.io import atomic_write, read_npz

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
    p.add_argument("-o", "--output", required=True, help="the .npz to write: codes (B x N int64), files, model")
    p.add_argument("--batch-size", type=int, default=16)
    _add_workers(p)
    add_common(p)
    add_precision_argument(p)
    p.set_defaults(run=run_tokenize)

    p = sub.add_parser("detokenize", help="codes (.npz) -> images", description="Decode codes into one PNG per row.")
    add_model_argument(p)
    p.add_argument("codes", help="a .npz written by `titok tokenize` (array 'codes', B x N)")
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


@no_grad
def _encode(model, images: torch.Tensor) -> np.ndarray:
    """Codes (VQ) or posterior means (continuous tokenizers) as a numpy array."""
    return _latents(model, images).cpu().numpy()


def _latents(model, images: torch.Tensor) -> torch.Tensor:
    """Codes (VQ) or float32 posterior means (continuous tokenizers), on the model's device."""
    if model.codebook_size is None:
        return model.encode(images.to(model.device)).mean.float()
    return model.tokenize(images)


def run_tokenize(args: argparse.Namespace) -> int:
    check_output_file(args.output, "-o")
    model = _tokenizer(args)
    failures: list[tuple[Path, str]] = []
    paths = _image_paths(args.images, failures)
    total = len(paths) + len(failures)
    rows, done = [], []
    batches = _images.iter_image_batches(paths, model.image_size, args.batch_size, failures, _workers(args, len(paths)))
    with tqdm(total=len(paths), unit="img", desc="tokenize", disable=None) as bar:
        for batch in batches:
            rows.append(_encode(model, batch.images))
            done.extend(batch.paths)
            bar.update(len(done) + len(failures) - bar.n)
    if not rows:
        _report(failures, total)
        raise CommandError("no image could be read; nothing written")
    key = "codes" if model.codebook_size is not None else "latents"
    arrays = {key: np.concatenate(rows), "files": np.array([str(p) for p in done]), "model": np.array(args.model)}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(args.output, write)
    print(f"wrote {key} {arrays[key].shape} of {len(done)} image(s) to {args.output}")
    return _report(failures, total)


def _open_npz(path: str) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path``; ``CommandError`` naming the file and the problem otherwise."""
    try:
        return read_npz(path)
    except (ValueError, FileNotFoundError) as e:
        raise CommandError(str(e)) from None


def _check_codes(path: str, values: np.ndarray, model) -> np.ndarray:
    if values.dtype.kind not in "iu":
        hint = "; continuous latents are stored as 'latents'" if values.dtype.kind == "f" else ""
        raise CommandError(f"{path}: 'codes' are {values.dtype}, but codes are integers{hint}")
    if values.ndim != 2 or values.shape[1] != model.num_tokens:
        raise CommandError(f"{path} holds codes {values.shape}; this model reads {model.num_tokens} tokens per image")
    if values.size and (int(values.min()) < 0 or int(values.max()) >= model.codebook_size):
        bad = int(values.min()) if int(values.min()) < 0 else int(values.max())
        raise CommandError(f"{path}: code {bad} is out of range; this model's codes lie in [0, {model.codebook_size})")
    return values.astype(np.int64)


def _check_latents(path: str, values: np.ndarray, model) -> np.ndarray:
    width = model.config.token_dim
    if values.dtype.kind != "f":
        raise CommandError(f"{path}: 'latents' are {values.dtype}; expected floats")
    if values.ndim != 3 or values.shape[1:] != (model.num_tokens, width):
        raise CommandError(
            f"{path} holds latents {values.shape}; this model reads {model.num_tokens} tokens per image, {width} wide"
        )
    if not np.isfinite(values).all():
        raise CommandError(f"{path}: the latents hold NaN or infinite values")
    return values.astype(np.float32)


def _read_codes(path: str, model) -> tuple[torch.Tensor, list[str]]:
    """Codes (B, N) int64 or latents (B, N, D) float32 from a ``titok tokenize`` output, checked against ``model``,
    and the image names (empty when the file has none)."""
    arrays = _open_npz(path)
    key = "codes" if "codes" in arrays else "latents" if "latents" in arrays else None
    if key is None:
        raise CommandError(f"{path} holds neither 'codes' nor 'latents' (it has {sorted(arrays)})")
    if (key == "codes") != (model.codebook_size is not None):
        kind = "discrete codes" if key == "codes" else "continuous latents"
        raise CommandError(f"{path} holds {kind}, which this tokenizer does not decode")
    check = _check_codes if key == "codes" else _check_latents
    values = check(path, arrays[key], model)
    files = arrays.get("files")
    if files is None:
        return torch.from_numpy(values), []
    if files.ndim != 1 or len(files) != len(values) or files.dtype.kind not in "US":
        raise CommandError(
            f"{path}: 'files' is {files.dtype} {files.shape}; expected one name per row ({len(values)} strings)"
        )
    names = [os.fsdecode(f) if isinstance(f, bytes) else str(f) for f in files.tolist()]
    return torch.from_numpy(values), names


def _decode(model, values: torch.Tensor) -> torch.Tensor:
    try:
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
    values, files = _read_codes(args.codes, model)
    out = Path(args.output)
    for start in tqdm(range(0, len(values), args.batch_size), unit="batch", desc="detokenize", disable=None):
        images = _images.to_uint8(_decode(model, values[start : start + args.batch_size]))
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
    scale = grid_scale(model.image_size, args.scale)
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
        recon = _decode(model, _latents(model, batch.images)).float().cpu()
        scores = psnr(recon, batch.images)
        for path, original, rebuilt, score in zip(batch.paths, batch.images, recon, scores.tolist()):
            pair = torch.stack([original, rebuilt.clamp(0, 1)])
            labels = ["original", f"recon {score:.1f} dB"]
            write_grid(out / f"{len(rows):05d}_{_stem(path)}.png", [("", pair)], labels, scale)
            rows.append((str(path), f"{score:.3f}"))
            scores_db.append(score)
            print(f"{score:7.2f} dB  {path}")
    if not rows:
        _report(failures, total)
        raise CommandError("no image could be read; nothing written")
    _write_csv(out / "psnr.csv", rows)
    print(f"mean PSNR {sum(scores_db) / len(rows):.2f} dB over {len(rows)} image(s); pictures in {out}")
    return _report(failures, total)
