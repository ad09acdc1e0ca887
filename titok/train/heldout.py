"""Held-out scores of a training run at every checkpoint: codebook health and reconstruction quality.

The training log's codebook numbers are over training batches of the moving model; whether a tokenizer's codebook is
healthy shows on data it does not train on, with the weights it will export. With ``heldout.source`` set, every
checkpoint step scores the (EMA) model on the first ``heldout.num`` images of that source (an evaluation data spec:
``fashion-mnist:test``, a folder, an ``.npz``), exactly as ``titok eval recon`` would: codebook usage, perplexity
(2^entropy, the effective number of codes) and dead codes, PSNR and SSIM, and with ``heldout.extractor`` the rFD in
that extractor's features. The values go to ``metrics.jsonl`` as ``heldout_*`` and are drawn, as learning curves, in
``previews/heldout.png``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from titok.config import Config
from titok.data.images import round_to_uint8
from titok.extras import install_hint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeldOutConfig(Config):
    source: str | None = None  # e.g. "fashion-mnist:test"; None: no held-out scores
    num: int = 1000
    extractor: str | None = None  # "fmnist" or "inception": the rFD at each checkpoint; None: not computed
    batch_size: int = 100

    def __post_init__(self) -> None:
        if self.num < 1:
            raise ValueError(f"heldout.num must be at least 1, got {self.num}")
        if self.extractor not in (None, "fmnist", "inception"):
            raise ValueError(f"heldout.extractor must be 'fmnist', 'inception' or null, got {self.extractor!r}")


class HeldOut:
    """Scores a tokenizer on the held-out images (every process takes a slice; the numbers are merged)."""

    def __init__(self, cfg: HeldOutConfig, image_size: int, device: torch.device) -> None:
        from titok.eval.data import open_source

        self.cfg = cfg
        dataset, self.describe = open_source(cfg.source, image_size)
        self.dataset = torch.utils.data.Subset(dataset, range(min(cfg.num, len(dataset))))
        self.extractor = None
        if cfg.extractor is not None:
            from titok.metrics.extractors import create_extractor

            self.extractor = create_extractor(cfg.extractor, device)

    @torch.no_grad()
    def scores(self, tokenizer: nn.Module) -> dict[str, float]:
        """``heldout_*`` values of ``tokenizer`` (left in the mode it was in), the same in every process."""
        from titok.eval.data import loader
        from titok.eval.dist import current_shard
        from titok.eval.recon import reconstruct
        from titok.eval.scoring import FeatureScorer, distance
        from titok.metrics.codebook import CodebookUsage
        from titok.metrics.fid import all_reduce_sum
        from titok.metrics.image import psnr, ssim

        was_training, device, shard = tokenizer.training, tokenizer.device, current_shard()
        tokenizer.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # images, PSNR, SSIM
        usage = CodebookUsage(tokenizer.codebook_size, device) if tokenizer.codebook_size else None
        real = fake = None
        if self.extractor is not None:
            real, fake = (FeatureScorer(self.extractor, with_is=False) for _ in range(2))
        generator = torch.Generator(device).manual_seed(shard.rank)
        for batch in loader(self.dataset, shard.part(len(self.dataset)), self.cfg.batch_size, 0):
            if not len(batch.images):
                continue
            images = batch.images.to(device)
            recon, codes = reconstruct(tokenizer, images, generator)
            x, y = round_to_uint8(recon), round_to_uint8(images)
            sums += torch.stack(
                [torch.tensor(len(x)), psnr(x / 255.0, y / 255.0).sum().cpu(), ssim(x / 255.0, y / 255.0).sum().cpu()]
            ).to(sums)
            if usage is not None:
                usage.update(codes)
            if real is not None:
                real.update(y, batch.indices)
                fake.update(x, batch.indices)
        tokenizer.train(was_training)
        all_reduce_sum([sums])
        values = {"heldout_psnr": float(sums[1] / sums[0]), "heldout_ssim": float(sums[2] / sums[0])}
        if real is not None:
            meta = {"heldout": self.describe}
            real_stats, fake_stats = real.finish(meta)[0], fake.finish(meta)[0]
            if real_stats is not None and fake_stats is not None:  # None below 2 images
                values[f"heldout_r{self.extractor.score_name}"] = distance(real_stats, fake_stats)
        if usage is not None:
            stats = usage.all_reduce().stats()
            values.update(
                heldout_usage=stats.usage, heldout_perplexity=2.0**stats.entropy, heldout_dead=float(stats.dead)
            )
        return values


def plot_curves(metrics_file: Path, out: Path) -> Path | None:
    """Learning curves of the ``heldout_*`` values in ``metrics_file`` (one panel each) as ``out``; None when
    matplotlib is missing or nothing was scored yet."""
    rows = []
    for line in metrics_file.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
        if any(k.startswith("heldout_") for k in entry):
            rows.append(entry)
    if not rows:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("held-out curves are not drawn: matplotlib is missing (%s)", install_hint("train"))
        return None
    keys = sorted({k for r in rows for k in r if k.startswith("heldout_")})
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", markersize=3)
        ax.set_title(key.removeprefix("heldout_"), fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
    return out
