"""Training data for tokenizers: webdataset shards (patterns, determinism, unreadable samples, exact resume through
the runtime with several loader workers) and cached teacher codes."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from shards import write_shards
from tiny import TINY_VQGAN

import titok
from titok.data.build import DataConfig, build_dataset
from titok.data.tokens import WithCachedCodes
from titok.data.transforms import Preprocess
from titok.data.webdataset import ShardStream, expand_shards, shuffled
from titok.train.config import RunConfig
from titok.train.pretokenize import pretokenize
from titok.train.runtime import start


def test_shard_patterns_expand(tmp_path):
    paths = [str(p) for p in write_shards(tmp_path / "s", 3, 1)]
    assert expand_shards(str(tmp_path / "s" / "train-{0000..0002}.tar")) == paths
    assert expand_shards(str(tmp_path / "s" / "train-*.tar")) == paths
    assert expand_shards(str(tmp_path / "s")) == paths
    assert expand_shards(f"{paths[2]}::{paths[0]}") == [paths[2], paths[0]]
    with pytest.raises(FileNotFoundError, match=r"train-0003\.tar matches no shard file"):
        expand_shards(str(tmp_path / "s" / "train-{0002..0003}.tar"))
    with pytest.raises(ValueError, match=r"data\.limit is not supported for webdataset"):
        build_dataset(DataConfig(source="webdataset", path=paths[0], limit=3), 32)


def _take(stream, n):
    it = iter(stream.assign(rank=0, world=1, workers=1, roles=[0], cursors=[[0, 0, 0]]))
    return [next(it) for _ in range(n)]


def test_stream_is_deterministic_and_skips_unreadable_samples(tmp_path, caplog):
    paths = write_shards(tmp_path, 2, 4, corrupt=True)
    with open(paths[1], "r+b") as f:  # cut the second shard inside its third member
        f.truncate(3 * 1024 + 200)
    stream = ShardStream([str(p) for p in paths], Preprocess(32, random_crop=True, random_flip=True), seed=5)
    with caplog.at_level(logging.WARNING):
        a, b = _take(stream, 12), _take(stream, 12)
    assert all(torch.equal(x[0], y[0]) and x[1:3] == y[1:3] for x, y in zip(a, b))
    assert a[0][0].shape == (3, 32, 32) and {x[1] for x in a} <= set(range(10))
    first_epoch = [x for x in a if x[3][1] == 0]
    # shard 0: 4 images + 2 bad samples; shard 1: one full sample before the cut, and the cut counted once
    assert len(first_epoch) == 5 and sum(x[2] for x in first_epoch) == 3
    assert "broken0 in" in caplog.text and "no image" in caplog.text


@pytest.mark.parametrize("shards", [1, 4])  # fewer shards than readers: split by sample; more: split by shard
@pytest.mark.parametrize("buffer", [1000, 2])  # a buffer that holds the shard, and one far smaller than it
def test_a_stream_resumes_exactly_through_the_runtime(tmp_path, shards, buffer, caplog):
    write_shards(tmp_path / "data", shards, 12 // shards)
    cfg = DataConfig(source="webdataset", path=str(tmp_path / "data"), shuffle_buffer=buffer)
    stream = build_dataset(cfg, 32, seed=3)
    run = RunConfig(output_dir=str(tmp_path / "a"), batch_size=3, num_workers=2, tensorboard=False)
    rt = start(run, {})
    with caplog.at_level(logging.WARNING):
        batches = rt.batches(stream)
        straight = [next(batches) for _ in range(9)]
    assert ("1 shard(s) for 2 readers" in caplog.text) == (shards == 1)
    rt = start(run.replace(output_dir=str(tmp_path / "b")), {})
    batches = rt.batches(stream)
    for _ in range(5):
        next(batches)
    state, position = rt.data.stream_state(), rt.data.position
    assert position == 15
    assert state["kind"] == "stream" and state["workers"] == 2 and len(state["cursors"]) == 2
    rt = start(run.replace(output_dir=str(tmp_path / "c")), {})
    rt.data.resumed, rt.data.position = state, position
    resumed = rt.batches(stream)
    for expected in straight[5:]:
        got = next(resumed)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_cached_teacher_codes_follow_the_flip(tmp_path):
    torch.manual_seed(0)
    teacher = titok.models.build_model(TINY_VQGAN).eval()
    data = build_dataset(DataConfig(split="test", limit=12), 32, train=False)
    pretokenize(
        teacher, data, tmp_path / "codes", tokenizer_name="t", data_description={}, flip_copies=True, num_workers=0
    )
    cached = WithCachedCodes(data, tmp_path / "codes", flip=True)
    flips = 0
    for index, seed in [(0, 11), (5, 12), (5, 13), (11, 14), (3, 15), (7, 16)]:
        image, _, _, codes = cached[(index, seed)]
        # batched and single-image arithmetic may round differently: a near-tie may pick another code, rarely
        assert (codes != teacher.tokenize(image[None])[0]).float().mean() <= 0.02
        flips += not torch.equal(image, data[index][0])
    assert 0 < flips < 6  # some items were mirrored, some not
    with pytest.raises(ValueError, match="written from 12 image"):
        WithCachedCodes(build_dataset(DataConfig(split="test", limit=10), 32, train=False), tmp_path / "codes")
    pretokenize(teacher, data, tmp_path / "plain", tokenizer_name="t", data_description={}, num_workers=0)
    with pytest.raises(ValueError, match="no flipped copies"):
        WithCachedCodes(data, tmp_path / "plain", flip=True)
    assert np.array_equal(WithCachedCodes(data, tmp_path / "plain")[4][3], teacher.tokenize(data[4][0][None])[0])


class _Counted:
    """An iterable that counts the items taken from it."""

    def __init__(self, n: int) -> None:
        self.n, self.taken = n, 0

    def __iter__(self):
        for i in range(self.n):
            self.taken += 1
            yield i


@pytest.mark.parametrize(("n", "size"), [(50, 8), (50, 1), (7, 8), (8, 8)])
def test_the_shuffle_buffer_never_holds_more_than_its_size(n, size):
    source = _Counted(n)
    out, held = [], []
    for item in shuffled(source, size, torch.Generator().manual_seed(3)):
        held.append(source.taken - len(out))  # items taken and not yet given out, this one included
        out.append(item)
    assert sorted(out) == list(range(n))
    assert max(held) <= size + 1  # the buffer and the one arriving
    again = list(shuffled(range(n), size, torch.Generator().manual_seed(3)))
    assert again == out
    if n <= size:  # a shard that fits is a uniform permutation, as when readers held whole shards
        assert out == torch.randperm(n, generator=torch.Generator().manual_seed(3)).tolist()
    elif size > 1:
        assert out != list(range(n))
    with pytest.raises(ValueError, match="at least 1 item"):
        next(shuffled(range(3), 0, torch.Generator()))


def test_readers_of_shards_far_larger_than_the_buffer_hold_little_memory(tmp_path):
    """Two readers over shards of ~2.4 MB each (120 samples with 20 KB of data) and a buffer of 8: what the readers
    hold stays near 8 samples, not a shard (holding a shard per reader took > 4.8 MB)."""
    import tracemalloc

    paths = [str(p) for p in write_shards(tmp_path, 2, 120, payload=20_000)]
    stream = ShardStream(paths, Preprocess(32, random_crop=False, random_flip=False), seed=1, shuffle_buffer=8)
    readers = [
        iter(stream.assign(rank=0, world=1, workers=2, roles=[0, 1], cursors=[[0, 0, 0]] * 2)._consume(r, 0, 0, 0))
        for r in (0, 1)
    ]
    next(readers[0]), next(readers[1])  # imports and first allocations outside the measurement
    tracemalloc.start()
    try:
        for _ in range(150):  # both readers through their whole shard and into the next epoch
            next(readers[0]), next(readers[1])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_500_000, peak  # 2 readers x (8 + 1) samples x 20 KB = 360 KB, plus decoding
