"""Speed of titok's hot paths in each number format, and each format's ratio to plain fp32.

    python benchmarks/speed.py --device cpu                     # S-128, B-64, L-32 (batch 4) and Fashion-MNIST
    python benchmarks/speed.py --device cpu --quick             # every code path in seconds (tiny models)
    python benchmarks/speed.py --preset l32 b64 s128 --device cuda -o speed.json    # the reference's H100 rows

Rows: encode (images -> codes), decode (codes -> images), generate + decode (the model's sampling settings),
stage-1 training step (proxy-code cross-entropy, AdamW) and generator training step (masking, label smoothing
0.1, AdamW), in images or samples per second. Released presets use random weights (speed does not depend on
them) at batch 4 on CPUs and at the reference's batch sizes on GPUs; ``fmnist`` is the shipped Fashion-MNIST
tokenizer and generator at batch 100, its training steps at the Fashion-MNIST recipes' batch sizes (32 and 64).

Modes: ``fp32`` (TF32 matmuls on GPUs, as the reference's tf32 rows), ``bf16`` and ``fp16`` (autocast), and the
experiments ``fp32+compile`` / ``bf16+compile`` (``torch.compile`` of the models) and ``int8`` (dynamic int8
quantization of the linear layers, inference rows on CPUs). The modes of a row run in alternation, round after
round (so a neighbour's load on a shared machine hits them alike), and each figure is the median of ``--runs``
rounds after ``--warmup``; CUDA runs are timed with CUDA events. ``auto`` is reported as the mode it resolves to.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import titok
from titok.io import atomic_write
from titok.losses.masked import masked_token_loss, random_mask
from titok.models import GeneratorConfig, TiTokConfig, ViTConfig, VQGANConfig, build_model, get_preset
from titok.precision import cpu_flags, cpu_name, resolve

MODES = ("fp32", "bf16", "fp16", "fp32+compile", "bf16+compile", "int8")
ROWS = ("encode", "decode", "generate+decode", "stage1_train", "generator_train")
FLAGS_SHOWN = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "bf16", "sve")


@dataclass(frozen=True)
class Setup:
    tokenizer: TiTokConfig
    generator: GeneratorConfig
    batch: dict[str, int]
    shipped: bool = False  # load the shipped Fashion-MNIST models instead of random weights


def _tiny() -> Setup:
    vit = ViTConfig(width=64, depth=2, num_heads=2)
    vq = VQGANConfig(
        image_size=32, hidden_channels=16, channel_mult=(1, 1, 2), z_channels=16, codebook_size=64, norm_groups=8
    )
    tok = TiTokConfig(
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
    gen = GeneratorConfig(
        codebook_size=128, num_tokens=16, num_classes=10, hidden_size=64, depth=2, num_heads=2, mlp_dim=128
    )
    return Setup(tok, gen, {"encode": 8, "decode": 8, "generate": 8, "stage1": 8, "generator_train": 16})


def setups(device: torch.device) -> dict[str, Setup]:
    def released(tok: str, gen: str, tokens: int | None = None, big: bool = False) -> Setup:
        g = get_preset(gen).config
        g = g.replace(num_tokens=tokens) if tokens else g
        if device.type != "cuda":
            return Setup(get_preset(tok).config, g, dict.fromkeys(("encode", "decode", "generate", "stage1"), 4))
        sizes = {"encode": 32, "decode": 32, "generate": 32} if big else {"encode": 64, "decode": 64, "generate": 125}
        return Setup(get_preset(tok).config, g, {**sizes, "stage1": 32, "generator_train": 256})

    from titok import demo

    fmnist_tok, fmnist_gen = (titok.load(p).config for p in (demo.TOKENIZER, demo.GENERATOR))
    return {
        "l32": released("titok_l32", "generator_titok_l32"),
        "b64": released("titok_b64", "generator_titok_b64"),
        "s128": released("titok_s128", "generator_titok_s128"),
        "l64": released("titok_l64", "generator_titok_l32", tokens=64, big=True),
        "b128": released("titok_b128", "generator_titok_b64", tokens=128, big=True),
        "fmnist": Setup(
            fmnist_tok,
            fmnist_gen,
            {"encode": 100, "decode": 100, "generate": 100, "stage1": 32, "generator_train": 64},
            shipped=True,
        ),
        "tiny": _tiny(),
    }


@dataclass
class Row:
    """A row's work: ``make(mode)`` returns the callable timed for that mode (None: the mode does not apply)."""

    name: str
    items: int
    make: Callable[[str], Callable[[], object] | None]
    training: bool = False  # gradients on (a training step) or off (inference)


