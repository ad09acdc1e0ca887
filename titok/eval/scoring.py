"""Shared pieces of the evaluations: uint8 conversion, streamed feature scores, and the checks that warn."""

from __future__ import annotations

import logging

import torch

from titok.eval.dist import gather_lists
from titok.eval.report import Metric
from titok.metrics.extractors import INCEPTION_SHA256, FeatureExtractor
from titok.metrics.fid import FeatureStats, InceptionScore, Statistics, frechet_distance

logger = logging.getLogger(__name__)

FULL_COUNT = 50_000  # the sample count of published FIDs
IS_SPLITS = 10


def preprocessing(size: int) -> str:
    return (
        f"RGB; shorter side resized to {size} (bicubic, antialiased), center crop {size}x{size}; "
        "uint8 = round(clamp(x, 0, 1) * 255)"
    )


class FeatureScorer:
    """Streams uint8 batches through an extractor into feature statistics and, for classifiers, an Inception
    Score over the samples scored (10 contiguous splits of them). Accumulators are made on the first batch."""

    def __init__(self, extractor: FeatureExtractor, with_is: bool = True) -> None:
        self.extractor, self.with_is = extractor, with_is
        self.no_is_reason = "" if with_is else "not asked for"
        self.stats: FeatureStats | None = None
        self.inception_score: InceptionScore | None = None

    @torch.no_grad()
    def update(self, images: torch.Tensor, indices: torch.Tensor) -> None:
        """uint8 images (B, 3, H, W) that are samples ``indices`` (B,) of the run (their order for the IS splits)."""
        if len(images) == 0:
            return
        out = self.extractor(images)
        if self.stats is None:
            self.stats = FeatureStats(out.features.shape[1], out.features.device)
            if self.with_is and out.logits is not None:
                self.inception_score = InceptionScore(out.logits.shape[1], IS_SPLITS)
            elif self.with_is:
                self.no_is_reason = f"{self.extractor.name} has no class logits"
        self.stats.update(out.features)
        if self.inception_score is not None:
            self.inception_score.update(out.logits, indices)

    def finish(self, meta: dict[str, str]) -> tuple[Statistics | None, tuple[float, float] | None, int]:
        """Merge over processes: the statistics (with ``meta`` + the extractor's identity; None below 2 samples),
        (IS, IS std) or None (``no_is_reason`` says why), and the number of samples scored."""
        self._agree_on_shapes()
        if self.stats is None:  # no process scored anything
            return None, None, 0
        stats = self.stats.all_reduce()
        count, score = int(stats.count), None
        if self.inception_score is not None:
            self.inception_score.all_reduce()
            if count >= IS_SPLITS:
                score = self.inception_score.compute()
            else:
                self.no_is_reason = f"fewer than {IS_SPLITS} images scored ({count})"
        elif self.with_is and not self.no_is_reason:
            self.no_is_reason = "no image scored"
        if count < 2:
            return None, score, count
        return stats.compute({**meta, **self.extractor.describe()}), score, count

    def _agree_on_shapes(self) -> None:
        """Give a process that scored nothing (all its images unreadable) empty accumulators of the others' shapes,
        so that the merge over processes still matches."""
        mine = (
            self.stats.dim if self.stats else None,
            self.inception_score.num_classes if self.inception_score else None,
        )
        shapes = [s for s in gather_lists([mine]) if s[0] is not None]
        if self.stats is None and shapes:
            self.stats = FeatureStats(shapes[0][0], self.extractor.device)
            if self.with_is and shapes[0][1] is not None:
                self.inception_score = InceptionScore(shapes[0][1], IS_SPLITS)


def check_reference(reference: Statistics, ours: dict[str, str], feature_dim: int | None = None) -> list[str]:
    """Compare reference statistics with the metadata ``ours`` (extractor, extractor_sha256, resolution,
    preprocessing) of the samples: ``ValueError`` if they come from different extractors, warnings for any other
    mismatch."""
    ref = reference.meta
    if feature_dim is not None and reference.mu.shape[0] != feature_dim:
        raise ValueError(
            f"the reference statistics are of {reference.mu.shape[0]}-d features, the samples' of {feature_dim}-d "
            f"({ours['extractor']}): they come from different extractors"
        )
    warnings = []
    if "extractor" not in ref:
        warnings.append(
            f"the reference statistics carry no extractor metadata: make sure they come from {ours['extractor']} "
            f"(sha256 {ours['extractor_sha256'][:12]}) and this preprocessing"
        )
    elif (ref["extractor"], ref.get("extractor_sha256")) != (ours["extractor"], ours["extractor_sha256"]):
        raise ValueError(
            f"the reference statistics were computed with {ref['extractor']} (sha256 "
            f"{ref.get('extractor_sha256', '?')[:12]}), the samples with {ours['extractor']} (sha256 "
            f"{ours['extractor_sha256'][:12]}): the distance would be meaningless"
        )
    for key in ("resolution", "preprocessing"):
        if key in ref and ref[key] != ours.get(key):
            warnings.append(f"the reference statistics' {key} is {ref[key]!r}, the samples' {ours.get(key)!r}")
    if ours["extractor"].startswith("inception") and ours["extractor_sha256"] != INCEPTION_SHA256:
        warnings.append("the Inception weights are not the standard FID weights: this is not an FID")
    return warnings


def is_metrics(extractor: FeatureExtractor, score: tuple[float, float] | None, reason: str) -> list[Metric]:
    """The Inception Score (or a classifier's IS-style score) and its spread over the splits, or why there is none."""
    name = "IS" if extractor.score_name == "FID" else f"IS-{extractor.name}"
    if score is None:
        return [Metric(name, None, note=reason)]
    return [Metric(name, score[0], "", f"mean over {IS_SPLITS} splits"), Metric(f"{name} std", score[1])]


def count_warning(kind: str, count: int) -> list[str]:
    if count >= FULL_COUNT:
        return []
    return [
        f"{kind} from {count:,} images (< {FULL_COUNT:,}): Fréchet distances are biased upward at small counts and "
        "not comparable with published 50k numbers"
    ]


def distance(reference: Statistics, samples: Statistics) -> float:
    return frechet_distance(reference.mu, reference.sigma, samples.mu, samples.sigma)
