"""Generation evaluation: class-balanced samples from a MaskGIT generator + tokenizer; gFID and IS against
reference statistics, with the samples optionally exported for the ADM evaluator."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm import tqdm

from titok.data.images import round_to_uint8
from titok.eval.dist import Shard, barrier, current_shard
from titok.eval.export import NpzWriter, disk_check, merge_shards, shard_path
from titok.eval.report import EvalReport, Metric
from titok.eval.scoring import (
    FULL_COUNT,
    IS_SPLITS,
    FeatureScorer,
    check_reference,
    count_warning,
    distance,
    is_metrics,
    is_warning,
    preprocessing,
)
from titok.metrics.extractors import FeatureExtractor
from titok.metrics.fid import Statistics
from titok.sampling import SamplingConfig

logger = logging.getLogger(__name__)


@dataclass
class GenOptions:
    num: int = FULL_COUNT
    batch_size: int = 125
    seed: int = 42
    sampling: SamplingConfig | None = None  # None: the generator's own (generator.config.sampling)
    export_npz: str | None = None
    progress: bool = True  # progress bars (on a terminal)
    say: Callable[[str], None] = logger.info  # what the job is about to do, and how long it will take


def balanced_labels(num: int, num_classes: int) -> torch.Tensor:
    """Class ids (num,) int64: ``0, 1, ..., K-1`` repeated (the reference's list), so every class gets
    ``num // K`` samples and the first ``num % K`` classes one more."""
    return torch.arange(num, dtype=torch.long) % num_classes


def check_pair(tokenizer, generator) -> None:
    """Raise ``ValueError`` unless ``generator`` makes codes that ``tokenizer`` decodes."""
    if tokenizer.codebook_size is None:
        raise ValueError("the tokenizer is continuous (VAE): MaskGIT generators sample discrete codes")
    theirs, ours = (generator.num_tokens, generator.codebook_size), (tokenizer.num_tokens, tokenizer.codebook_size)
    if theirs != ours:
        raise ValueError(
            f"the generator makes {theirs[0]} codes of {theirs[1]}, the tokenizer reads {ours[0]} codes of {ours[1]}"
        )


def _sample_and_score(
    tokenizer, generator, scorer: FeatureScorer, settings: SamplingConfig, opts: GenOptions, shard: Shard
) -> None:
    """Make this process's samples batch by batch into ``scorer`` (and the export shard, if asked)."""
    size = tokenizer.image_size
    labels, mine = balanced_labels(opts.num, generator.config.num_classes), shard.part(opts.num)
    writer = NpzWriter(shard_path(opts.export_npz, *shard), len(mine), size, size) if opts.export_npz else None
    g = torch.Generator(generator.device).manual_seed(opts.seed + shard.rank)
    starts = range(mine.start, mine.stop, opts.batch_size)
    eta = _Estimate(opts, shard, len(mine))
    quiet = None if opts.progress and shard.rank == 0 else True  # None: bars on a terminal only
    try:
        for start in tqdm(starts, desc="eval gen", unit="batch", disable=quiet):
            indices = torch.arange(start, min(start + opts.batch_size, mine.stop))
            codes = generator.generate(labels[indices], sampling=settings, generator=g)
            images = round_to_uint8(tokenizer.detokenize(codes))
            scorer.update(images, indices)
            if writer is not None:
                writer.write(images.permute(0, 2, 3, 1).cpu().numpy(), labels[indices].numpy())
            eta.batch_done(len(indices))
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()


class _Estimate:
    """Says, on the main process, how many samples the job makes before it starts and, once the first batch is
    timed, about how long the whole will take at that speed (every process being as fast)."""

    def __init__(self, opts: GenOptions, shard: Shard, mine: int) -> None:
        self.say = opts.say if shard.rank == 0 else None
        self.num, self.world, self.mine = opts.num, shard.world, mine
        self.done, self.start = 0, time.perf_counter()
        processes = f" on {shard.world} processes" if shard.world > 1 else ""
        if self.say is not None:
            self.say(f"generating {opts.num:,} samples{processes} in batches of {opts.batch_size}")

    def batch_done(self, n: int) -> None:
        first, self.done = self.done == 0, self.done + n
        if not first or self.say is None or self.done >= self.mine:
            return
        rate = n / max(time.perf_counter() - self.start, 1e-9)  # this process's samples per second
        seconds = self.mine / rate
        took = f"about {seconds / 60:,.0f} min" if seconds >= 90 else f"about {max(1, round(seconds))} s"
        self.say(
            f"generating {self.num:,} samples: {took} at {rate * self.world:,.1f} samples/s "
            f"(timed on the first batch of {n})"
        )


def evaluate_generation(
    tokenizer, generator, extractor: FeatureExtractor, reference: Statistics, options: GenOptions | None = None
) -> EvalReport:
    """Generate ``options.num`` class-balanced samples and score them against ``reference``. Under torch.distributed
    each process makes the contiguous slice ``[r N / W, (r + 1) N / W)`` of the label list with the seed
    ``seed + r``; statistics are merged, so every process returns the same report."""
    opts = options or GenOptions()
    check_pair(tokenizer, generator)
    size, shard = tokenizer.image_size, current_shard()
    meta = {"resolution": str(size), "preprocessing": preprocessing(size)}
    check_reference(reference, {**meta, **extractor.describe()})  # fail before sampling, not after
    if opts.export_npz:
        disk_check(opts.export_npz, opts.num * size * size * 3 * (1 if shard.world == 1 else 2))
    settings = opts.sampling or generator.config.sampling
    scorer = FeatureScorer(extractor)
    _sample_and_score(tokenizer, generator, scorer, settings, opts, shard)
    stats, score, _ = scorer.finish(meta)
    if stats is None:  # --num is at least 2, and a generator makes every sample it is asked for
        raise ValueError(f"generation made {opts.num} sample(s); a covariance needs at least 2")
    if opts.export_npz and shard.world > 1:
        barrier()
        if shard.rank == 0:
            merge_shards(opts.export_npz, [shard_path(opts.export_npz, r, shard.world) for r in range(shard.world)])
        barrier()
    against = f"vs {reference.count:,} reference images" if reference.count else "vs the reference statistics"
    metrics = [Metric(f"g{extractor.score_name}", distance(reference, stats), "", against)]
    metrics += is_metrics(extractor, score, scorer.no_is_reason)
    num_classes = generator.config.num_classes
    warnings = check_reference(reference, stats.meta, stats.mu.shape[0])
    warnings += count_warning(f"g{extractor.score_name}", opts.num)
    warnings += is_warning(extractor, score, stats.count)
    if opts.num % num_classes:
        warnings.append(
            f"--num {opts.num} is not a multiple of the {num_classes} classes: classes are unbalanced "
            f"({opts.num // num_classes} or {opts.num // num_classes + 1} samples each)"
        )
    protocol = {
        "num_samples": opts.num,
        "num_classes": num_classes,
        "labels": "0..K-1 repeated; process r of W takes samples [r*N/W, (r+1)*N/W)",
        "seed": opts.seed,
        "seeding": "torch.Generator on the sampling device, seeded seed + rank",
        "sampling": settings.to_dict(),
        "resolution": size,
        "preprocessing": "generated images, uint8 = round(clamp(x, 0, 1) * 255)",
        **extractor.describe(),
        "is_splits": IS_SPLITS,
        "reference": reference.meta,
        "reference_count": reference.count,
        "processes": shard.world,
        "export_npz": opts.export_npz,
    }
    return EvalReport("gen", stats.count, metrics, protocol, warnings)