def _variant(model: torch.nn.Module, mode: str) -> torch.nn.Module | None:
    if mode.endswith("+compile"):  # a copy whose forward passes are compiled (nn.Module.compile works in place)
        from titok.models import MaskedGenerator

        compiled = copy.deepcopy(model)
        for part in [compiled] if isinstance(model, MaskedGenerator) else compiled.children():
            part.compile()
        return compiled
    if mode == "int8":
        if next(model.parameters()).device.type != "cpu":
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's dynamic quantization is deprecated in favour of torchao
            return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    return model


def inference_rows(setup: Setup, device: torch.device, seed: int) -> list[Row]:
    from titok import demo

    torch.manual_seed(seed)
    if setup.shipped:
        tok, gen = (titok.load(p, device=device).eval() for p in (demo.TOKENIZER, demo.GENERATOR))
    else:
        with device:
            tok, gen = build_model(setup.tokenizer).eval(), build_model(setup.generator).eval()
    b, s = setup.batch, setup.tokenizer.image_size
    images = torch.rand(b["encode"], 3, s, s, device=device)
    codes = torch.randint(0, setup.tokenizer.codebook_size, (b["decode"], setup.tokenizer.num_tokens), device=device)
    labels = torch.arange(b["generate"], device=device) % setup.generator.num_classes
    g = torch.Generator(device).manual_seed(seed)
    variants: dict[str, tuple] = {}

    def models(mode: str) -> tuple:
        key = "compile" if mode.endswith("+compile") else "int8" if mode == "int8" else "eager"
        if key not in variants:
            variants[key] = (_variant(tok, mode), _variant(gen, mode))
        return variants[key]

    def encode(mode):
        t, _ = models(mode)
        return None if t is None else lambda: t.tokenize(images)

    def decode(mode):
        t, _ = models(mode)
        return None if t is None else lambda: t.detokenize(codes)

    def generate(mode):
        t, m = models(mode)
        return None if t is None else lambda: t.detokenize(m.generate(labels, generator=g))

    return [
        Row("encode", b["encode"], encode),
        Row("decode", b["decode"], decode),
        Row("generate+decode", b["generate"], generate),
    ]


def training_rows(setup: Setup, device: torch.device, seed: int) -> list[Row]:
    b, cfg, tcfg = setup.batch, setup.generator, setup.tokenizer
    s, grid = tcfg.image_size, tcfg.grid_size**2
    fused = device.type == "cuda" or None
    g = torch.Generator(device).manual_seed(seed)

    def stage1(mode: str):
        if mode == "int8":
            return None
        torch.manual_seed(seed)
        with device:
            model = build_model(tcfg.replace(head="proxy", pixel_decoder=None)).train()
        run = torch.compile(model) if mode.endswith("+compile") else model
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
        images = torch.rand(b["stage1"], 3, s, s, device=device)
        proxy = torch.randint(0, tcfg.proxy_codebook_size, (b["stage1"], grid), device=device)

        def step() -> None:
            out = run(images)
            loss = F.cross_entropy(out.decoded.float().transpose(1, 2), proxy) + out.quantizer.loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    def generator(mode: str):
        if mode == "int8":
            return None
        torch.manual_seed(seed)
        with device:
            model = build_model(cfg).train()
        run = torch.compile(model) if mode.endswith("+compile") else model
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
        n = b.get("generator_train", b["stage1"])
        codes = torch.randint(0, cfg.codebook_size, (n, cfg.num_tokens), device=device)
        labels = torch.arange(n, device=device) % cfg.num_classes

        def step() -> None:
            mask = random_mask(codes, "arccos", g)
            inputs = torch.cat(
                [(labels + cfg.codebook_size + 1)[:, None], codes.masked_fill(mask, cfg.mask_token_id)], 1
            )
            loss, _ = masked_token_loss(run(inputs), codes, mask)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    n = b.get("generator_train", b["stage1"])
    return [
        Row("stage1_train", b["stage1"], _shared(stage1), True),
        Row("generator_train", n, _shared(generator), True),
    ]


def _shared(make: Callable[[str], Callable | None]) -> Callable[[str], Callable | None]:
    """One model and optimizer for eager modes (fp32, bf16, fp16) and one for compiled ones (less memory)."""
    built: dict[str, Callable | None] = {}

    def get(mode: str):
        key = "compile" if mode.endswith("+compile") else mode if mode == "int8" else "eager"
        if key not in built:
            built[key] = make(mode)
        return built[key]

    return get


