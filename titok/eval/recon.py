"""Reconstruction evaluation: images -> tokenizer -> images; rFID, IS, PSNR, SSIM, LPIPS, codebook usage."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from titok.data.images import round_to_uint8
from titok.eval.dist import current_shard, gather_lists
from titok.eval.report import EvalReport, Metric
from titok.eval.scoring import (
    IS_SPLITS,
    FeatureScorer,
    count_warning,
    distance,
    is_metrics,
    is_warning,
    preprocessing,
)
from titok.metrics.codebook import CodebookUsage
from titok.metrics.extractors import FeatureExtractor
from titok.metrics.fid import all_reduce_sum
from titok.metrics.image import psnr, ssim
from titok.metrics.perceptual import load_lpips, lpips_distance

logger = logging.getLogger(__name__)


@dataclass
class ReconOptions:
    batch_size: int = 64
    workers: int = 0
    lpips_net: str | None = "alex"  # None: not computed
    seed: int = 0  # draws of a VAE posterior
    progress: bool = True


class _Sums:
    """Per-image metric sums, float64, summed over processes at the end."""

    def __init__(self, device: torch.device) -> None:
        self.values = torch.zeros(4, dtype=torch.float64, device=device)  # count, PSNR, SSIM, LPIPS

    def add(self, psnr_db: torch.Tensor, ssim_: torch.Tensor, lpips_: torch.Tensor | None) -> None:
        self.values[0] += len(psnr_db)
        self.values[1] += psnr_db.sum().to(self.values)
        self.values[2] += ssim_.sum().to(self.values)
        if lpips_ is not None:
            self.values[3] += lpips_.sum().to(self.values)

    def means(self) -> tuple[float, float, float]:
        all_reduce_sum([self.values])
        n = float(self.values[0])
        return float(self.values[1]) / n, float(self.values[2]) / n, float(self.values[3]) / n


@torch.no_grad()
def reconstruct(
    tokenizer, images: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (B, 3, S, S) in [0, 1] -> (reconstructions (B, 3, S, S) unclamped, codes (B, N) or None for a VAE,
    whose latents are posterior samples drawn with ``generator``, as the reference does)."""
    if tokenizer.codebook_size is None:
        latents = tokenizer.encode(images.to(tokenizer.device)).sample(generator)
        return tokenizer.decode(latents), None
    codes = tokenizer.tokenize(images)
    return tokenizer.detokenize(codes), codes


@dataclass
class _Accumulators:
    real: FeatureScorer
    fake: FeatureScorer
    sums: _Sums
    usage: CodebookUsage | None
    lpips: torch.nn.Module | None
    skipped: list[str]
    is_score: tuple[float, float] | None = None  # set by _metrics

    def update(self, images: torch.Tensor, recon: torch.Tensor, codes: torch.Tensor | None, indices: torch.Tensor):
        real8, fake8 = round_to_uint8(images), round_to_uint8(recon)
        self.real.update(real8, indices)
        self.fake.update(fake8, indices)
        x, y = fake8.double() / 255, real8.double() / 255
        self.sums.add(psnr(x, y), ssim(x, y), lpips_distance(self.lpips, x, y) if self.lpips is not None else None)
        if self.usage is not None:
            self.usage.update(codes)


