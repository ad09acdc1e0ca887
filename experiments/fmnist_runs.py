"""The Fashion-MNIST experiments' runs and settings, shared by ``fashion_mnist.py`` (train, evaluate) and
``fmnist_report.py`` (the report)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results" / "fashion_mnist.json"
DOC = ROOT / "docs" / "fashion-mnist.md"
FIGURES = ROOT / "docs" / "fashion-mnist"
ASSETS = ROOT / "titok" / "assets" / "fashion_mnist"
BASE = "configs/tokenizer/single_stage_vq_fmnist.yaml"
RECON_IMAGES = 2000  # first images of the test split, for the sweep's reconstruction scores
GEN_SAMPLES = 1000  # generated per setting (100 per class)
CLOSE = 0.05  # relative gFD differences below this are not called a finding at GEN_SAMPLES samples
SHIPPED_SAMPLES = 10_000  # generated with the shipped generator's own settings (1,000 per class)
SEED = 0
# How the shipped Fashion-MNIST models were made (docs/fashion-mnist.md shows these).
SHIPPED_COMMANDS = [
    "python -m titok.metrics.fmnist --epochs 6 --seed 0 -o titok/assets/fmnist_classifier.safetensors  # FD-fmnist",
    "python -m titok.metrics.fmnist --epochs 6 --seed 1 -o titok/assets/fmnist_perceptual.safetensors  # perceptual",
    "titok train tokenizer single_stage_vq_fmnist_perceptual   # 8,000 steps of 32 images",
    "titok pretokenize runs/fmnist/single_stage_vq_perceptual/final fashion-mnist:train -o runs/fmnist/tokens --flip",
    "titok train generator fmnist                              # 6,000 steps of 64 sequences",
    "titok train tokenizer ordered_vq_fmnist_perceptual        # the ordered twin, 8,000 steps",
]


@dataclass(frozen=True)
class Run:
    """One sweep tokenizer: the single-stage VQ recipe (L2, 1024 x 16 codebook) with ``overrides``."""

    name: str
    overrides: dict[str, object] = field(default_factory=dict)
    steps: int = 1000
    checkpoints: int = 1  # evenly spaced; each is scored on held-out images when the overrides ask for it

    def args(self, out: Path) -> list[str]:
        every = self.steps // self.checkpoints
        settings = {
            "train.output_dir": out,
            "train.max_steps": self.steps,
            "train.save_every": every,
            "train.preview_every": every,
            "train.seed": SEED,
            "train.tensorboard": "false",
            "train.num_workers": 1,
            **self.overrides,
        }
        return [f"{k}={v}" for k, v in settings.items()]


def _size(width: int, depth: int, heads: int) -> dict[str, object]:
    return {
        "model.encoder.width": width,
        "model.encoder.depth": depth,
        "model.encoder.num_heads": heads,
        "model.decoder.width": width,
        "model.decoder.depth": depth,
        "model.decoder.num_heads": heads,
    }


SIZES = {"XS": (64, 2, 2), "S": (128, 2, 4), "M": (192, 4, 6)}
TOKENS = (4, 8, 16, 32, 64)
SWEEP_STEPS = 6000  # three epochs of 32 images
# The sweep's tokenizers, built as the paper builds them: the 1-D model keeps its 4x4 patches whatever its token
# count; the 2-D twin (one token per patch) has patches that grow as its tokens shrink (4 tokens: 16x16 patches).
# Every run is scored on 1,000 held-out test images at each of its 6 checkpoints (the learning curves).
SWEEP = {"heldout.source": "fashion-mnist:test", "heldout.num": 1000, "heldout.extractor": "fmnist"}


def _sweep_run(name: str, overrides: dict[str, object]) -> Run:
    return Run(name, {**SWEEP, **overrides}, steps=SWEEP_STEPS, checkpoints=6)


RUNS = [_sweep_run(f"tokens{n}", {"model.num_tokens": n}) for n in TOKENS]
RUNS += [_sweep_run(f"size{s}_tokens16", {"model.num_tokens": 16, **_size(*SIZES[s])}) for s in ("XS", "M")]
RUNS += [
    _sweep_run(f"grid_tokens{n}", {"model.layout": "2d", "model.num_tokens": n, "model.patch_size": 32 // side})
    for n, side in ((4, 2), (16, 4), (64, 8))
]
TWINS = [(f"tokens{n}", f"grid_tokens{n}", f"{n} tokens") for n in (64, 16, 4)]
# Codebook-collapse remedies against today's recipe, at one budget; held-out scores (1,000 test images) at each
# checkpoint give the learning curves.
HELDOUT = {"heldout.source": "fashion-mnist:test", "heldout.num": 1000, "heldout.extractor": "fmnist"}
L2_12D = {"model.l2_norm": "true", "model.token_dim": 12}
FSQ = {"model.quantizer": "fsq", "model.fsq_levels": "[8,5,5,5]", "model.token_dim": 4, "model.codebook_size": 1000}
NO_REMEDY = {"codebook.clustering": "false", "codebook.kmeans_init": "false", "codebook.restart_after": 0}
REMEDIES = [
    Run(name, {**HELDOUT, **NO_REMEDY, **overrides}, steps=2000, checkpoints=4)
    for name, overrides in [
        ("vq", {}),
        ("vq_kmeans", {"codebook.kmeans_init": "true"}),
        ("vq_clustering", {"codebook.clustering": "true"}),
        ("vq_restart", {"codebook.restart_after": 50}),
        ("vq_clustering_restart", {"codebook.clustering": "true", "codebook.restart_after": 50}),
        ("vq_l2_12d", L2_12D),
        ("vq_l2_12d_clustering", {**L2_12D, "codebook.clustering": "true"}),
        ("fsq_8555", FSQ),
    ]
]
GROUPS = {"sweep": RUNS, "remedies": REMEDIES}
SCHEDULES = ("arccos", "linear", "cosine", "sqrt")
STEPS = (4, 8, 16)


def _describe(overrides: dict[str, object]) -> str:
    """The overrides of a sweep run, short: encoder and decoder settings that agree are named once."""
    short = {k.removeprefix("model."): v for k, v in overrides.items() if not k.startswith("heldout.")}
    for key in ("width", "depth", "num_heads"):
        if short.get(f"encoder.{key}") == short.get(f"decoder.{key}") is not None:
            short[key] = short.pop(f"encoder.{key}")
            del short[f"decoder.{key}"]
    return " ".join(f"{k}={v}" for k, v in short.items())


def heldout_curve(metrics: Path) -> list[dict]:
    """The ``heldout_*`` entries of a run's ``metrics.jsonl``: step, rFD-fmnist, PSNR, usage, perplexity."""
    keys = {"heldout_rFD-fmnist": "rfd", "heldout_psnr": "psnr", "heldout_usage": "usage",
            "heldout_perplexity": "perplexity"}  # fmt: skip
    curve = []
    for line in metrics.read_text().splitlines():
        entry = json.loads(line)
        if "heldout_psnr" in entry:
            curve.append({"step": entry["step"], **{short: entry[k] for k, short in keys.items() if k in entry}})
    return curve
