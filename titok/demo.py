"""``titok demo``: the shipped Fashion-MNIST tokenizer and generator at work, on the CPU, with no download.

Reconstructs held-out test images and generates samples of every class, writes one labelled PNG grid (originals,
reconstructions, samples per class), and reports one image's codes, reconstruction PSNR, FD-fmnist of the
reconstructions and of the samples against the test split, and timings. For an ordered tokenizer (``ordered``:
trained with tail drops) the grid has one more row, the first column's image reconstructed from its first 1, 2, 4, 8,
16 and 32 codes (up to N), and the PSNR from each prefix is reported; a tokenizer trained without them shows the
grid as it always was (prefixes of its codes are not meant to decode).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from titok.data.datasets import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, read_idx
from titok.data.images import round_to_uint8
from titok.data.labelled import write_grid
from titok.data.transforms import Preprocess
from titok.metrics.extractors import fmnist
from titok.metrics.fid import FeatureStats, Statistics, frechet_distance
from titok.metrics.image import psnr

ASSETS = Path(__file__).resolve().parent / "assets" / "fashion_mnist"
TOKENIZER = ASSETS / "tokenizer"
GENERATOR = ASSETS / "generator"
ORDERED_TOKENIZER = ASSETS / "ordered_tokenizer"  # the prefix row of the demo's grid, beside the shipped tokenizer
TEST_IMAGES = ASSETS / "test_images.npz"  # held-out test images, in case Debian's package is not installed
TEST_STATS = ASSETS / "test_stats_fmnist.npz"  # FD-fmnist statistics of the whole test split at 32x32
PREFIXES = (1, 2, 4, 8, 16, 32)  # the prefix lengths an ordered tokenizer's row shows (capped at its N)

logger = logging.getLogger(__name__)


@dataclass
class DemoResult:
    grid: Path
    num_images: int
    num_samples: int
    example_codes: list[int]
    example_label: str
    psnr_db: float
    rfd: float
    gfd: float
    seconds: dict[str, float] = field(default_factory=dict)
    prefix_psnr_db: dict[int, float] = field(default_factory=dict)  # ordered tokenizers: mean PSNR from k codes


def held_out_images(count: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first ``count`` Fashion-MNIST test images (uint8 (N, 28, 28)), their labels and where they came from."""
    images_file = FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz"
    if images_file.is_file():
        images, labels = read_idx(images_file), read_idx(FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
        source = str(FASHION_MNIST_DIR)
    else:
        with np.load(TEST_IMAGES) as data:
            images, labels = data["images"], data["labels"]
        source = f"{TEST_IMAGES} (the first {len(images)} test images, shipped)"
    return torch.from_numpy(images[:count].copy()), torch.from_numpy(labels[:count].astype(np.int64)), source


def _features(extractor, images: torch.Tensor) -> FeatureStats:
    """FD-fmnist statistics of float images (B, 3, S, S) in [0, 1], as their PNGs hold them."""
    stats = FeatureStats(128)
    for chunk in round_to_uint8(images).split(500):
        stats.update(extractor(chunk).features)
    return stats


def run(
    out: str | Path = "demo.png",
    *,
    tokenizer: str | Path = TOKENIZER,
    generator: str | Path = GENERATOR,
    num_images: int = 1000,
    samples_per_class: int = 50,
    seed: int = 0,
    batch_size: int = 250,
    say: Callable[[str], None] = logger.info,
    bars: bool = True,
) -> DemoResult:
    """Run the demo on the CPU and write the grid to ``out``. Each phase (loading, reconstruction, sampling,
    scoring, drawing) is announced through ``say``; with ``bars``, reconstruction and sampling show progress bars
    on stderr when it is a terminal."""
    import titok

    lap = _Laps(say, 5)
    lap.start("load", "loading the tokenizer and the generator")
    tok, gen = titok.load(tokenizer), titok.load(generator)
    extractor = fmnist()
    reference = Statistics.load(TEST_STATS)
    raw, labels, _ = held_out_images(num_images)
    lap.start("reconstruct", f"reconstructing {len(raw):,} held-out test images")
    size = Preprocess(tok.image_size)
    images = torch.stack([size(x[None]) for x in raw])
    codes, recon = _reconstruct(tok, images, batch_size, bars)
    shown = int((labels == 0).nonzero()[0])  # the first column's image (class 0)
    prefix_tok = _prefix_tokenizer(tok, tokenizer)
    prefixes = {} if prefix_tok is None else _prefixes(prefix_tok, tok, codes, images, shown, batch_size)
    classes = torch.arange(gen.config.num_classes).repeat_interleave(samples_per_class)
    lap.start(
        "generate",
        f"sampling {len(classes):,} images ({samples_per_class} of each of {gen.config.num_classes} classes)",
    )
    samples = _sample(tok, gen, classes, batch_size, torch.Generator().manual_seed(seed), bars)
    lap.start("score", "scoring: FD-fmnist of the reconstructions and of the samples against the test split")
    shown = round_to_uint8(recon).float() / 255
    rfd = frechet_distance(*_moments(_features(extractor, recon)), reference.mu, reference.sigma)
    gfd = frechet_distance(*_moments(_features(extractor, samples)), reference.mu, reference.sigma)
    lap.start("grid", f"drawing the grid: {out}")
    _write_demo_grid(out, images, recon, samples, labels, gen.config.num_classes, samples_per_class, prefixes)
    lap.start(None)
    return DemoResult(
        grid=Path(out),
        num_images=len(images),
        num_samples=len(samples),
        example_codes=codes[0].tolist(),
        example_label=FASHION_MNIST_CLASSES[int(labels[0])],
        psnr_db=float(psnr(shown, images).mean()),
        rfd=rfd,
        gfd=gfd,
        seconds={**lap.seconds, "total": sum(lap.seconds.values())},
        prefix_psnr_db={k: score for k, (_, score) in prefixes.items()},
    )


def _prefix_tokenizer(tok, tokenizer):
    """The tokenizer whose prefixes the grid's last row shows: ``tok`` when it is ordered; with the shipped tokenizer,
    the shipped ordered one (when installed); else None (no row)."""
    if getattr(tok.config, "ordered", False):
        return tok
    if Path(tokenizer) == TOKENIZER and (ORDERED_TOKENIZER / "config.json").is_file():
        import titok

        return titok.load(ORDERED_TOKENIZER)
    return None


def _prefixes(prefix_tok, tok, codes, images, shown: int, batch_size: int) -> dict[int, tuple[torch.Tensor, float]]:
    """Per prefix length k (PREFIXES capped at N): image ``shown`` reconstructed from the first k codes of
    ``prefix_tok`` (3, S, S), and the mean PSNR of every image's reconstruction from k codes (as PNGs hold them).
    ``codes`` are ``tok``'s, reused when ``prefix_tok`` is ``tok``."""
    if prefix_tok is not tok:
        codes = torch.cat([prefix_tok.tokenize(b) for b in images.split(batch_size)])
    out = {}
    for k in sorted({min(k, prefix_tok.num_tokens) for k in PREFIXES}):
        recon = torch.cat([prefix_tok.detokenize(c[:, :k]).clamp(0, 1) for c in codes.split(batch_size)])
        out[k] = (recon[shown], float(psnr(round_to_uint8(recon).float() / 255, images).mean()))
    return out


def _bar(batches, bars: bool):
    """``batches`` (tensors) with a progress bar counting their rows: on a terminal, and only with ``bars``."""
    batches = list(batches)
    with tqdm(total=sum(len(b) for b in batches), unit="img", leave=False, disable=None if bars else True) as bar:
        for batch in batches:
            yield batch
            bar.update(len(batch))


def _sample(tok, gen, classes: torch.Tensor, batch_size: int, rng: torch.Generator, bars: bool) -> torch.Tensor:
    """Samples (B, 3, S, S) in [0, 1] of ``classes``, batch by batch."""
    batches = _bar(classes.split(batch_size), bars)
    return torch.cat([tok.detokenize(gen.generate(c, generator=rng)).clamp(0, 1) for c in batches])


def _reconstruct(tok, images: torch.Tensor, batch_size: int, bars: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (B, N) and reconstructions (B, 3, S, S) in [0, 1] of ``images``, batch by batch."""
    codes, recon = [], []
    for batch in _bar(images.split(batch_size), bars):
        codes.append(tok.tokenize(batch))
        recon.append(tok.detokenize(codes[-1]).clamp(0, 1))
    return torch.cat(codes), torch.cat(recon)


class _Laps:
    """The phases of a run: :meth:`start` announces one through ``say`` and records the seconds of the previous."""

    def __init__(self, say: Callable[[str], None], phases: int) -> None:
        self.say, self.phases, self.seconds = say, phases, {}
        self.current: str | None = None
        self.clock = time.perf_counter()

    def start(self, name: str | None, what: str = "") -> None:
        """Begin phase ``name``, described by ``what`` (None: end the last one)."""
        now = time.perf_counter()
        if self.current is not None:
            self.seconds[self.current] = now - self.clock
        self.current, self.clock = name, now
        if name is not None:
            self.say(f"[{len(self.seconds) + 1}/{self.phases}] {what}")


def _write_demo_grid(out, images, recon, samples, labels, num_classes: int, samples_per_class: int, prefixes) -> None:
    """One column per class: its first held-out image, the reconstruction, and up to four samples; for an ordered
    tokenizer a last row, the first column's image from its first k codes, captioned with k."""
    first = torch.tensor([int((labels == c).nonzero()[0]) for c in range(num_classes)])
    per_class = samples.view(num_classes, samples_per_class, *samples.shape[1:])
    rows = [("original", images[first]), ("reconstruction", recon[first])]
    rows += [(f"sample {k + 1}", per_class[:, k]) for k in range(min(4, samples_per_class))]
    if prefixes:
        tiles = torch.stack([image for image, _ in prefixes.values()])
        rows.append(("from k codes", tiles, [f"k = {k}" for k in prefixes]))
    write_grid(out, rows, [name[:12] for name in FASHION_MNIST_CLASSES[:num_classes]])


def _moments(stats: FeatureStats) -> tuple[np.ndarray, np.ndarray]:
    s = stats.compute()
    return s.mu, s.sigma
