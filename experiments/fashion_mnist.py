"""The paper's findings at small scale, on Fashion-MNIST: train, evaluate, report.

    python experiments/fashion_mnist.py train      # the sweep's tokenizers (runs/fmnist/exp/NAME), skipping done ones
    python experiments/fashion_mnist.py evaluate   # reconstruction and generation metrics -> experiments/results/
    python experiments/fashion_mnist.py report     # docs/fashion-mnist.md and its plots, from the results alone

Every model is trained with the project's own recipes (``titok train tokenizer``) on the train split; every score
comes from ``titok eval`` on the test split, with titok's Fashion-MNIST feature classifier (FD-fmnist). The shipped
tokenizer and generator (``titok/assets/fashion_mnist``) are evaluated as they are; their training commands are in
``docs/fashion-mnist.md``. ``report`` needs matplotlib (``pip install 'titok-tokenizer[train]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules, however this file is loaded

from fmnist_report import report
from fmnist_runs import (
    ASSETS,
    BASE,
    DOC,
    GEN_SAMPLES,
    GROUPS,
    HELDOUT,
    NO_REMEDY,
    RECON_IMAGES,
    REMEDIES,
    RESULTS,
    ROOT,
    RUNS,
    SCHEDULES,
    SEED,
    SHIPPED_SAMPLES,
    STEPS,
    Run,
    _describe,
    heldout_curve,
)


def _env(threads: int, device: str = "cpu") -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if device == "cpu":
        env.update(ACCELERATE_USE_CPU="1", CUDA_VISIBLE_DEVICES="")
    return env


def _titok(*args: object, threads: int) -> None:
    cmd = [sys.executable, "-m", "titok.cli", *map(str, args)]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env=_env(threads))


def train(args: argparse.Namespace) -> None:
    """Train the group's runs that are not finished (resuming any that were cut short), ``args.jobs`` at a time."""
    todo = []
    for run in GROUPS[args.group]:
        out = Path(args.runs) / run.name
        if args.only and run.name not in args.only:
            continue
        if (out / "final" / "config.json").exists():
            print(f"{run.name}: done ({out / 'final'})")
            continue
        resume = ["--resume"] if (out / "checkpoints").exists() else []
        todo.append((run, [sys.executable, "-m", "titok.cli", "train", "tokenizer", BASE, *resume, *run.args(out)]))
    env = _env(args.threads, args.device)
    Path(args.runs).mkdir(parents=True, exist_ok=True)
    running: list[tuple[Run, subprocess.Popen, float]] = []
    failed = []
    while todo or running:
        while todo and len(running) < args.jobs:
            run, cmd = todo.pop(0)
            print("$", " ".join(map(str, cmd[2:])), flush=True)
            log = open(Path(args.runs) / f"{run.name}.log", "ab")  # noqa: SIM115 (closed when the process ends)
            running.append(
                (
                    run,
                    subprocess.Popen(list(map(str, cmd)), cwd=ROOT, env=env, stdout=log, stderr=log),
                    time.perf_counter(),
                )
            )
        time.sleep(1)
        for item in [r for r in running if r[1].poll() is not None]:
            running.remove(item)
            run, proc, start = item
            if proc.returncode:
                failed.append(run.name)
                print(f"{run.name}: failed (exit {proc.returncode}), see {Path(args.runs) / run.name}.log", flush=True)
            else:
                _merge({"train_seconds": {run.name: round(time.perf_counter() - start, 1)}})
                print(f"{run.name}: done in {time.perf_counter() - start:.0f} s", flush=True)
    if failed:
        raise SystemExit(f"failed runs: {', '.join(failed)}")


def _merge(update: dict, replace: tuple[str, ...] = ()) -> dict:
    """Write ``update`` into the results file: a dict value updates the entry of its key (the keys in ``replace``
    are replaced whole)."""
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for key, value in update.items():
        if isinstance(value, dict) and key not in replace:
            results.setdefault(key, {}).update(value)
        else:
            results[key] = value
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    tmp.replace(RESULTS)
    return results


# ---------------------------------------------------------------------------------------------------- evaluate


def _metrics(path: Path) -> dict[str, float | None]:
    report = json.loads(path.read_text())
    return {m["name"]: m["value"] for m in report["metrics"]}


def _eval_recon(model: Path, out: Path, num: int | None, threads: int) -> dict:
    """``titok eval recon`` of ``model`` on the test split (the first ``num`` images, or all), cached in ``out``."""
    if not out.exists():
        limit = ["--num", num] if num else []
        _titok(
            "eval",
            "recon",
            model,
            "fashion-mnist:test",
            *limit,
            "--extractor",
            "fmnist",
            "--lpips",
            "none",
            "--no-progress",
            "-o",
            out,
            threads=threads,
        )
    return _metrics(out)


