"""Ordered tokens on Fashion-MNIST: what a prefix of the codes is worth, against a fixed tokenizer and image codecs.

    python experiments/ordered_tokens.py train [--runs runs/fmnist/ordered]  # the models it compares, resumable
    python experiments/ordered_tokens.py evaluate --ordered DIR --fixed DIR [--generator DIR] [--fixed-generator DIR]
    python experiments/ordered_tokens.py report     # docs/ordered-tokens.md and its plots, from the results alone

``train`` trains, one after the other, each skipped when finished and resumed when cut short: the ordered tokenizer
(recipe ``ordered_vq_fmnist_perceptual``, the shipped one), two small ordered tokenizers that differ only in their
tail (learned or cut), the ordered tokenizer's codes of the train split, and the generator on them (recipe
``fmnist_ordered``).

``evaluate`` scores, on the first ``--num`` images of the Fashion-MNIST test split (center crop at the tokenizers'
resolution, as ``titok eval recon`` reads them):

- each tokenizer's reconstructions from its first k codes, k = 1, 2, 4, 8, 16, 32 (up to N): PSNR (per image, on
  the 8-bit reconstructions, averaged) and rFD-fmnist (originals against reconstructions, titok's Fashion-MNIST
  classifier features);
- JPEG and WebP (Pillow) over a sweep of quality settings, each image encoded on its own (grey images as 8-bit
  grey), their mean file size per image in bytes (whole files, headers included), and for each token budget the
  setting whose mean size is nearest to it. A prefix of k codes costs k * log2(codebook size) / 8 bytes per image
  (the bits the codes carry, with no entropy coding);
- with a generator: gFD-fmnist (against the whole test split's statistics) of ``--gen-num`` samples (classes in
  turn) generated at k = 4, 8, 16, 32 codes and decoded from that prefix;
- with ``--tails``: ordered tokenizers that differ in what stands in for the dropped tokens (a learned token or
  nothing: the tail cut), scored as above at each k;
- adaptive length (the ordered tokenizer): the mean length and bytes that ``tokenize(images, quality=psnr=T)``
  picks per image at a few PSNR targets, on the first ``--adaptive-num`` images (the search decodes every length
  up to the first that passes, up to N decodes per image and target).

Results go to a JSON file with the command that made them; ``report`` writes the Markdown report and its plots
(``report`` needs matplotlib: ``pip install 'titok-tokenizer[dev]'``).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results" / "ordered_tokens.json"
DOC = ROOT / "docs" / "ordered-tokens.md"
LENGTHS = (1, 2, 4, 8, 16, 32)
GEN_LENGTHS = (4, 8, 16, 32)
CODEC_QUALITIES = {"jpeg": (1, 3, 5, 10, 20, 35, 50, 75, 90), "webp": (0, 3, 5, 10, 20, 35, 50, 75, 90)}
PSNR_TARGETS = (16.0, 20.0, 24.0)
SEED = 0


# ------------------------------------------------------------------------------------------------------ scoring


def moments(extractor, images, batch_size: int = 500):
    """Mean and covariance of the FD-fmnist features of ``images`` (B, 3, S, S) in [0, 1], rounded to 8 bits."""
    from titok.data.images import round_to_uint8
    from titok.metrics.fid import FeatureStats

    stats = FeatureStats(128)
    for chunk in round_to_uint8(images.clamp(0, 1)).split(batch_size):
        stats.update(extractor(chunk).features)
    s = stats.compute()
    return s.mu, s.sigma


class Scorer:
    """PSNR and rFD-fmnist of reconstructions of one fixed set of test images."""

    def __init__(self, images) -> None:
        from titok.data.images import round_to_uint8
        from titok.metrics.extractors import fmnist

        self.images = round_to_uint8(images).float() / 255  # the originals as a PNG holds them
        self.extractor = fmnist()
        self.real = moments(self.extractor, self.images)

    def __call__(self, recon) -> dict[str, float]:
        """``recon`` (B, 3, S, S), clamped to [0, 1] and rounded to 8 bits as a PNG holds them -> mean PSNR and
        rFD-fmnist against the originals."""
        from titok.data.images import round_to_uint8
        from titok.metrics.fid import frechet_distance
        from titok.metrics.image import psnr

        shown = round_to_uint8(recon.clamp(0, 1)).float() / 255
        return {
            "psnr": float(psnr(shown, self.images).mean()),
            "rfd": frechet_distance(*moments(self.extractor, shown), *self.real),
        }


def test_images(num: int, size: int):
    """The first ``num`` test images, (B, 3, size, size) float in [0, 1], and their labels."""
    import torch

    from titok.data.transforms import Preprocess
    from titok.demo import held_out_images

    raw, labels, _ = held_out_images(num)
    resize = Preprocess(size)
    return torch.stack([resize(x[None]) for x in raw]), labels


def token_bytes(k: int, codebook_size: int) -> float:
    """The bytes per image of k codes: k * log2(codebook size) bits."""
    return k * math.log2(codebook_size) / 8


def tokens_curve(tokenizer, scorer: Scorer, batch_size: int) -> list[dict]:
    """Scores of the reconstructions from the first k codes, k in LENGTHS up to N (and N)."""
    import torch

    n = tokenizer.num_tokens
    codes = torch.cat([tokenizer.tokenize(b) for b in scorer.images.split(batch_size)])
    curve = []
    for k in sorted({min(k, n) for k in LENGTHS}):
        recon = torch.cat([tokenizer.detokenize(c[:, :k]).float().cpu() for c in codes.split(batch_size)])
        curve.append({"k": k, "bytes": token_bytes(k, tokenizer.codebook_size), **scorer(recon)})
    return curve


def codec_round_trip(codec: str, image, quality: int) -> tuple[int, object]:
    """One image (3, S, S) in [0, 1] through Pillow's ``codec`` at ``quality``: (file bytes, decoded (3, S, S))."""
    import numpy as np
    import torch
    from PIL import Image

    pixels = (image * 255).round().byte().permute(1, 2, 0).numpy()
    grey = bool((pixels == pixels[..., :1]).all())
    picture = Image.fromarray(pixels[..., 0] if grey else pixels)
    buffer = io.BytesIO()
    options = {"jpeg": {"format": "JPEG", "optimize": True}, "webp": {"format": "WEBP", "method": 6}}[codec]
    picture.save(buffer, quality=quality, **options)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return buffer.tell(), torch.from_numpy(decoded.copy()).permute(2, 0, 1).float() / 255


