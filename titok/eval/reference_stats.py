"""Reference statistics for gFID: read from an ``.npz`` of ``mu``/``sigma``, or computed from real images (any data
source: a folder, webdataset shards, an ADM reference batch's ``arr_0``, Fashion-MNIST) and cached under a key of
source, extractor and preprocessing."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import zipfile
from pathlib import Path

from tqdm import tqdm

from titok.data.images import round_to_uint8
from titok.data.sources import data_config, describe, source_files
from titok.eval.data import loader, open_source
from titok.eval.dist import barrier, current_shard, gather_lists
from titok.eval.scoring import FeatureScorer, preprocessing
from titok.io import check_npz
from titok.metrics.extractors import FeatureExtractor
from titok.metrics.fid import Statistics

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$TITOK_CACHE/stats``, else ``~/.cache/titok/stats``."""
    return Path(os.environ.get("TITOK_CACHE", Path.home() / ".cache" / "titok")) / "stats"


def image_statistics(
    spec: str, extractor: FeatureExtractor, size: int, batch_size: int = 64, workers: int = 0, progress: bool = True
) -> tuple[Statistics, list[str]]:
    """Statistics of every image of ``spec`` (see :func:`titok.eval.data.open_source`) preprocessed to ``size``,
    sharded over processes and merged; and the messages of the files that could not be read."""
    dataset, described = open_source(spec, size)
    shard, scorer, skipped = current_shard(), FeatureScorer(extractor, with_is=False), []
    batches = loader(dataset, shard.part(len(dataset)), batch_size, workers)
    quiet = None if progress and shard.rank == 0 else True  # None: a bar on a terminal only
    for batch in tqdm(batches, desc="reference statistics", unit="batch", disable=quiet):
        skipped += batch.errors
        scorer.update(round_to_uint8(batch.images.to(extractor.device)), batch.indices)
    stats, _, count = scorer.finish(
        {"source": described, "resolution": str(size), "preprocessing": preprocessing(size)}
    )
    skipped = list(getattr(dataset, "skipped", [])) + gather_lists(skipped)
    if stats is None:
        shown = "; ".join(skipped[:3]) + (f"; ... ({len(skipped)} in all)" if len(skipped) > 3 else "")
        raise ValueError(f"statistics need at least 2 readable images of {spec}, got {count}: {shown}")
    return stats, skipped


def _fingerprint(files: list[Path]) -> str:
    """Changes when the images change: count, total size and newest modification time of their files."""
    stats = [f.stat() for f in files]
    return f"{len(stats)}:{sum(s.st_size for s in stats)}:{max((s.st_mtime_ns for s in stats), default=0)}"


def _holds_statistics(path: Path) -> bool:
    """Whether an ``.npz`` holds ``mu``/``sigma`` to use as they are (an ``arr_0`` of images wins: the statistics
    inside an ADM reference batch come from TensorFlow's Inception graph, not from this extractor)."""
    check_npz(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"cannot read {path} (damaged or truncated): {e}") from None
    return "arr_0.npy" not in names and {"mu.npy", "sigma.npy"} <= names


def reference_statistics(
    spec: str,
    extractor: FeatureExtractor,
    size: int,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    workers: int = 0,
    progress: bool = True,
) -> Statistics:
    """The statistics ``spec`` names: an ``.npz`` with ``mu`` and ``sigma`` as it is; otherwise those of its
    images at ``size``, computed once and cached in ``cache_dir`` (default :func:`default_cache_dir`)."""
    path = Path(spec)
    if path.suffix == ".npz" and path.is_file() and _holds_statistics(path):
        return Statistics.load(path)
    cfg = data_config(spec)
    key = {"source": describe(cfg), "files": _fingerprint(source_files(cfg)), "size": size, **extractor.describe()}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem or "images")
    cached = Path(cache_dir or default_cache_dir()) / f"{name}-{extractor.name}-{size}-{digest}.npz"
    if cached.is_file():
        logger.info("reference statistics from the cache: %s", cached)
        return Statistics.load(cached)
    stats, skipped = image_statistics(spec, extractor, size, batch_size, workers, progress)
    if skipped:
        logger.warning("%d unreadable reference image(s) skipped, e.g. %s", len(skipped), skipped[0])
    if current_shard().rank == 0:
        stats.save(cached)
        logger.info("cached the reference statistics in %s", cached)
    barrier()
    return stats