def _recon(model: Path, out: Path, num: int | None, threads: int) -> dict:
    import titok

    m, cfg = _eval_recon(model, out, num, threads), titok.load(model).config
    params = _params(model)
    return {
        "rfd": m["rFD-fmnist"],
        "psnr": m["PSNR"],
        "ssim": m["SSIM"],
        "usage": m["codebook usage"],
        "params": params,
        "num_tokens": cfg.num_tokens,
        "codebook_size": cfg.codebook_size,
        "layout": cfg.layout,
        "patch_size": cfg.patch_size,
        "width": cfg.encoder.width,
        "depth": cfg.encoder.depth,
        "images": json.loads(out.read_text())["num_images"],
    }


def _params(model: Path) -> int:
    import titok

    return sum(p.numel() for p in titok.load(model).parameters())


def _remedy(run: Path) -> str:
    """The codebook remedies a run trained with, from its recipe.json (e.g. ``clustering``), or ``none``."""
    cb = json.loads((run / "recipe.json").read_text()).get("codebook", {})
    on = [k for k in ("clustering", "kmeans_init") if cb.get(k)]
    on += [f"restart_after={cb['restart_after']}"] if cb.get("restart_after") else []
    return ", ".join(on) or "none"


def _steps_and_images(run: Path) -> tuple[int, int]:
    recipe = json.loads((run / "recipe.json").read_text())["train"]
    steps = recipe["max_steps"]
    return steps, steps * recipe["batch_size"] * recipe.get("grad_accum", 1)


def _teacher_codebook(run: Path, threads: int) -> dict:
    """The teacher's codebook on the whole test split (usage; rFD-fmnist and PSNR of the VQGAN itself) and the
    codebook remedies it trained with."""
    import titok

    m = _eval_recon(run / "final", run / "eval_whole.json", None, threads)
    return {"usage": m["codebook usage"], "rfd": m["rFD-fmnist"], "psnr": m["PSNR"], "remedies": _remedy(run),
            "codebook_size": titok.load(run / "final").config.codebook_size}  # fmt: skip


def evaluate(args: argparse.Namespace) -> None:
    runs, fm = Path(args.runs), Path(args.runs).parent
    parts = set(args.only or ["sweep", "remedies", "stages", "shipped", "gen", "speed"])
    if "sweep" in parts:
        recon = {}
        for run in RUNS:
            final = runs / run.name / "final"
            if final.exists():
                recon[run.name] = _recon(final, runs / run.name / "eval.json", RECON_IMAGES, args.threads)
                recon[run.name]["steps"] = _steps_and_images(runs / run.name)[0]
                recon[run.name]["codebook"] = _remedy(runs / run.name)
                recon[run.name]["curve"] = heldout_curve(runs / run.name / "metrics.jsonl")
        # the runs trained now: no score or wall-clock time of an earlier budget stays
        results = _merge({"recon": recon}, replace=("recon",))
        if results.get("train_seconds"):
            _merge({"train_seconds": {k: v for k, v in results["train_seconds"].items() if k in recon}},
                   replace=("train_seconds",))  # fmt: skip
    if "remedies" in parts:
        _merge({"remedies": evaluate_remedies(Path(args.remedy_runs), args.threads)})
    if "stages" in parts:
        stages = {}
        # two-stage (teacher, stage 1, stage 2 in runs/fmnist) against the sweep's 32-token single-stage run,
        # trained for as many tokenizer steps (stages_chain in docs/fashion-mnist.md)
        chains = {
            "two_stage": ([fm / "stage1", fm / "stage2"], fm / "vqgan"),
            "single_stage": ([runs / "tokens32"], None),
        }
        for name, (chain, teacher) in chains.items():
            entry = _recon(chain[-1] / "final", chain[-1] / "eval_whole.json", None, args.threads)
            trained = [_steps_and_images(r) for r in chain]
            entry["steps"] = sum(steps for steps, _ in trained)
            entry["images_seen"] = sum(images for _, images in trained)
            entry["teacher_steps"] = _steps_and_images(teacher)[0] if teacher else 0
            if teacher:
                entry["teacher"] = _teacher_codebook(teacher, args.threads)
            before = entry["steps"] - trained[-1][0]  # the curve's steps count stage 1's too
            entry["curve"] = [{**c, "step": c["step"] + before} for c in heldout_curve(chain[-1] / "metrics.jsonl")]
            stages[name] = entry
        _merge({"stages": stages})
    if "gen" in parts:
        gen = {}
        for schedule in SCHEDULES:
            for steps in STEPS:
                out = fm / "gen_eval" / f"{schedule}_{steps}.json"
                _eval_gen(out, GEN_SAMPLES, "--steps", steps, "--mask-schedule", schedule, threads=args.threads)
                m = _metrics(out)
                gen[f"{schedule}_{steps}"] = {"gfd": m["gFD-fmnist"], "is": m["IS-fmnist-cnn"]}
        _merge({"gen": gen})
    if "shipped" in parts:
        _merge({"shipped": evaluate_shipped(fm, args)}, replace=("shipped",))
    if "speed" in parts:
        _merge({"speed": speed(args.threads)})