def codec_curve(codec: str, scorer: Scorer) -> list[dict]:
    """Mean file bytes per image, PSNR and rFD-fmnist of ``codec`` at each of its sweep's qualities."""
    import torch

    curve = []
    for quality in CODEC_QUALITIES[codec]:
        trips = [codec_round_trip(codec, image, quality) for image in scorer.images]
        recon = torch.stack([decoded for _, decoded in trips])
        curve.append({"quality": quality, "bytes": sum(size for size, _ in trips) / len(trips), **scorer(recon)})
    return curve


def matched(curve: list[dict], budgets: dict[int, float]) -> list[dict]:
    """For each k's token budget (bytes), the codec setting whose mean size is nearest to it."""
    out = []
    for k, budget in budgets.items():
        best = min(curve, key=lambda p: abs(math.log(p["bytes"] / budget)))
        out.append({"k": k, "budget": budget, **best, "reachable": curve[0]["bytes"] <= budget * 1.25})
    return out


def generation(tokenizer, generator, extractor, num: int, batch_size: int) -> list[dict]:
    """gFD-fmnist (against the whole test split) of ``num`` samples (classes in turn) at each k in GEN_LENGTHS up to
    N, each decoded from its k codes."""
    import torch

    from titok.demo import TEST_STATS
    from titok.metrics.fid import Statistics, frechet_distance

    reference = Statistics.load(TEST_STATS)
    labels = torch.arange(num) % generator.config.num_classes
    out = []
    for k in [k for k in GEN_LENGTHS if k <= generator.num_tokens]:
        rng = torch.Generator().manual_seed(SEED)
        samples = [
            tokenizer.detokenize(generator.generate(c, generator=rng, num_tokens=k)) for c in labels.split(batch_size)
        ]
        mu, sigma = moments(extractor, torch.cat(samples).float().cpu())
        out.append({"k": k, "gfd": frechet_distance(mu, sigma, reference.mu, reference.sigma), "samples": num})
    return out


def adaptive(tokenizer, images, targets: list[float], batch_size: int) -> list[dict]:
    """Mean length and bytes that ``tokenize(quality=psnr>=T)`` picks for ``images``, and the share that met T, per
    target."""
    import torch

    out = []
    for target in targets:
        picked = [tokenizer.tokenize(b, quality={"psnr": target}) for b in images.split(batch_size)]
        lengths = torch.cat([p.lengths for p in picked]).double()
        met = torch.cat([p.met for p in picked]).double()
        k_mean = float(lengths.mean())
        out.append(
            {"psnr": target, "mean_k": k_mean, "bytes": token_bytes(1, tokenizer.codebook_size) * k_mean,
             "met": float(met.mean())}
        )  # fmt: skip
    return out


