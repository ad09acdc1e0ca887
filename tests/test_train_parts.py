"""The pieces every recipe shares: masking and its loss, LR schedule, weight-decay groups, EMA, the resumable
sampler, seeded augmentation, RNG capture, checkpoints and recipe overrides."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from titok.data.sampler import ResumableSampler
from titok.data.transforms import Preprocess
from titok.losses.masked import masked_token_loss, random_mask
from titok.train.config import OptimConfig, read_recipe
from titok.train.ema import EMA
from titok.train.optim import lr_at, param_groups
from titok.train.state import CheckpointManager, capture_rng, restore_rng


def test_random_mask_counts_follow_the_schedule():
    g = torch.Generator().manual_seed(0)
    codes = torch.zeros(4000, 32, dtype=torch.long)
    mask = random_mask(codes, "arccos", g)
    counts = mask.sum(1).float()
    assert counts.min() >= 1 and counts.max() <= 32
    # E[arccos(t) / (pi/2)] for t ~ U(0, 1) is 2/pi
    assert counts.mean().item() / 32 == pytest.approx(2 / math.pi, abs=0.02)
    assert (
        random_mask(codes[:8], "linear", torch.Generator().manual_seed(5))
        == random_mask(codes[:8], "linear", torch.Generator().manual_seed(5))
    ).all()


def test_masked_token_loss_weights_and_accuracy():
    targets = torch.tensor([[0, 1, 2, 3]])
    logits = torch.full((1, 4, 4), -10.0)
    logits[0, 0, 0] = logits[0, 1, 1] = 10.0  # right at positions 0, 1; wrong at 2, 3
    logits[0, 2, 0] = logits[0, 3, 0] = 10.0
    mask = torch.tensor([[True, False, True, False]])
    loss, acc = masked_token_loss(logits, targets, mask, label_smoothing=0.0, unmasked_weight=0.1)
    ce = torch.nn.functional.cross_entropy(logits[0], targets[0], reduction="none")
    expected = (ce[0] + 0.1 * ce[1] + ce[2] + 0.1 * ce[3]) / 2.2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert acc.item() == 0.5  # masked positions 0 (right) and 2 (wrong)


def test_lr_warmup_then_cosine():
    cfg = OptimConfig(lr=1e-3, end_lr=1e-5, warmup_steps=10)
    assert lr_at(0, cfg, 110) == 0.0
    assert lr_at(5, cfg, 110) == pytest.approx(5e-4)
    assert lr_at(10, cfg, 110) == pytest.approx(1e-3)
    assert lr_at(60, cfg, 110) == pytest.approx((1e-3 + 1e-5) / 2)
    assert lr_at(110, cfg, 110) == pytest.approx(1e-5)
    assert lr_at(50, OptimConfig(lr=2e-4, schedule="constant"), 110) == 2e-4


def test_weight_decay_groups_follow_the_reference_rule():
    from tiny import TINY_CONFIGS

    import titok

    model = titok.models.build_model(TINY_CONFIGS["titok_vqgan_head"])
    model.encoder.requires_grad_(False)
    decay, no_decay = param_groups(model.named_parameters(), 1e-4)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    undecayed = {names[id(p)] for p in no_decay["params"]}
    assert "decoder.blocks.0.attn.qkv.weight" in decayed and "head.proxy.fc2.weight" in decayed
    assert {
        "decoder.embed.weight",
        "decoder.pos_embed",
        "head.codebook.weight",
        "quantizer.embedding.weight",
        "decoder.blocks.0.norm1.weight",
        "decoder.mask_token",
    } <= undecayed
    assert not any(n.startswith("encoder.") for n in decayed | undecayed)  # frozen: left out


def test_ema_follows_the_reference_decay():
    model = nn.Linear(2, 1, bias=False)
    ema = EMA(model, max_decay=0.999)
    model.weight.data.fill_(1.0)
    ema.update(model)  # the first update copies
    assert torch.equal(ema.model.weight, model.weight)
    model.weight.data.fill_(2.0)
    ema.update(model)  # k = 2: decay 2/11
    assert ema.model.weight[0, 0].item() == pytest.approx(1 + (1 - 2 / 11) * 1.0)
    for _ in range(20_000):
        ema.updates += 1
    assert ema.decay() == 0.999


@pytest.mark.parametrize("world", [1, 3])
def test_sampler_resumes_where_it_stopped_and_shards_disjointly(world):
    full = [list(ResumableSampler(10, seed=3, rank=r, world=world, num_epochs=3)) for r in range(world)]
    for r in range(world):
        resumed = list(ResumableSampler(10, seed=3, rank=r, world=world, start=4, num_epochs=3))
        assert resumed == full[r][4:]
    first_epoch = [i for r in range(world) for i, _ in full[r][: 10 // world]]
    assert len(set(first_epoch)) == len(first_epoch) == 10 // world * world
    assert full[0][:5] != [(i, s) for i, s in full[0][10 // world : 10 // world + 5]]  # epochs differ


def test_augmentation_depends_only_on_its_seed():
    image = torch.randint(0, 255, (3, 40, 50), dtype=torch.uint8)
    t = Preprocess(32, random_crop=True, random_flip=True)
    a, b = t(image, seed=11), t(image, seed=11)
    assert torch.equal(a, b) and a.shape == (3, 32, 32)
    assert any(not torch.equal(a, t(image, seed=s)) for s in range(12, 20))
    center = Preprocess(32)(image)
    assert center.shape == (3, 32, 32) and center.min() >= 0 and center.max() <= 1


def test_rng_capture_and_restore():
    g = torch.Generator().manual_seed(1)
    state = capture_rng({"g": g})
    draws = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())
    restore_rng(state, {"g": g})
    assert (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item()) == draws


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (10, 20, 30):
        manager.save(step, {"w": torch.tensor([float(step)])})
    assert [p.name for p in manager.checkpoints()] == ["checkpoint-20", "checkpoint-30"]
    (tmp_path / "checkpoint-40").mkdir()  # a folder without state.pt is not a checkpoint
    (tmp_path / ".checkpoint-50.tmp").mkdir()
    assert manager.latest().name == "checkpoint-30"
    assert manager.load(manager.latest())["w"].item() == 30.0


def test_recipe_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("a: 1\nb: {c: 2, d: x}\ne: ${b.c}\n")
    assert read_recipe(path, ["b.c=5", "b.d=[1, 2]"]) == {"a": 1, "b": {"c": 5, "d": [1, 2]}, "e": 5}
    with pytest.raises(ValueError, match="key=value"):
        read_recipe(path, ["b.c"])
    with pytest.raises(FileNotFoundError):
        read_recipe(tmp_path / "missing.yaml")


def test_atomic_write_leaves_no_temporary_file_and_normal_permissions(tmp_path):
    import os

    from titok.io import atomic_write

    atomic_write(tmp_path / "a.txt", lambda p: Path(p).write_text("x"))
    assert os.listdir(tmp_path) == ["a.txt"]
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask
    with pytest.raises(ZeroDivisionError):
        atomic_write(tmp_path / "b.txt", lambda p: 1 / 0)
    assert os.listdir(tmp_path) == ["a.txt"]  # a failed write leaves nothing behind


def test_wandb_is_an_extra_that_the_error_names(tmp_path, monkeypatch):
    import sys

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    from titok.train.metrics_log import MetricsLogger

    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert any(req.startswith("wandb") for req in extras["optional-dependencies"]["wandb"])
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed
    with pytest.raises(ImportError, match=r"pip install 'titok-tokenizer\[wandb\]'"):
        MetricsLogger(tmp_path, enabled=True, tensorboard=False, wandb_project="p", resume_step=None, recipe={})
