"""Speed of titok's hot paths, row by row as in the reference's H100 table (shared/performance/reference-h100.md).

    python benchmarks/speed.py --preset l32 b64 s128 --device cuda -o speed.json
    python benchmarks/speed.py --device cpu --preset tiny          # the same code paths in seconds

Rows: encode (image -> codes), decode (codes -> image), generate + decode (the released sampling settings),
stage-1 training step (proxy-code cross-entropy, AdamW) and generator training step (masking, label smoothing 0.1,
AdamW), each in images or samples per second; median of ``--runs`` timed runs after ``--warmup``, timed with CUDA
events on GPUs; in tf32 (float32 with TF32 matmuls) and bf16 (autocast); with peak GPU memory and the achieved
TFLOP/s (work counted once with torch.utils.flop_counter). Weights are random: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import titok
from titok.losses.masked import masked_token_loss, random_mask
from titok.models import GeneratorConfig, TiTokConfig, ViTConfig, VQGANConfig, build_model, get_preset


@dataclass(frozen=True)
class Setup:
    tokenizer: TiTokConfig
    generator: GeneratorConfig
    batch: dict[str, int]


def _setups() -> dict[str, Setup]:
    def released(tok: str, gen: str, tokens: int | None = None, big: bool = False) -> Setup:
        g = get_preset(gen).config
        g = g.replace(num_tokens=tokens) if tokens else g
        sizes = {"encode": 32, "decode": 32, "generate": 32} if big else {"encode": 64, "decode": 64, "generate": 125}
        return Setup(get_preset(tok).config, g, {**sizes, "stage1": 32, "generator_train": 256})

    vit = ViTConfig(width=64, depth=2, num_heads=2)
    vq = VQGANConfig(
        image_size=32, hidden_channels=16, channel_mult=(1, 1, 2), z_channels=16, codebook_size=64, norm_groups=8
    )
    tiny_tok = TiTokConfig(
        image_size=32,
        patch_size=4,
        num_tokens=16,
        encoder=vit,
        decoder=vit,
        codebook_size=128,
        head="vqgan",
        proxy_codebook_size=64,
        pixel_decoder=vq,
        legacy_token_order=True,
    )
    tiny_gen = GeneratorConfig(
        codebook_size=128, num_tokens=16, num_classes=10, hidden_size=64, depth=2, num_heads=2, mlp_dim=128
    )
    return {
        "l32": released("titok_l32", "generator_titok_l32"),
        "b64": released("titok_b64", "generator_titok_b64"),
        "s128": released("titok_s128", "generator_titok_s128"),
        "l64": released("titok_l64", "generator_titok_l32", tokens=64, big=True),
        "b128": released("titok_b128", "generator_titok_b64", tokens=128, big=True),
        "tiny": Setup(
            tiny_tok, tiny_gen, {"encode": 8, "decode": 8, "generate": 8, "stage1": 8, "generator_train": 16}
        ),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, runs: int, warmup: int) -> float:
    """Median seconds of ``runs`` calls after ``warmup`` calls (CUDA events on GPUs, wall clock elsewhere)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1000)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def flops(fn: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _rows(setup: Setup, device: torch.device, seed: int) -> dict[str, tuple[int, Callable[[], object]]]:
    """name -> (items per call, the work of one call)."""
    torch.manual_seed(seed)
    with device:
        tok = build_model(setup.tokenizer).eval()
        gen = build_model(setup.generator).eval()
        stage1 = build_model(setup.tokenizer.replace(head="proxy", pixel_decoder=None)).train()
        trainee = build_model(setup.generator).train()
    b, s = setup.batch, setup.tokenizer.image_size
    images = torch.rand(b["encode"], 3, s, s, device=device)
    codes = torch.randint(0, setup.tokenizer.codebook_size, (b["decode"], setup.tokenizer.num_tokens), device=device)
    labels = torch.arange(b["generate"], device=device) % setup.generator.num_classes
    sampling = setup.generator.sampling.to_dict()
    g = torch.Generator(device).manual_seed(seed)
    opt1 = torch.optim.AdamW(stage1.parameters(), lr=1e-4, fused=device.type == "cuda" or None)
    opt2 = torch.optim.AdamW(trainee.parameters(), lr=1e-4, fused=device.type == "cuda" or None)
    train_images = torch.rand(b["stage1"], 3, s, s, device=device)
    grid = setup.tokenizer.grid_size**2
    proxy = torch.randint(0, setup.tokenizer.proxy_codebook_size, (b["stage1"], grid), device=device)
    gen_codes = torch.randint(
        0, setup.generator.codebook_size, (b["generator_train"], setup.generator.num_tokens), device=device
    )
    gen_labels = torch.arange(b["generator_train"], device=device) % setup.generator.num_classes

    def stage1_step() -> None:
        out = stage1(train_images)
        loss = F.cross_entropy(out.decoded.float().transpose(1, 2), proxy) + out.quantizer.loss
        loss.backward()
        opt1.step()
        opt1.zero_grad(set_to_none=True)

    def generator_step() -> None:
        cfg = setup.generator
        mask = random_mask(gen_codes, "arccos", g)
        inputs = torch.cat(
            [(gen_labels + cfg.codebook_size + 1)[:, None], gen_codes.masked_fill(mask, cfg.mask_token_id)], 1
        )
        loss, _ = masked_token_loss(trainee(inputs), gen_codes, mask)
        loss.backward()
        opt2.step()
        opt2.zero_grad(set_to_none=True)

    return {
        "encode": (b["encode"], lambda: tok.tokenize(images)),
        "decode": (b["decode"], lambda: tok.detokenize(codes)),
        "generate+decode": (b["generate"], lambda: tok.detokenize(gen.generate(labels, generator=g, **sampling))),
        "stage1_train": (b["stage1"], stage1_step),
        "generator_train": (b["generator_train"], generator_step),
    }


def run(preset: str, device: torch.device, precisions: list[str], runs: int, warmup: int) -> list[dict]:
    setup = _setups()[preset]
    rows = _rows(setup, device, seed=0)
    results = []
    for name, (items, fn) in rows.items():
        work = flops(fn)
        for precision in precisions:
            autocast = (
                torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
            )

            def call(fn=fn, autocast=autocast):
                with autocast:
                    return fn()

            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds = timed(call, device, runs, warmup)
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
            results.append(
                {
                    "preset": preset,
                    "row": name,
                    "precision": precision,
                    "batch": items,
                    "items_per_s": items / seconds,
                    "seconds": seconds,
                    "gflop_per_item": work / items / 1e9,
                    "tflop_per_s": work / seconds / 1e12,
                    "peak_gib": peak,
                }
            )
            print(_line(results[-1]), flush=True)
    return results


def _line(r: dict) -> str:
    peak = f"{r['peak_gib']:6.1f} GiB" if r["peak_gib"] is not None else "      -"
    return (
        f"{r['preset']:>5} {r['row']:>16} {r['precision']:>5} batch {r['batch']:>4}  {r['items_per_s']:10.1f}/s  "
        f"{r['gflop_per_item']:8.1f} GFLOP/item {r['tflop_per_s']:8.2f} TFLOP/s  peak {peak}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", nargs="+", default=["l32", "b64", "s128"], choices=list(_setups()))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--precision",
        nargs="+",
        default=None,
        choices=["tf32", "bf16"],
        help="default: tf32 and bf16 on GPUs, tf32 (plain fp32) on CPUs",
    )
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("-o", "--output", help="also write the results as JSON")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    precisions = args.precision or (["tf32", "bf16"] if device.type == "cuda" else ["tf32"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"titok {titok.__version__}, torch {torch.__version__}, {name}")
    results = [r for preset in args.preset for r in run(preset, device, precisions, args.runs, args.warmup)]
    if args.output:
        meta = {"device": name, "torch": torch.__version__, "titok": titok.__version__, "runs": args.runs}
        with open(args.output, "w") as f:
            json.dump({**meta, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
