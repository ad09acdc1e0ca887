"""``titok tokenize | detokenize | reconstruct | info``: images <-> codes from the shell."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from titok.cli import CommandError, add_common, add_model_argument, load_model
from titok.cli.precision import add_precision_argument
from titok.data.images import default_workers, find_images, iter_image_batches, save_png, to_uint8
from titok.io import atomic_write

PREPROCESS = (
    "Images of any size and mode are converted to RGB, resized so that their shorter side is the model's resolution "
    "(bicubic, antialiased) and center-cropped. Unreadable files are reported and skipped; the exit status is 1 if "
    "any was skipped."
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
        description=f"Write original | reconstruction PNGs and print each image's PSNR. {PREPROCESS}",
    )
    add_model_argument(p)
    p.add_argument("images", nargs="+", help="image files and folders (searched recursively)")
    p.add_argument("-o", "--output", required=True, help="folder for the side-by-side PNGs and psnr.csv")
    p.add_argument("--batch-size", type=int, default=16)
    _add_workers(p)
    add_common(p)
    add_precision_argument(p)
    p.set_defaults(run=run_reconstruct)

    p = sub.add_parser("info", help="architecture, parameters, tokens per image, codebook")
    add_model_argument(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run_info)


def _add_workers(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers",
        type=int,
        help="processes that read and resize images (default: none for a few batches, else up to 4)",
    )


def _workers(args: argparse.Namespace, count: int) -> int:
    if args.workers is None:
        return default_workers(count, args.batch_size)
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


def _image_paths(inputs: list[str]) -> list[Path]:
    try:
        paths = find_images(inputs)
    except FileNotFoundError as e:
        raise CommandError(str(e)) from None
    if not paths:
        raise CommandError(f"no image files found in {' '.join(inputs)}")
    return paths


def _report(failures: list[tuple[Path, str]], total: int) -> int:
    if failures:
        print(f"{len(failures)} of {total} file(s) could not be read and were skipped:", file=sys.stderr)
        for _, reason in failures:
            print(f"  {reason}", file=sys.stderr)
    return 1 if failures else 0


@torch.no_grad()
def _encode(model, images: torch.Tensor) -> np.ndarray:
    """Codes (VQ) or posterior means (continuous tokenizers) as a numpy array."""
    if model.codebook_size is None:
        return model.encode(images.to(model.device)).mean.float().cpu().numpy()
    return model.tokenize(images).cpu().numpy()


def run_tokenize(args: argparse.Namespace) -> int:
    model = _tokenizer(args)
    paths = _image_paths(args.images)
    failures: list[tuple[Path, str]] = []
    rows, done = [], []
    batches = iter_image_batches(paths, model.image_size, args.batch_size, failures, _workers(args, len(paths)))
    with tqdm(total=len(paths), unit="img", desc="tokenize", disable=None) as bar:
        for batch in batches:
            rows.append(_encode(model, batch.images))
            done.extend(batch.paths)
            bar.update(len(done) + len(failures) - bar.n)
    if not rows:
        _report(failures, len(paths))
        raise CommandError("no image could be read; nothing written")
    key = "codes" if model.codebook_size is not None else "latents"
    arrays = {key: np.concatenate(rows), "files": np.array([str(p) for p in done]), "model": np.array(args.model)}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(args.output, write)
    print(f"wrote {key} {arrays[key].shape} of {len(done)} image(s) to {args.output}")
    return _report(failures, len(paths))


def _read_codes(path: str, model) -> tuple[torch.Tensor, list[str]]:
    try:
        with np.load(path) as data:
            key = "codes" if "codes" in data else "latents" if "latents" in data else None
            if key is None:
                raise CommandError(f"{path} holds neither 'codes' nor 'latents' (it has {sorted(data.files)})")
            values = torch.from_numpy(data[key])
            files = [str(f) for f in data["files"]] if "files" in data else []
    except (OSError, ValueError) as e:
        raise CommandError(f"cannot read {path}: {e}") from None
    if (key == "codes") != (model.codebook_size is not None):
        kind = "discrete codes" if key == "codes" else "continuous latents"
        raise CommandError(f"{path} holds {kind}, which this tokenizer does not decode")
    if values.ndim < 2 or values.shape[1] != model.num_tokens:
        raise CommandError(f"{path} holds {tuple(values.shape)}; this model reads {model.num_tokens} tokens per image")
    return values, files


def _decode(model, values: torch.Tensor) -> torch.Tensor:
    try:
        if values.dtype.is_floating_point:
            with torch.no_grad():
                return model.decode(values.to(model.device))
        return model.detokenize(values)
    except ValueError as e:
        raise CommandError(str(e)) from None


def _name(index: int, files: list[str]) -> str:
    return f"{index:05d}_{Path(files[index]).stem}.png" if index < len(files) else f"{index:05d}.png"


def run_detokenize(args: argparse.Namespace) -> int:
    model = _tokenizer(args)
    values, files = _read_codes(args.codes, model)
    out = Path(args.output)
    for start in tqdm(range(0, len(values), args.batch_size), unit="batch", desc="detokenize", disable=None):
        images = to_uint8(_decode(model, values[start : start + args.batch_size]))
        for i, image in enumerate(images, start):
            save_png(image, out / _name(i, files))
    print(f"wrote {len(values)} image(s) to {out}")
    return 0


def run_reconstruct(args: argparse.Namespace) -> int:
    from titok.metrics.image import psnr

    model = _tokenizer(args)
    paths = _image_paths(args.images)
    out = Path(args.output)
    failures: list[tuple[Path, str]] = []
    lines, index = ["file,psnr_db"], 0
    for batch in tqdm(
        iter_image_batches(paths, model.image_size, args.batch_size, failures, _workers(args, len(paths))),
        total=math.ceil(len(paths) / args.batch_size),
        unit="batch",
        desc="reconstruct",
        disable=None,
    ):
        recon = _decode(model, torch.from_numpy(_encode(model, batch.images))).float().cpu()
        scores = psnr(recon, batch.images)
        side_by_side = to_uint8(torch.cat([batch.images, recon], dim=3))
        for path, image, score in zip(batch.paths, side_by_side, scores.tolist()):
            save_png(image, out / f"{index:05d}_{path.stem}.png")
            lines.append(f"{path},{score:.3f}")
            print(f"{score:7.2f} dB  {path}")
            index += 1
    if index:
        atomic_write(out / "psnr.csv", lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
        mean = sum(float(line.rsplit(",", 1)[1]) for line in lines[1:]) / index
        print(f"mean PSNR {mean:.2f} dB over {index} image(s); pictures in {out}")
    return _report(failures, len(paths))


def describe(model) -> dict:
    """A summary of a model's architecture, as printed by ``titok info``."""
    from titok.models import MaskedGenerator, TiTok

    cfg = model.config
    info: dict = {"class": type(model).__name__, "parameters": model.num_parameters()}
    if isinstance(model, TiTok):
        info.update(
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            tokens_per_image=cfg.num_tokens,
            encoder=f"ViT width {cfg.encoder.width}, {cfg.encoder.depth} layers, {cfg.encoder.num_heads} heads",
            decoder=f"ViT width {cfg.decoder.width}, {cfg.decoder.depth} layers, {cfg.decoder.num_heads} heads",
            head=cfg.head,
            encoder_parameters=sum(p.numel() for p in model.encoder.parameters()),
            decoder_parameters=sum(p.numel() for p in model.decoder.parameters())
            + sum(p.numel() for p in model.head.parameters()),
        )
        if cfg.quantizer == "vq":
            info["codebook"] = f"{cfg.codebook_size} x {cfg.token_dim}" + (", l2-normalised" if cfg.l2_norm else "")
            info["bits_per_image"] = cfg.num_tokens * math.log2(cfg.codebook_size)
        else:
            info["latent"] = f"continuous (VAE), {cfg.token_dim} channels per token"
    elif isinstance(model, MaskedGenerator):
        info.update(
            arch=cfg.arch,
            hidden_size=cfg.hidden_size,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            tokens=cfg.num_tokens,
            codebook_size=cfg.codebook_size,
            num_classes=cfg.num_classes,
            sampling=cfg.sampling.to_dict(),
        )
    else:
        info.update(
            image_size=cfg.image_size,
            tokens_per_image=cfg.num_tokens,
            codebook=f"{cfg.codebook_size} x {cfg.z_channels}",
            downsampling=cfg.downsample_factor,
        )
    return info


def run_info(args: argparse.Namespace) -> int:
    from titok.models import PRESETS, build_model

    if args.weights is None and args.model in PRESETS:
        with torch.device("meta"):  # the architecture alone: nothing to download
            model = build_model(PRESETS[args.model].config)
        note = f"preset {args.model}: {PRESETS[args.model].description} (architecture only, no weights loaded)"
    else:
        model = load_model(args.model, args.weights, torch.device("cpu"))
        note = str(args.model)
    info = describe(model)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(note)
    for key, value in info.items():
        if isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:,}"
        print(f"  {key.replace('_', ' '):20s} {value}")
    return 0
