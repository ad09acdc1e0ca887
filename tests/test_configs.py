"""Every recipe in configs/ parses under its recipe's strict config (so none of them rots)."""

from __future__ import annotations

from pathlib import Path

import pytest

from titok.train.config import read_recipe
from titok.train.recipes import parse

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "titok" / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_recipe_parses(path):
    recipe = parse(read_recipe(path), str(path))
    recipe.model_config()  # the model section builds a valid config


def test_train_list_shows_every_shipped_recipe_with_a_line(capsys):
    from titok.cli import main
    from titok.configs import recipe_files

    assert main(["train", "--list"]) == 0
    out = capsys.readouterr().out
    for name in recipe_files():
        line = next(line for line in out.splitlines() if line.split()[:1] == [name])
        assert len(line.split()) > 3, line  # the name and a description


def test_a_recipe_by_bare_name_trains_from_any_folder(tmp_path, monkeypatch, capsys):
    from titok.cli import main

    monkeypatch.chdir(tmp_path)  # no configs/ here
    small = ["train.max_steps=1", "train.batch_size=2", "data.limit=4", "train.num_workers=0", "train.save_every=1"]
    small += ["train.preview_every=1000", "model.encoder.depth=1", "model.decoder.depth=1", "train.output_dir=run"]
    assert main(["train", "tokenizer", "single_stage_vq_fmnist", *small]) == 0
    assert (tmp_path / "run" / "final" / "config.json").is_file()


def test_an_unknown_recipe_name_suggests_the_close_one(capsys):
    from titok.cli import main

    assert main(["train", "tokenizer", "single_stage_vq_fmnst"]) == 2
    assert "did you mean single_stage_vq_fmnist or" in capsys.readouterr().err


def test_a_recipe_that_needs_an_earlier_run_names_the_recipe_that_makes_it(tmp_path, monkeypatch, capsys):
    from titok.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "tokenizer", "stage1_fmnist"]) == 2
    made = "teacher: runs/fmnist/vqgan/final does not exist yet; it is made by `titok train tokenizer vqgan_fmnist`"
    assert made in capsys.readouterr().err
    assert main(["train", "generator", "fmnist"]) == 2
    err = capsys.readouterr().err
    assert "made by `titok train tokenizer single_stage_vq_fmnist_perceptual`" in err
    pretokenize = "titok pretokenize runs/fmnist/single_stage_vq_perceptual/final fashion-mnist:train -o runs/fmnist/"
    assert f"make it with `{pretokenize}" in err
