"""A half-finished run loads: titok.load / every command on runs/x/checkpoints/checkpoint-N, EMA or raw weights,
and titok export writes a clean model folder from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import titok
from titok.cli import main

SMALL = [
    "train.max_steps=2",
    "train.batch_size=2",
    "data.limit=4",
    "train.num_workers=0",
    "train.save_every=1",
    "train.keep_checkpoints=5",
    "train.preview_every=1000",
    "train.ema_decay=0.5",
    "model.encoder.depth=1",
    "model.decoder.depth=1",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    assert main(["train", "tokenizer", "single_stage_vq_fmnist", *SMALL, f"train.output_dir={root}"]) == 0
    return root


def test_a_checkpoint_folder_loads_with_ema_or_raw_weights(run):
    checkpoint = run / "checkpoints" / "checkpoint-2"
    state = torch.load(checkpoint / "state.pt", weights_only=True)
    ema, raw = titok.load(checkpoint), titok.load(checkpoint, weights="raw")
    assert isinstance(ema, titok.TiTok) and not ema.training
    for name, value in raw.state_dict().items():
        assert torch.equal(value, state["model"][name]), name
    for name, value in ema.state_dict().items():
        assert torch.equal(value, state["ema"]["model"][name]), name
    final = titok.load(run / "final")  # the export at the end is the last checkpoint's EMA
    assert all(torch.equal(v, final.state_dict()[k]) for k, v in ema.state_dict().items())
    assert not all(torch.equal(v, raw.state_dict()[k]) for k, v in ema.state_dict().items())
    with pytest.raises(ValueError, match="weights='best'"):
        titok.load(checkpoint, weights="best")
    with pytest.raises(ValueError, match="chooses the weights of a training checkpoint"):
        titok.load(run / "final", weights="raw")


def test_commands_read_a_checkpoint_and_export_writes_a_model_folder(run, tmp_path, capsys):
    checkpoint = run / "checkpoints" / "checkpoint-1"
    assert main(["info", str(checkpoint), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["class"] == "TiTok"
    assert main(["export", str(checkpoint), "--weights", "raw", "-o", str(tmp_path / "m")]) == 0
    exported = titok.load(tmp_path / "m")
    raw = titok.load(checkpoint, weights="raw")
    assert all(torch.equal(v, exported.state_dict()[k]) for k, v in raw.state_dict().items())
    codes = tmp_path / "c.npz"
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(images / "a.png")
    assert main(["tokenize", str(checkpoint), str(images), "--weights", "ema", "-o", str(codes)]) == 0
    assert main(["tokenize", str(run / "final"), str(images), "--weights", "raw", "-o", str(codes)]) == 2
    assert "chooses a training checkpoint's weights" in capsys.readouterr().err


def test_the_checkpoint_reader_knows_every_recipe_and_its_model_kind():
    # titok.checkpoint_folder reads a recipe's model section without the training code: its table must agree
    from titok.checkpoint_folder import RECIPES_OF_TOKENIZERS, model_config
    from titok.train.recipes import recipes

    assert set(RECIPES_OF_TOKENIZERS) | {"generator", "vqgan"} == set(recipes())
    config = model_config({"recipe": "stage1", "model": {"preset": "titok_s128"}}, Path("ckpt"))
    assert isinstance(config, titok.TiTokConfig)
    with pytest.raises(ValueError, match=r"ckpt: recipe 'stage3' is not one of"):
        model_config({"recipe": "stage3"}, Path("ckpt"))