# -------------------------------------------------------------------------------------------------------- train

TAIL_STEPS = 2000


def plan(runs: Path, tokenizer: str | None = None) -> list[tuple[str, Path, list[str]]]:
    """The runs the report compares, in order: ``(name, output folder, titok arguments)``. The generator learns the
    codes of ``tokenizer`` (an ordered tokenizer's folder) when given, else of the ordered tokenizer trained here."""
    steps = []
    tok = runs / "tokenizer"
    if tokenizer is None:
        steps.append(
            ("tokenizer", tok, ["train", "tokenizer", "ordered_vq_fmnist_perceptual", f"train.output_dir={tok}"])
        )
    tok_final = Path(tokenizer) if tokenizer is not None else tok / "final"
    for tail in ("learned", "cut"):  # one kept length per batch, so that the cut tail applies too
        out = runs / f"tail_{tail}"
        steps.append((f"tail_{tail}", out, [
            "train", "tokenizer", "single_stage_vq_fmnist", "model.ordered=true", f"model.tail={tail}",
            "ordering.per=batch", "ordering.full_share=0.5", f"train.max_steps={TAIL_STEPS}", "train.save_every=500",
            "train.preview_every=500", "train.seed=0", "train.num_workers=1", "train.tensorboard=false",
            f"train.output_dir={out}", "heldout.source=fashion-mnist:test",
            "heldout.num=1000", "heldout.extractor=fmnist",
        ]))  # fmt: skip
    codes = runs / "tokens"
    steps.append(("tokens", codes, ["pretokenize", str(tok_final), "fashion-mnist:train", "-o", str(codes), "--flip"]))
    gen = runs / "generator"
    steps.append(("generator", gen, [
        "train", "generator", "fmnist_ordered", f"tokens={codes}", f"tokenizer={tok_final}", f"train.output_dir={gen}",
    ]))  # fmt: skip
    return steps


def _finished(name: str, out: Path) -> bool:
    return (out / ("meta.json" if name == "tokens" else "final/config.json")).is_file()


def train(args: argparse.Namespace) -> None:
    """Run the steps of :func:`plan` that are not finished (resuming a training that was cut short)."""
    runs = Path(args.runs)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    for name, out, cli in plan(runs, args.tokenizer):
        if args.only and name not in args.only:
            continue
        if _finished(name, out):
            print(f"{name}: done ({out})", flush=True)
            continue
        if cli[0] == "train" and (out / "checkpoints").is_dir():
            cli = [*cli[:3], "--resume", *cli[3:]]
        print("$ titok " + shlex.join(cli), flush=True)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "titok.cli", *cli], env=env)
        if done.returncode:
            raise SystemExit(f"{name}: failed (exit {done.returncode}); run the same command again to resume it")
        print(f"{name}: done in {time.perf_counter() - start:.0f} s", flush=True)


# ----------------------------------------------------------------------------------------------------- evaluate


def _tokenizer_entry(path: str, tokenizer, scorer: Scorer, batch_size: int) -> dict:
    cfg = tokenizer.config
    return {
        "path": path,
        "num_tokens": cfg.num_tokens,
        "codebook_size": tokenizer.codebook_size,
        "ordered": bool(getattr(cfg, "ordered", False)),
        "tail": getattr(cfg, "tail", None),
        "curve": tokens_curve(tokenizer, scorer, batch_size),
    }


def _trained(path: str) -> dict:
    """The training settings of a run's export (``.../final`` beside ``recipe.json``) that the tails section names."""
    recipe = Path(path).parent / "recipe.json"
    if not recipe.is_file():
        return {}
    r = json.loads(recipe.read_text())
    return {"steps": r["train"]["max_steps"], "ordering": r.get("ordering", {})}