def evaluate_shipped(fm: Path, args: argparse.Namespace) -> dict:
    """The shipped models as they are: the demo's grid (the picture the report shows), the tokenizer on the whole
    test split, 10,000 samples with the generator's own settings. Scores are cached under the weights' digest, so
    that new weights are scored anew; the entry they replace is kept as ``previous``."""
    from titok import demo

    grid = demo.run(Path(args.doc).with_suffix("") / "demo.png", seed=SEED).grid
    print(f"wrote {grid}")
    key = f"{_digest(ASSETS / 'tokenizer')}_{_digest(ASSETS / 'generator')}"
    out = fm / "gen_eval" / f"shipped_{key}.json"
    _eval_gen(out, SHIPPED_SAMPLES, threads=args.threads)
    m = _metrics(out)
    entry = {
        "gfd": m["gFD-fmnist"],
        "is": m["IS-fmnist-cnn"],
        "samples": SHIPPED_SAMPLES,
        "tokenizer": _recon(ASSETS / "tokenizer", fm / f"shipped_tokenizer_{key}.json", None, args.threads),
        "generator_params": _params(ASSETS / "generator"),
        "sampling": json.loads((ASSETS / "generator" / "config.json").read_text())["config"]["sampling"],
        "bytes": sum(f.stat().st_size for f in ASSETS.rglob("*") if f.is_file()),
        "key": key,
    }
    before = json.loads(RESULTS.read_text()).get("shipped", {}) if RESULTS.exists() else {}
    if before and before.get("key") != key:
        entry["previous"] = {k: v for k, v in before.items() if k != "previous"}
    elif before.get("previous"):
        entry["previous"] = before["previous"]
    return entry


def _digest(folder: Path) -> str:
    """The first 12 hex digits of the SHA-256 of a model folder's weights."""
    import hashlib

    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()[:12]


def evaluate_remedies(runs: Path, threads: int) -> dict:
    """Each finished remedy run: its final model on the whole test split, and its held-out learning curve."""
    results = {}
    for run in REMEDIES:
        final = runs / run.name / "final"
        if not final.exists():
            continue
        entry = _recon(final, runs / run.name / "eval.json", None, threads)
        own = {k: v for k, v in run.overrides.items() if k not in HELDOUT and NO_REMEDY.get(k, object()) != v}
        entry["overrides"] = _describe(own)
        entry["curve"] = heldout_curve(runs / run.name / "metrics.jsonl")
        entry["steps"] = run.steps
        results[run.name] = entry
    return results


def _eval_gen(out: Path, num: int, *options: object, threads: int) -> None:
    """``titok eval gen`` of the shipped models (FD-fmnist against the test split, seed SEED) into ``out``, unless
    it is there already."""
    if out.exists():
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    stats = ASSETS / "test_stats_fmnist.npz"
    _titok("eval", "gen", ASSETS / "tokenizer", ASSETS / "generator", "--ref", stats, "--num", num, "--extractor",
           "fmnist", "--seed", SEED, *options, "--no-progress", "-o", out, threads=threads)  # fmt: skip


def speed(threads: int, batch: int = 100, repeats: int = 3) -> dict:
    """CPU samples/s of the shipped generator + tokenizer (class-conditional, batch ``batch``), median of
    ``repeats`` after one warm-up, for 4, 8 and 16 steps; and tokenize / detokenize images/s."""
    import statistics

    import torch

    import titok

    torch.set_num_threads(threads)
    tok, gen = titok.load(ASSETS / "tokenizer"), titok.load(ASSETS / "generator")
    labels = torch.arange(batch) % gen.config.num_classes
    images = torch.rand(batch, 3, tok.image_size, tok.image_size)

    def rate(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return batch / statistics.median(times)

    codes = tok.tokenize(images)
    with torch.inference_mode():
        out = {
            "threads": threads,
            "batch": batch,
            "cpu": platform.processor() or platform.machine(),
            "tokenize": rate(lambda: tok.tokenize(images)),
            "detokenize": rate(lambda: tok.detokenize(codes)),
        }
        for steps in STEPS:
            out[f"generate_{steps}"] = rate(lambda s=steps: gen.generate(labels, num_sample_steps=s))
            out[f"generate_decode_{steps}"] = rate(
                lambda s=steps: tok.detokenize(gen.generate(labels, num_sample_steps=s))
            )
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["train", "evaluate", "report"])
    p.add_argument("--runs", default=str(ROOT / "runs" / "fmnist" / "exp"), help="where the sweep trains")
    p.add_argument("--only", nargs="*", help="these runs or parts only")
    p.add_argument("--group", choices=sorted(GROUPS), default="sweep", help="which runs train trains")
    p.add_argument(
        "--remedy-runs", default=str(ROOT / "runs" / "fmnist" / "remedies"), help="where the remedies group trained"
    )
    p.add_argument("--threads", type=int, default=2, help="CPU threads per job")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where train runs the tokenizers")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once (e.g. 4 on one GPU)")
    p.add_argument("--results", default=str(RESULTS), help="the results JSON (report reads it)")
    p.add_argument("--doc", default=str(DOC), help="the Markdown file report writes (plots go beside it)")
    args = p.parse_args(argv)
    {"train": train, "evaluate": evaluate, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
