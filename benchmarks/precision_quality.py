"""What bf16 changes in a tokenizer's codes and reconstructions, and in a generator's samples, against fp32.

    python benchmarks/precision_quality.py                      # the shipped Fashion-MNIST tokenizers, 1,000 images
    python benchmarks/precision_quality.py RUN/final OTHER/final --images 2000
    python benchmarks/precision_quality.py --preset s128 b64 l32 --images 16    # released architectures, random weights
    python benchmarks/precision_quality.py --samples 2000 --seeds 0 1 2        # also the shipped generator's gFD
    python benchmarks/precision_quality.py --quick              # a tiny random tokenizer: every code path in seconds

Per tokenizer, on the same images encoded once in fp32 and once under bf16 autocast (each format's codes decoded
in that format, as ``titok reconstruct --precision`` does):

- ``agree``: the share of code positions where bf16 picks the same code as fp32 (continuous tokenizers have none:
  their posterior mean is compared and decoded);
- ``near_ties``: (vector quantizers) the share of positions whose second-nearest code lies within 1% of the nearest
  one's distance, measured on the fp32 latents: the positions that a small change of the latent can flip;
- ``drift``: the median relative change bf16 makes to a latent, ``|z_bf16 - z_fp32| / |z_fp32|``;
- ``psnr_fp32`` / ``psnr_bf16``: mean reconstruction PSNR in dB.

With ``--samples N``, a Fashion-MNIST generator (default: the shipped one, decoded by the shipped tokenizer) draws
N class-balanced samples per seed in each format, scored by gFD-fmnist against the test split.

The images are the first ``--images`` Fashion-MNIST test images (Debian's ``dataset-fashion-mnist``, else the ones
titok ships), resized to each model's size, or ``--data SPEC`` (any data source ``titok eval`` reads). bf16 is
measured whatever the CPU; where it is emulated (``auto`` says fp32) it is slow but computes the same.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

import titok
from titok.io import atomic_write
from titok.precision import cpu_flags, cpu_name, resolve
from titok.quantizers import VectorQuantizer

NEAR_TIE = 0.01  # a position is a near tie when its second-nearest code is within 1% of the nearest one's distance


def load_images(count: int, size: int, data: str | None) -> torch.Tensor:
    """(count, 3, size, size) float images in [0, 1]: ``data``'s first ``count`` or the held-out Fashion-MNIST ones."""
    from titok.data.transforms import Preprocess

    if data is None:
        from titok import demo

        raw, _, _ = demo.held_out_images(count)
        if len(raw) < count:
            print(f"note: only {len(raw)} held-out images are available here", file=sys.stderr)
        return torch.stack([Preprocess(size)(x[None]) for x in raw])
    from titok.eval.data import collate, open_source

    dataset, _ = open_source(data, size, limit=count)
    batch = collate([dataset[i] for i in range(len(dataset))])
    for error in batch.errors:
        print(f"skipped: {error}", file=sys.stderr)
    if not len(batch.images):
        raise SystemExit(f"no readable images in {data!r}")
    return batch.images


def codebook_name(tok) -> str:
    """``1024x16`` (``l2`` when normalised), ``FSQ 8.8.8``, ``VAE 16`` (continuous), or the quantizer's class."""
    q = tok.quantizer
    if q is None:
        return f"VAE {tok.config.token_dim}"
    if isinstance(q, VectorQuantizer):
        return f"{q.codebook_size}x{q.dim}{' l2' if not isinstance(q.normalize, torch.nn.Identity) else ''}"
    if hasattr(q, "levels"):
        return "FSQ " + ".".join(map(str, q.levels))
    return type(q).__name__


