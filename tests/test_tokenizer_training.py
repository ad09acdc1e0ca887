"""Tokenizer training end to end: every recipe from the CLI (vqgan -> stage1 -> stage2, single-stage VQ and VAE),
what stays frozen, overfitting, kill-and-resume, two processes, NaN, and bad input."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from shards import write_shards
from test_generator_training import kill_and_resume, launch

import titok
import titok.train.tokenizer as tokenizer_recipes
from titok.cli import main

VIT = {"width": 32, "depth": 1, "num_heads": 2}
TITOK = dict(image_size=32, patch_size=8, num_tokens=4, encoder=VIT, decoder=VIT, codebook_size=32, token_dim=8)
VQGAN = dict(image_size=32, hidden_channels=8, channel_mult=[1, 1, 1, 2], num_res_blocks=1, z_channels=8)
VQGAN.update(codebook_size=16, norm_groups=4)
GAN = dict(weight=0.1, start=1, hidden_channels=8, num_stages=2, norm_groups=4, pool_size=4)
NO_PERCEPTUAL = {"lpips_weight": 0.0, "convnext_weight": 0.0}


def recipe_file(path: Path, recipe: str, **sections) -> Path:
    """A tiny recipe on 64 Fashion-MNIST test images; ``train`` entries update the defaults below."""
    train = {
        "output_dir": str(path.parent / f"{path.stem}_run"),
        "max_steps": 3,
        "batch_size": 8,
        "log_every": 1,
        "save_every": 2,
        "preview_every": 2,
        "num_workers": 0,
        "tensorboard": False,
        **sections.pop("train", {}),
    }
    body = {"recipe": recipe, "data": {"split": "test", "limit": 64}, **sections, "train": train}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(body))
    return path


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_stage_recipe_from_the_cli(tmp_path, monkeypatch):
    teachers = []
    real_load = tokenizer_recipes.load_teacher
    monkeypatch.setattr(tokenizer_recipes, "load_teacher", lambda *a: teachers.append(real_load(*a)) or teachers[-1])
    vq = recipe_file(tmp_path / "vqgan.yaml", "vqgan", model=VQGAN, losses=NO_PERCEPTUAL, gan=GAN,
                     codebook={"clustering": True, "restart_after": 1})  # fmt: skip
    assert main(["train", "tokenizer", str(vq)]) == 0
    teacher = str(tmp_path / "vqgan_run" / "final")
    row = metrics(tmp_path / "vqgan_run")[-1]
    assert {"rec", "quantizer", "gan", "d_loss", "d_lecam", "codebook_usage", "codebook_entropy"} <= set(row)
    # the VQGAN's codebook gets the clustering revival too: its first update moves every (still unused) code
    assert metrics(tmp_path / "vqgan_run")[0]["codebook_revived"] > 0
    assert max(r["codebook_restarted"] for r in metrics(tmp_path / "vqgan_run")) > 0  # and restarts unused codes

    stage1_model = {**TITOK, "head": "proxy", "proxy_codebook_size": 16}
    s1 = recipe_file(tmp_path / "stage1.yaml", "stage1", teacher=teacher, model=stage1_model)
    assert main(["train", "tokenizer", str(s1)]) == 0
    stage1 = titok.load(tmp_path / "stage1_run" / "final")
    assert {"proxy_ce", "proxy_accuracy", "codebook_dead"} <= set(metrics(tmp_path / "stage1_run")[-1])
    assert (tmp_path / "stage1_run" / "previews" / "step-0000002.png").is_file()
    on_file = titok.load(teacher).state_dict()  # stage 1 left its teacher untouched
    assert all(torch.equal(v, on_file[k]) for k, v in teachers[-1].state_dict().items())
    assert not teachers[-1].training and not any(p.requires_grad for p in teachers[-1].parameters())

    stage2_model = {**TITOK, "head": "vqgan", "proxy_codebook_size": 16, "pixel_decoder": VQGAN}
    s2 = recipe_file(
        tmp_path / "stage2.yaml",
        "stage2",
        init=str(tmp_path / "stage1_run" / "final"),
        teacher=teacher,
        model=stage2_model,
        losses=NO_PERCEPTUAL,
        gan=GAN,
    )
    assert main(["train", "tokenizer", str(s2)]) == 0
    stage2 = titok.load(tmp_path / "stage2_run" / "final")
    before, after = stage1.state_dict(), stage2.state_dict()
    frozen = [k for k in before if k.startswith(("encoder.", "quantizer."))]
    assert "encoder.latent_tokens" in frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(before["decoder.embed.weight"], after["decoder.embed.weight"])  # the decoder trained
    images = torch.rand(2, 3, 32, 32)
    codes = stage2.tokenize(images)
    assert torch.equal(codes, stage1.tokenize(images)) and stage2.detokenize(codes).shape == (2, 3, 32, 32)
    assert titok.load(teacher).tokenize(images).shape == (2, 16)


def test_stage1_from_cached_teacher_codes(tmp_path, capsys):
    torch.manual_seed(0)
    titok.models.build_model(titok.VQGANConfig.from_dict(VQGAN)).save_pretrained(tmp_path / "teacher")
    common = ["--limit", "64", "--num-workers", "0", "--device", "cpu", "--flip"]
    assert (
        main(["pretokenize", str(tmp_path / "teacher"), "fashion-mnist:test", "-o", str(tmp_path / "c"), *common]) == 0
    )
    model = {**TITOK, "head": "proxy", "proxy_codebook_size": 16}
    path = recipe_file(
        tmp_path / "s1.yaml",
        "stage1",
        teacher=str(tmp_path / "teacher"),
        teacher_codes=str(tmp_path / "c"),
        model=model,
    )
    assert main(["train", "tokenizer", str(path)]) == 2
    assert "set data.random_crop=false" in capsys.readouterr().err
    assert main(["train", "tokenizer", str(path), "data.random_crop=false"]) == 0
    assert metrics(tmp_path / "s1_run")[-1]["step"] == 3


@pytest.mark.parametrize("quantizer", ["vq", "vae"])
def test_single_stage_from_the_cli(tmp_path, quantizer):
    losses = dict(NO_PERCEPTUAL)
    if quantizer == "vq":  # LPIPS on, from a VGG16 file made here (random weights: the plumbing, not the values)
        from torchvision.models.vgg import cfgs, make_layers

        features = make_layers(cfgs["D"])
        torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, tmp_path / "vgg16.pth")
        losses.update(lpips_weight=1.0, lpips_vgg_weights=str(tmp_path / "vgg16.pth"))
    model = {**TITOK, "quantizer": quantizer}
    path = recipe_file(tmp_path / "s.yaml", "single_stage", model=model, losses=losses, gan=GAN)
    assert main(["train", "tokenizer", str(path)]) == 0
    rows = metrics(tmp_path / "s_run")
    assert ("perceptual" in rows[-1]) == (quantizer == "vq") and ("kl" in rows[-1]) == (quantizer == "vae")
    assert "gan" not in rows[0] and "d_loss" in rows[-1]  # the GAN starts at step 1 (0-based)
    tok = titok.load(tmp_path / "s_run" / "final")
    images = torch.rand(2, 3, 32, 32)
    if quantizer == "vq":
        assert tok.tokenize(images).shape == (2, 4)
    else:
        assert tok.decode(tok.encode(images).mode()).shape == (2, 3, 32, 32)


def test_a_resume_may_switch_the_gan_and_the_ema_on(tmp_path, caplog, capsys):
    gan = {**GAN, "weight": 0.0}
    train = {"max_steps": 2, "ema_decay": 0.0}
    path = recipe_file(tmp_path / "g.yaml", "single_stage", model=TITOK, losses=NO_PERCEPTUAL, gan=gan, train=train)
    assert main(["train", "tokenizer", str(path)]) == 0
    started = capsys.readouterr().err
    assert "training single_stage: TiTok, 1 process(es) on cpu" in started and "starting from step 0" in started
    on = ["gan.weight=0.1", "train.ema_decay=0.99", "train.max_steps=4"]
    assert main(["train", "tokenizer", str(path), "--resume", *on]) == 0
    assert "checkpoint-2 (step 2)" in capsys.readouterr().err
    assert "holds no discriminator" in caplog.text and "holds no EMA weights" in caplog.text
    rows = metrics(tmp_path / "g_run")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and "d_loss" in rows[-1] and "d_loss" not in rows[1]


def test_a_tiny_tokenizer_overfits(tmp_path):
    vit = {"width": 64, "depth": 1, "num_heads": 2}
    model = dict(TITOK, encoder=vit, decoder=vit, num_tokens=16, codebook_size=64, l2_norm=False)
    path = recipe_file(
        tmp_path / "o.yaml",
        "single_stage",
        model=model,
        data={"split": "test", "limit": 32, "random_crop": False, "random_flip": False},
        losses=NO_PERCEPTUAL,
        gan={"weight": 0.0},
        optim={"lr": 2e-3, "warmup_steps": 10, "end_lr": 2e-4, "betas": [0.9, 0.99]},
        train={"max_steps": 250, "batch_size": 32, "save_every": 1000, "preview_every": 0, "ema_decay": 0.0},
    )
    assert main(["train", "tokenizer", str(path)]) == 0
    rec = {r["step"]: r["rec"] for r in metrics(tmp_path / "o_run")}
    assert rec[250] < 0.25 * rec[1], (rec[1], rec[250])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "titok.cli", *args]


def test_kill_and_resume_equals_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sections = dict(
        model={**TITOK, "quantizer": "vae"},  # VAE: the posterior's random draws must resume too
        losses=NO_PERCEPTUAL,
        gan={**GAN, "start": 8},
        train={"max_steps": 50, "save_every": 10, "grad_accum": 2, "batch_size": 4, "preview_every": 0},
    )
    straight = recipe_file(tmp_path / "a.yaml", "single_stage", **sections)
    subprocess.run(_cli("train", "tokenizer", str(straight)), check=True, capture_output=True, env=env)

    killed = recipe_file(tmp_path / "b.yaml", "single_stage", **sections)
    run = tmp_path / "b_run"
    resumed = kill_and_resume(_cli("train", "tokenizer", str(killed)), run, 20, env)
    assert resumed.returncode == 0, resumed.stderr
    a, b = metrics(tmp_path / "a_run"), metrics(run)
    assert [r["step"] for r in b] == list(range(1, 51))
    drop = lambda r: {k: v for k, v in r.items() if k != "images_per_s"}  # noqa: E731
    assert [drop(r) for r in a] == [drop(r) for r in b]
    assert "d_lecam" in a[-1] and "kl" in a[-1]


def test_two_processes_end_with_identical_weights(tmp_path):
    write_shards(tmp_path / "shards", 4, 8)
    path = recipe_file(
        tmp_path / "d.yaml",
        "single_stage",
        model=TITOK,
        data={"source": "webdataset", "path": str(tmp_path / "shards" / "train-{0000..0003}.tar")},
        losses=NO_PERCEPTUAL,
        gan=GAN,
        train={"max_steps": 4, "batch_size": 4, "num_workers": 1},
    )
    script = Path(__file__).parent / "scripts" / "dist_tokenizer.py"
    out = launch([str(script), str(path)])
    assert out.returncode == 0, out.stderr[-3000:]
    w0, w1 = (torch.load(tmp_path / "d_run" / f"rank{r}.pt") for r in (0, 1))
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    torch.manual_seed(42)
    initial = titok.models.build_model(titok.TiTokConfig.from_dict(TITOK)).state_dict()
    assert any(not torch.equal(w0[k], initial[k]) for k in w0)  # it trained
    state = torch.load(tmp_path / "d_run" / "checkpoints" / "checkpoint-4" / "state.pt", weights_only=True)
    assert state["data"]["kind"] == "stream" and len(state["data"]["cursors"]) == 2  # 2 processes x 1 worker


def test_nan_loss_stops_with_the_last_checkpoint_intact(tmp_path, monkeypatch, caplog):
    import titok.train.objectives as objectives

    real, calls = objectives.reconstruction_loss, []

    def poisoned(*args, **kwargs):  # NaN at step 5, after the checkpoints of steps 2 and 4
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) >= 5 else loss

    monkeypatch.setattr(objectives, "reconstruction_loss", poisoned)
    path = recipe_file(tmp_path / "n.yaml", "single_stage", model=TITOK, losses=NO_PERCEPTUAL, gan=GAN)
    assert main(["train", "tokenizer", str(path), "train.max_steps=8"]) == 2
    checkpoints = tmp_path / "n_run" / "checkpoints"
    # checkpoint-4's weights went into step 5: a resume from it would stop at step 5 again
    assert "step 5: loss = nan, rec = nan; stopping (checkpoint-4 holds the weights that gave them" in caplog.text
    assert f"the last good checkpoint, {checkpoints / 'checkpoint-2'}, is intact" in caplog.text
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-2", "checkpoint-4.rejected"]
    state = torch.load(checkpoints / "checkpoint-2" / "state.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    monkeypatch.setattr(objectives, "reconstruction_loss", real)
    assert main(["train", "tokenizer", str(path), "train.max_steps=8", "--resume"]) == 0


def test_bad_data_is_named_or_skipped(tmp_path, capsys, caplog):
    (tmp_path / "empty").mkdir()
    data = {"source": "folder", "path": str(tmp_path / "empty")}
    path = recipe_file(tmp_path / "e.yaml", "single_stage", model=TITOK, data=data, losses=NO_PERCEPTUAL)
    assert main(["train", "tokenizer", str(path)]) == 2
    assert "holds no image files" in capsys.readouterr().err
    for cls in ("a", "b"):  # 12 good images and 2 broken ones: one epoch of 14 items visits both broken files once
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (40, 36), (i * 40, 20, 90)).save(tmp_path / "imgs" / cls / f"{i}.png")
        (tmp_path / "imgs" / cls / "broken.png").write_bytes(b"not a png")
    data = {"source": "folder", "path": str(tmp_path / "imgs")}
    train = {"max_steps": 2, "batch_size": 7}
    path = recipe_file(tmp_path / "c.yaml", "single_stage", model=TITOK, data=data, losses=NO_PERCEPTUAL, train=train)
    assert main(["train", "tokenizer", str(path)]) == 0
    assert metrics(tmp_path / "c_run")[-1]["skipped_images"] == 2
    assert "skipped unreadable image" in caplog.text and "broken.png" in caplog.text


def test_bad_recipes_and_teachers_are_named(tmp_path, capsys, caplog):
    path = recipe_file(tmp_path / "r.yaml", "single_stage", model=TITOK, losses=NO_PERCEPTUAL)
    assert main(["train", "tokenizer", str(path), "losses.lpips_wieght=1.0"]) == 2
    assert "unknown key(s) ['lpips_wieght']" in capsys.readouterr().err
    assert main(["train", "tokenizer", str(path), "model.head=proxy"]) == 2
    assert "single-stage training needs the 'pixels' head" in capsys.readouterr().err
    assert main(["train", "generator", str(path)]) == 2
    assert "recipe 'single_stage' is not one of ['generator']" in capsys.readouterr().err
    model = {**TITOK, "head": "proxy", "proxy_codebook_size": 16}
    for name, change, message in [
        ("k8", {"codebook_size": 8}, "teacher VQGAN has 8 codes; the tokenizer's proxy_codebook_size is 16"),
        ("r64", {"image_size": 64}, "teacher VQGAN reads 64 px images, the tokenizer 32 px"),
    ]:
        titok.models.build_model(titok.VQGANConfig.from_dict({**VQGAN, **change})).save_pretrained(tmp_path / name)
        s1 = recipe_file(tmp_path / f"{name}.yaml", "stage1", teacher=str(tmp_path / name), model=model)
        assert main(["train", "tokenizer", str(s1)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    with caplog.at_level(logging.INFO):
        assert main(["train", "tokenizer", str(s1), "-v"]) == 2  # -v: where it failed, too
    failed = [r for r in caplog.records if r.getMessage().startswith("where it failed")]
    assert failed and failed[0].exc_info and "check_proxy_teacher" in caplog.text
    titok.models.build_model(titok.TiTokConfig.from_dict(TITOK)).save_pretrained(tmp_path / "pixels")
    stage2_model = {**TITOK, "head": "vqgan", "proxy_codebook_size": 16, "pixel_decoder": VQGAN}
    s2 = recipe_file(tmp_path / "s2.yaml", "stage2", init=str(tmp_path / "pixels"), model=stage2_model)
    assert main(["train", "tokenizer", str(s2)]) == 2
    assert "does not give the recipe's model: head is 'pixels' there, 'vqgan' here" in capsys.readouterr().err
    assert main(["train", "tokenizer", str(s2), f"teacher={tmp_path / 'k8'}"]) == 2
    assert "already has its pixel decoder (head 'pixels'): unset teacher" in capsys.readouterr().err