def _precision(mode: str, device: torch.device) -> contextlib.AbstractContextManager:
    name = mode.split("+")[0]
    return resolve("fp32" if name == "int8" else name, device).autocast()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_once(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def alternate(works: dict[str, Callable[[], object]], device: torch.device, runs: int, warmup: int) -> dict:
    """Seconds per call of each mode: ``warmup`` calls each, then ``runs`` rounds calling every mode once, the
    order rotating each round; returns ``{mode: [seconds...]}``."""
    modes = list(works)
    for _ in range(warmup):
        for mode in modes:
            works[mode]()
    _sync(device)
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for r in range(runs):
        for mode in modes[r % len(modes) :] + modes[: r % len(modes)]:
            times[mode].append(_time_once(works[mode], device))
    return times


def flops(fn: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def measure_row(row: Row, preset: str, modes: list[str], device: torch.device, args) -> list[dict]:
    works = {}
    for mode in modes:
        fn = row.make(mode)
        if fn is not None:
            works[mode] = lambda fn=fn, mode=mode: _call(fn, mode, device, row.training)
    work = flops(works["fp32"]) if args.flops and "fp32" in works else 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = alternate(works, device, args.runs, args.warmup)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    base = statistics.median(times["fp32"]) if "fp32" in times else None
    results = []
    for mode, seconds in times.items():
        median = statistics.median(seconds)
        results.append(
            {
                "preset": preset,
                "row": row.name,
                "mode": mode,
                "batch": row.items,
                "items_per_s": row.items / median,
                "seconds": median,
                "runs": seconds,
                "speedup_vs_fp32": base / median if base else None,
                "gflop_per_item": work / row.items / 1e9 if work else None,
                "tflop_per_s": work / median / 1e12 if work else None,
                "peak_gib": peak,
            }
        )
        print(_line(results[-1]), flush=True)
    return results


def _call(fn: Callable[[], object], mode: str, device: torch.device, training: bool) -> object:
    with torch.set_grad_enabled(training), _precision(mode, device):
        return fn()


def run(preset: str, device: torch.device, modes: list[str], args, done: Callable[[list[dict]], None]) -> None:
    """Measure ``preset``'s rows; ``done`` receives each row's results as soon as they are measured."""
    setup = setups(device)[preset]
    for rows in (inference_rows, training_rows):
        built = rows(setup, device, seed=0)
        for row in built:
            if args.rows and row.name not in args.rows:
                continue
            done(measure_row(row, preset, modes, device, args))
        del built
        gc.collect()


def _line(r: dict) -> str:
    ratio = f"{r['speedup_vs_fp32']:5.2f}x fp32" if r["speedup_vs_fp32"] else "          "
    work = f"  {r['gflop_per_item']:9.2f} GFLOP/item {r['tflop_per_s']:7.3f} TFLOP/s" if r["gflop_per_item"] else ""
    peak = f"  peak {r['peak_gib']:.1f} GiB" if r["peak_gib"] is not None else ""
    return (
        f"{r['preset']:>6} {r['row']:>16} {r['mode']:>12} batch {r['batch']:>4} {r['items_per_s']:10.2f}/s  {ratio}"
        f"{work}{peak}"
    )


def machine(device: torch.device) -> dict:
    """What the numbers were measured on: device name, CPU flags that matter for bf16, threads, versions."""
    flags = cpu_flags()
    info = {
        "cpu": cpu_name(),
        "cpu_flags": sorted(f for f in FLAGS_SHOWN if flags and f in flags) if flags is not None else "unreadable",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "titok": titok.__version__,
        "auto": str(resolve("auto", device)),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", nargs="+", help="default: s128 b64 l32 fmnist (--quick: tiny)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--modes", nargs="+", choices=MODES, help="default: fp32 bf16 (and fp16 on GPUs)")
    p.add_argument("--compile", action="store_true", help="also fp32+compile and bf16+compile")
    p.add_argument("--int8", action="store_true", help="also int8 dynamic quantization (CPU inference rows)")
    p.add_argument("--rows", nargs="+", choices=ROWS, help="only these rows (default: all)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="tiny models, one run: every code path in seconds")
    p.add_argument(
        "--flops",
        action=argparse.BooleanOptionalAction,
        help="count each row's work once (one more fp32 run) for GFLOP/item and TFLOP/s (default: on GPUs)",
    )
    p.add_argument("-o", "--output", help="also write the results as JSON")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.runs, args.warmup = 1, 1
    if args.flops is None:
        args.flops = device.type == "cuda" and not args.quick
    presets = args.preset or (["tiny"] if args.quick else ["s128", "b64", "l32", "fmnist"])
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    modes = args.modes or (["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"])
    modes += [m for m in ("fp32+compile", "bf16+compile") if args.compile and m not in modes]
    modes += ["int8"] if args.int8 and "int8" not in modes else []
    meta = machine(device)
    print(", ".join(f"{k}: {v}" for k, v in meta.items()))
    results: list[dict] = []

    def done(rows: list[dict]) -> None:  # written after every row: a long run that stops keeps what it measured
        results.extend(rows)
        if args.output:
            report = {**meta, "runs": args.runs, "warmup": args.warmup, "results": results}
            atomic_write(args.output, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"))

    for preset in presets:
        run(preset, device, modes, args, done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