def _pass(
    tok, images: torch.Tensor, precision: str, batch: int
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Codes (B, N) (None for a continuous tokenizer), latents (B, N, D) float32 (before quantization; a VAE's
    posterior mean) and reconstructions, in ``precision``."""
    codes, latents, recon = [], [], []
    with torch.inference_mode(), titok.autocast(precision, "cpu"):
        for x in images.split(batch):
            if tok.quantizer is None:  # continuous tokens: the posterior mean, decoded
                z = tok.encode(x).mode()
                latents.append(z.float())
                recon.append(tok.decode(z).float().clamp(0, 1))
                continue
            q = tok.quantize(tok.encode(x))
            codes.append(q.codes)
            latents.append(q.latents.float())
            recon.append(tok.detokenize(q.codes).float().clamp(0, 1))
    return (torch.cat(codes) if codes else None), torch.cat(latents), torch.cat(recon)


def near_ties(quantizer: VectorQuantizer, latents: torch.Tensor) -> float:
    """The share of positions whose second-nearest code is within :data:`NEAR_TIE` of the nearest one's distance."""
    with torch.inference_mode():
        z = quantizer.normalize(latents.reshape(-1, latents.shape[-1]).double())
        two = torch.cdist(z, quantizer.codebook().double()).topk(2, largest=False).values
        return float((two[:, 1] <= two[:, 0] * (1 + NEAR_TIE)).double().mean())


def compare_tokenizer(name: str, tok, images: torch.Tensor, batch: int) -> dict:
    from titok.metrics.image import psnr

    tok.eval()
    codes32, z32, recon32 = _pass(tok, images, "fp32", batch)
    codes16, z16, recon16 = _pass(tok, images, "bf16", batch)
    drift = ((z16 - z32).norm(dim=-1) / z32.norm(dim=-1).clamp_min(1e-12)).flatten()
    row = {
        "model": name,
        "codebook": codebook_name(tok),
        "images": len(images),
        "agree": None if codes32 is None else float((codes16 == codes32).double().mean()),
        "near_ties": near_ties(tok.quantizer, z32) if isinstance(tok.quantizer, VectorQuantizer) else None,
        "drift": float(drift.median()),
        "psnr_fp32": float(psnr(recon32, images).mean()),
        "psnr_bf16": float(psnr(recon16, images).mean()),
    }
    print(_tokenizer_line(row), flush=True)
    return row


def _tokenizer_line(r: dict) -> str:
    delta = r["psnr_bf16"] - r["psnr_fp32"]
    ties = "-" if r["near_ties"] is None else f"{100 * r['near_ties']:.2f}%"
    agree = "-" if r["agree"] is None else f"{100 * r['agree']:.2f}%"
    return (
        f"{r['model']:<28} {r['codebook']:>12} {r['images']:>6} {agree:>9} {ties:>9} "
        f"{100 * r['drift']:>7.3f}% {r['psnr_fp32']:>9.3f} {r['psnr_bf16']:>9.3f} {delta:>+7.3f}"
    )


def compare_generator(tok, gen, samples: int, seeds: list[int], batch: int) -> list[dict]:
    """gFD-fmnist of ``samples`` class-balanced samples per seed, in fp32 and in bf16."""
    from titok import demo
    from titok.metrics.extractors import fmnist
    from titok.metrics.fid import Statistics, frechet_distance

    if tok.image_size != 32 or gen.config.num_classes != 10:
        raise SystemExit("--samples scores Fashion-MNIST generators (10 classes, 32x32): gFD-fmnist needs them")
    tok.eval()
    gen.eval()
    extractor, reference = fmnist(), Statistics.load(demo.TEST_STATS)
    labels = torch.arange(samples) % 10
    rows = []
    for seed in seeds:
        row = {"seed": seed, "samples": samples}
        for precision in ("fp32", "bf16"):
            rng = torch.Generator().manual_seed(seed)
            with torch.inference_mode(), titok.autocast(precision, "cpu"):
                drawn = torch.cat([tok.detokenize(gen.generate(c, generator=rng)).float() for c in labels.split(batch)])
            stats = demo._features(extractor, drawn.clamp(0, 1))
            row[f"gfd_{precision}"] = frechet_distance(*demo._moments(stats), reference.mu, reference.sigma)
        print(f"seed {seed}: gFD-fmnist of {samples} samples  fp32 {row['gfd_fp32']:.3f}  bf16 {row['gfd_bf16']:.3f}")
        rows.append(row)
    return rows


def _short_name(model: str) -> str:
    """A run's ``.../group/run/final`` as ``group/run``; a folder or Hub id by its last part."""
    parts = Path(model).parts
    if len(parts) > 1 and parts[-1] == "final":
        return "/".join(parts[-3:-1])
    return parts[-1] if parts else model


def _tiny_tokenizer(quantizer: str = "vq"):
    from titok.models import TiTokConfig, ViTConfig, build_model

    vit = ViTConfig(width=64, depth=2, num_heads=2)
    config = TiTokConfig(
        image_size=32,
        patch_size=8,
        num_tokens=8,
        encoder=vit,
        decoder=vit,
        codebook_size=64,
        token_dim=8,
        quantizer=quantizer,
    )
    return build_model(config)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", help="tokenizers (folders or Hub ids; default: the shipped Fashion-MNIST ones)")
    p.add_argument("--preset", nargs="+", default=[], help="also these released architectures, random weights")
    p.add_argument("--images", type=int, default=1000, help="images per tokenizer (default: 1000)")
    p.add_argument("--data", help="a data source to read the images from (default: the Fashion-MNIST test images)")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--samples", type=int, default=0, help="gFD-fmnist of this many generator samples per seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--generator", help="the Fashion-MNIST generator (default: the shipped one)")
    p.add_argument("--generator-tokenizer", help="the tokenizer that decodes its codes (default: the shipped one)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights of --preset architectures")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="tiny random tokenizers (VQ, VAE) on 8 images, 20 samples")
    p.add_argument("-o", "--output", help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from titok import demo
    from titok.models import build_model, get_preset

    tokenizers: list[tuple[str, object]] = []
    if args.quick:
        torch.manual_seed(args.seed)
        tokenizers.append(("tiny (random)", _tiny_tokenizer()))
        tokenizers.append(("tiny VAE (random)", _tiny_tokenizer(quantizer="vae")))
        args.images, args.samples = min(args.images, 8), min(args.samples, 20) if args.samples else 0
    elif not args.models and not args.preset:
        args.models = [str(demo.TOKENIZER), str(demo.ORDERED_TOKENIZER)]
    tokenizers += [(_short_name(m), m) for m in args.models]
    for name in args.preset:
        torch.manual_seed(args.seed)
        tokenizers.append((f"{name} (random)", build_model(get_preset(f"titok_{name}").config)))

    flags = cpu_flags() or set()
    report = {
        "cpu": cpu_name(),
        "cpu_flags": sorted(f for f in ("avx512_bf16", "amx_bf16", "bf16") if f in flags),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "auto": str(resolve("auto", "cpu")),
        "tokenizers": [],
        "generator": [],
    }
    print(f"# {report['cpu']} | flags {report['cpu_flags'] or 'none for bf16'} | {report['threads']} threads")
    print(f"# auto: {report['auto']}")
    print(
        f"{'tokenizer':<28} {'codebook':>12} {'images':>6} {'agree':>9} {'near_ties':>9} {'drift':>8} "
        f"{'psnr_fp32':>9} {'psnr_bf16':>9} {'delta':>7}"
    )
    images: dict[int, torch.Tensor] = {}
    for name, model in tokenizers:
        tok = titok.load(model) if isinstance(model, str) else model
        size = tok.image_size
        if size not in images:
            images[size] = load_images(args.images, size, args.data)
        report["tokenizers"].append(compare_tokenizer(name, tok, images[size], args.batch))
    if args.samples:
        if args.quick:
            gen = build_model(_tiny_generator_config())
            tok = tokenizers[0][1]
        else:
            tok = titok.load(args.generator_tokenizer or demo.TOKENIZER)
            gen = titok.load(args.generator or demo.GENERATOR)
        report["generator"] = compare_generator(tok, gen, args.samples, args.seeds, args.batch)
    if args.output:
        atomic_write(args.output, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"))
    if len(report["generator"]) > 1:
        for precision in ("fp32", "bf16"):
            values = [r[f"gfd_{precision}"] for r in report["generator"]]
            print(f"gFD-fmnist {precision}: mean {statistics.mean(values):.3f}, spread {max(values) - min(values):.3f}")
    return 0


def _tiny_generator_config():
    from titok.models import GeneratorConfig

    return GeneratorConfig(
        num_tokens=8, codebook_size=64, num_classes=10, hidden_size=64, depth=2, num_heads=2, mlp_dim=128
    )


if __name__ == "__main__":
    sys.exit(main())