def evaluate(args: argparse.Namespace) -> dict:
    """Score everything (see the module's docstring) and write the results JSON; returns the results."""
    import warnings

    import torch

    import titok

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*not trained (with tail drops|on prefixes).*")  # the fixed models
    start = time.perf_counter()
    paths = {"ordered": args.ordered, "fixed": args.fixed}
    tokenizers = {name: titok.load(path) for name, path in paths.items()}
    sizes = {tok.image_size for tok in tokenizers.values()}
    if len(sizes) != 1:
        raise SystemExit(f"the tokenizers read images of different sizes ({sorted(sizes)} px)")
    images, _ = test_images(args.num, sizes.pop())
    scorer = Scorer(images)
    results: dict = {"command": args.command_line, "settings": {"images": len(images), "seed": SEED}}
    results["tokenizers"] = {n: _tokenizer_entry(paths[n], t, scorer, args.batch_size) for n, t in tokenizers.items()}
    results["tails"] = {}
    for name, path in (t.split("=", 1) for t in args.tails):
        tok = titok.load(path)
        results["tails"][name] = {**_tokenizer_entry(path, tok, scorer, args.batch_size), "trained": _trained(path)}
    budgets = {p["k"]: p["bytes"] for p in results["tokenizers"]["ordered"]["curve"]}
    results["codecs"] = {codec: codec_curve(codec, scorer) for codec in CODEC_QUALITIES}
    results["matched"] = {codec: matched(curve, budgets) for codec, curve in results["codecs"].items()}
    results["generation"] = {}
    for name, path in (("ordered", args.generator), ("fixed", args.fixed_generator)):
        if path:
            gen = titok.load(path)
            results["generation"][name] = generation(tokenizers[name], gen, scorer.extractor, args.gen_num, 250)
            results["generation"][name] = {"path": path, "points": results["generation"][name]}
    results["settings"]["gen_samples"] = args.gen_num if results["generation"] else 0
    targets = [float(t) for t in args.psnr_targets.split(",")]
    some = scorer.images[: args.adaptive_num]
    results["settings"]["adaptive_images"] = len(some)
    results["adaptive"] = adaptive(tokenizers["ordered"], some, targets, args.batch_size)
    results["seconds"] = round(time.perf_counter() - start, 1)
    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(out)
    print(f"wrote {out} ({results['seconds']} s)")
    return results


def report(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ordered_tokens_report import write_report

    results = json.loads(Path(args.results).read_text())
    report_command = (
        f"python experiments/ordered_tokens.py report --results {_shown(args.results)} --doc {_shown(args.doc)}"
    )
    print(f"wrote {write_report(results, Path(args.doc), report_command, plan(Path(args.runs)))}")


def _shown(path: str) -> str:
    """``path`` as a command would name it: relative to the repository when inside it."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else path


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["train", "evaluate", "report"])
    p.add_argument("--runs", default="runs/fmnist/ordered", help="train: where the runs go (the report names it)")
    p.add_argument("--tokenizer", help="train: the ordered tokenizer whose codes the generator learns (else trained)")
    p.add_argument("--only", nargs="*", default=[], metavar="STEP", help="train: only these steps (see plan())")
    p.add_argument("--ordered", help="the ordered tokenizer (a folder titok.load reads)")
    p.add_argument("--fixed", help="the fixed tokenizer, trained without tail drops, to compare")
    p.add_argument("--generator", help="a generator over the ordered tokenizer's codes (gFD-fmnist at each k)")
    p.add_argument("--fixed-generator", help="a generator over the fixed tokenizer's codes")
    p.add_argument(
        "--tails",
        nargs="*",
        default=[],
        metavar="NAME=DIR",
        help="ordered tokenizers to compare at each k (e.g. a learned tail against a cut one)",
    )
    p.add_argument("--num", type=int, default=10_000, help="test images to score (the first NUM; default all)")
    p.add_argument("--gen-num", type=int, default=10_000, help="samples per length for gFD-fmnist")
    p.add_argument("--psnr-targets", default=",".join(map(str, PSNR_TARGETS)), help="adaptive length's targets, dB")
    p.add_argument("--adaptive-num", type=int, default=2000, help="test images for the adaptive length (the first)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--results", default=str(RESULTS), help="the results JSON (evaluate writes it, report reads it)")
    p.add_argument("--doc", default=str(DOC), help="the Markdown file report writes (plots go beside it)")
    p.add_argument("--no-report", action="store_true", help="evaluate only: do not write the report after")
    args = p.parse_args(argv)
    args.command_line = "python experiments/ordered_tokens.py " + shlex.join(argv)
    if args.command == "train":
        steps = [name for name, _, _ in plan(Path(args.runs), args.tokenizer)]
        if unknown := [s for s in args.only if s not in steps]:
            p.error(f"--only: no step {', '.join(unknown)} (the steps: {', '.join(steps)})")
        train(args)
        return
    if args.command == "evaluate":
        if not args.ordered or not args.fixed:
            p.error("evaluate needs --ordered and --fixed")
        bad = [t for t in args.tails if "=" not in t or not t.split("=", 1)[0]]
        if bad:
            p.error(f"--tails takes NAME=DIR, got {' '.join(bad)}")
        evaluate(args)
        if args.no_report:
            return
    report(args)


if __name__ == "__main__":
    main()
