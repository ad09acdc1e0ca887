"""Peak memory of webdataset readers: a bounded shuffle buffer against holding whole shards.

    python benchmarks/stream_memory.py                                   # 4 shards of 128 MB, 2 readers
    python benchmarks/stream_memory.py --per-shard 2000 --payload-kb 500  # ImageNet-like 1 GB shards

Writes tar shards of Fashion-MNIST-sized PNGs, each sample padded with ``--payload-kb`` of other data (as large
images are), then for each buffer size runs a 2-reader stream (a DataLoader with 2 worker processes, as a training
process reads it) in a fresh process through ``--items`` samples, and reports the largest growth of a reader's
resident memory (its ``VmHWM`` minus its ``VmRSS`` when it began reading; Linux) and the samples per second.
``whole`` makes the buffer as large as a shard: the reader then holds a whole shard, as readers did before the
buffer existed.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path


def write_shards(root: Path, shards: int, per_shard: int, payload: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for s in range(shards):
        path = root / f"train-{s:04d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(per_shard):
                png = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(png, format="PNG")
                entries = {"png": png.getvalue(), "cls": str(i % 10).encode(), "bin": bytes(payload)}
                for ext, data in entries.items():
                    info = tarfile.TarInfo(f"{s:04d}{i:07d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def _memory(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (the peak so far) of this process, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(args: argparse.Namespace) -> None:
    """One measurement, in this fresh process: print a JSON row."""
    import torch
    from torch.utils.data import DataLoader, IterableDataset

    from titok.data.transforms import Preprocess
    from titok.data.webdataset import ShardStream

    class Measured(IterableDataset):
        """The stream's items, each with its reader's peak resident memory above what it held when it began."""

        def __init__(self, stream: IterableDataset) -> None:
            self.stream = stream

        def __iter__(self):
            start = _memory("VmRSS")
            for item in self.stream:
                yield (*item, _memory("VmHWM") - start)

    torch.set_num_threads(1)
    paths = sorted(str(p) for p in Path(args.dir).glob("*.tar"))
    stream = ShardStream(paths, Preprocess(32, random_crop=False, random_flip=False), shuffle_buffer=args.buffer)
    readers = Measured(stream.assign(rank=0, world=1, workers=2, roles=[0, 1], cursors=[[0, 0, 0]] * 2))
    batches, start = iter(DataLoader(readers, batch_size=16, num_workers=2)), time.perf_counter()
    taken, peak = 0, 0
    while taken < args.items:
        batch = next(batches)
        taken, peak = taken + len(batch[0]), max(peak, int(batch[-1].max()))
    seconds = time.perf_counter() - start
    print(json.dumps({"peak_reader_mb": peak / 2**20, "samples_per_s": taken / seconds}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--per-shard", type=int, default=2000)
    p.add_argument("--payload-kb", type=float, default=64)
    p.add_argument("--buffers", nargs="+", default=["1", "100", "1000", "whole"], help="sizes, or whole (a shard)")
    p.add_argument("--items", type=int, help="samples to read (default: two shards' worth)")
    p.add_argument("-o", "--output", help="also write the rows as JSON here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    p.add_argument("--buffer", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    items = args.items or 2 * args.per_shard
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_shards(Path(tmp), args.shards, args.per_shard, int(args.payload_kb * 1024))
        shard_mb = sum(p.stat().st_size for p in Path(tmp).glob("*.tar")) / args.shards / 2**20
        print(f"{args.shards} shards of {args.per_shard} samples ({shard_mb:.1f} MB each), 2 readers, {items} samples")
        print(f"{'buffer':>8} {'peak MB per reader':>19} {'samples/s':>10}")
        for spec in args.buffers:
            buffer = args.per_shard if spec == "whole" else int(spec)
            cmd = [sys.executable, __file__, "--child", "--dir", tmp, "--buffer", str(buffer), "--items", str(items)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            row = {"buffer": spec, "shard_mb": shard_mb, **json.loads(out.splitlines()[-1])}
            rows.append(row)
            print(f"{spec:>8} {row['peak_reader_mb']:>19.1f} {row['samples_per_s']:>10.0f}")
    if args.output:
        Path(args.output).write_text(json.dumps({"results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