def evaluate_reconstruction(
    tokenizer,
    dataset: Dataset,
    extractor: FeatureExtractor,
    options: ReconOptions | None = None,
    describe_data: str = "",
) -> EvalReport:
    """Reconstruct every image of ``dataset`` (items ``(image (3, S, S) in [0, 1] | None, index, error)``, see
    :mod:`titok.eval.data`) and score the reconstructions against the originals. Under torch.distributed each
    process takes a contiguous slice and the sums are merged, so every process returns the same report."""
    from titok.eval.data import loader

    opts = options or ReconOptions()
    shard, total, device = current_shard(), len(dataset), tokenizer.device
    lpips_module, lpips_reason = load_lpips(opts.lpips_net, device) if opts.lpips_net else (None, "switched off")
    acc = _Accumulators(
        FeatureScorer(extractor, with_is=False),
        FeatureScorer(extractor),
        _Sums(device),
        CodebookUsage(tokenizer.codebook_size, device) if tokenizer.codebook_size else None,
        lpips_module,
        [],
    )
    generator = torch.Generator(device).manual_seed(opts.seed + shard.rank)
    batches = loader(dataset, shard.part(total), opts.batch_size, opts.workers)
    quiet = None if opts.progress and shard.rank == 0 else True  # None: a bar on a terminal only
    for batch in tqdm(batches, desc="eval recon", unit="batch", disable=quiet):
        acc.skipped += batch.errors
        if len(batch.images):
            images = batch.images.to(device)
            acc.update(images, *reconstruct(tokenizer, images, generator), batch.indices)
    metrics, count = _metrics(acc, extractor, tokenizer.image_size, opts.lpips_net or "", lpips_reason)
    skipped = list(getattr(dataset, "skipped", [])) + gather_lists(acc.skipped)  # the search's, then the reads'
    if count == 0:
        shown = "; ".join(skipped[:3]) + (f"; ... ({len(skipped)} in all)" if len(skipped) > 3 else "")
        raise ValueError(f"no image of {describe_data or 'the data'} could be read: {shown or 'none given'}")
    protocol = {
        "data": describe_data,
        "resolution": tokenizer.image_size,
        "preprocessing": preprocessing(tokenizer.image_size),
        **extractor.describe(),
        "is_splits": IS_SPLITS,
        "psnr_ssim_lpips_on": "uint8-rounded reconstructions vs uint8-rounded originals",
        "vae_latents": f"posterior samples, torch.Generator seeded {opts.seed} + rank" if acc.usage is None else "n/a",
        "processes": shard.world,
    }
    warnings = count_warning(f"r{extractor.score_name}", count)
    warnings += is_warning(extractor, acc.is_score, count)
    if skipped:
        warnings.append(
            f"{len(skipped)} input(s) skipped (listed under 'skipped'); every number is over the {count:,} images "
            "read, the IS splits too"
        )
    return EvalReport("recon", count, metrics, protocol, warnings, skipped)


def _metrics(
    acc: _Accumulators, extractor: FeatureExtractor, size: int, lpips_net: str, lpips_reason: str
) -> tuple[list[Metric], int]:
    """Merge the accumulators over processes; the metrics in table order and the number of images scored."""
    meta = {"resolution": str(size), "preprocessing": preprocessing(size)}
    real_stats, _, count = acc.real.finish(meta)
    fake_stats, score, _ = acc.fake.finish(meta)
    acc.is_score = score
    if count == 0:  # the same in every process: nothing to merge
        return [], 0
    mean_psnr, mean_ssim, mean_lpips = acc.sums.means()
    name = f"r{extractor.score_name}"
    if real_stats is None or fake_stats is None:
        metrics = [Metric(name, None, note=f"a covariance needs at least 2 images, {count} scored")]
    else:
        metrics = [Metric(name, distance(real_stats, fake_stats))]
    metrics += is_metrics(extractor, score, acc.fake.no_is_reason)
    metrics += [
        Metric("PSNR", mean_psnr, "dB", "mean over images"),
        Metric("SSIM", mean_ssim, "", "Gaussian 11x11, sigma 1.5, mean over images and channels"),
        Metric("LPIPS", mean_lpips, "", lpips_net)
        if acc.lpips is not None
        else Metric("LPIPS", None, "", lpips_reason),
    ]
    if acc.usage is not None:
        acc.usage.all_reduce()
        metrics += [
            Metric("codebook usage", acc.usage.usage(), "", f"fraction of {acc.usage.codebook_size} codes used"),
            Metric("codebook entropy", acc.usage.entropy(), "bits"),
        ]
    return metrics, count
