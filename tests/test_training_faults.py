"""Training runs under faults: weights that turn NaN, checkpoints that are damaged or poisoned, recipes that change
on resume, torn metrics, bad YAML and leftovers of killed writes. Each is named clearly and nothing good is lost."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from test_generator_training import launch, losses, recipe_file, rule_tokens  # noqa: F401 (a fixture)
from test_tokenizer_training import NO_PERCEPTUAL, TITOK
from test_tokenizer_training import recipe_file as tokenizer_recipe

from titok.cli import main
from titok.train import runfolder
from titok.train.config import read_recipe
from titok.train.ema import EMA
from titok.train.gan import resume_architecture
from titok.train.state import CheckpointManager, nonfinite

# lr 0 at step 1 (warm-up), then 5e29: the weights after step 2 are ~1e29, finite, and give a NaN loss at step 3.
EXPLODE = ["optim.lr=1e30", "optim.warmup_steps=2", "optim.schedule=constant", "train.save_every=1"]


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_checkpoint_whose_weights_give_nan_is_set_aside_not_called_good(rule_tokens, tmp_path, caplog):  # noqa: F811
    path = recipe_file(tmp_path, rule_tokens, max_steps=6, batch_size=8, keep_checkpoints=1)
    assert main(["train", "generator", str(path), *EXPLODE]) == 2
    ckpts = tmp_path / "run" / "checkpoints"
    stopped = "step 3: loss = nan; stopping (checkpoint-2 holds the weights that gave them (a resume from it would "
    assert f"{stopped}stop here again): set aside as {ckpts / 'checkpoint-2.rejected'}" in caplog.text
    assert f"the last good checkpoint, {ckpts / 'checkpoint-1'}, is intact" in caplog.text
    # keep_checkpoints=1, yet checkpoint-1 stayed until checkpoint-2 had proved itself (it did not)
    assert names(ckpts) == ["checkpoint-1", "checkpoint-2.rejected"]
    caplog.clear()
    caplog.set_level(logging.INFO)
    assert main(["train", "generator", str(path), "--resume", "optim.lr=1e-3"]) == 0
    assert f"resuming from {ckpts / 'checkpoint-1'}" in caplog.text
    assert sorted(losses(tmp_path / "run")) == list(range(1, 7))
    assert names(ckpts) == ["checkpoint-2.rejected", "checkpoint-6"]  # pruned to 1 once the run was done


def test_the_same_for_a_tokenizer_and_with_no_good_checkpoint(tmp_path, caplog):
    path = tokenizer_recipe(tmp_path / "t.yaml", "single_stage", model=TITOK, losses=NO_PERCEPTUAL, gan={"weight": 0})
    explode = ["optim.lr=1e30", "optim.warmup_steps=0", "optim.schedule=constant", "train.save_every=1"]
    assert main(["train", "tokenizer", str(path), *explode, "train.max_steps=4", "train.ema_decay=0.5"]) == 2
    assert "step 2: " in caplog.text and "checkpoint-1 holds the weights that gave them" in caplog.text
    assert "no good checkpoint was written" in caplog.text and "last good checkpoint" not in caplog.text
    assert names(tmp_path / "t_run" / "checkpoints") == ["checkpoint-1.rejected"]


def test_a_state_that_is_not_finite_is_never_written(rule_tokens, tmp_path, monkeypatch, caplog):  # noqa: F811
    real = EMA.update

    def update(self, model):  # the EMA weights turn infinite at the third update
        real(self, model)
        if self.updates == 3:
            next(self.model.parameters()).data.fill_(float("inf"))

    monkeypatch.setattr(EMA, "update", update)
    path = recipe_file(tmp_path, rule_tokens, max_steps=6, batch_size=8, save_every=2, ema_decay=0.9)
    assert main(["train", "generator", str(path)]) == 2
    ckpts = tmp_path / "run" / "checkpoints"
    assert "step 4: the state to checkpoint holds NaN or inf values (1 tensor(s): ema.model.pos_embed)" in caplog.text
    assert f"the last good checkpoint, {ckpts / 'checkpoint-2'}, is intact" in caplog.text
    assert names(ckpts) == ["checkpoint-2"]


def test_nonfinite_names_tensors_of_optimizer_states():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    assert nonfinite({"model": model.state_dict(), "optimizer": opt.state_dict()}) == []
    opt.state[model.bias]["exp_avg_sq"][0] = float("nan")
    assert nonfinite({"optimizer": opt.state_dict(), "step": 3}) == ["optimizer.state.1.exp_avg_sq"]


def test_two_processes_skip_a_checkpoint_one_cannot_read_and_set_aside_a_poisoned_one(
    rule_tokens,  # noqa: F811
    tmp_path,
):
    path = recipe_file(tmp_path, rule_tokens, max_steps=4, batch_size=8, save_every=2)
    first = launch(["-m", "titok.cli", "train", "generator", str(path)])
    assert first.returncode == 0, first.stderr[-3000:]
    ckpts = tmp_path / "run" / "checkpoints"
    (ckpts / "checkpoint-4" / "rng-1.pt").unlink()  # only process 1 cannot resume checkpoint-4
    lr = ["optim.lr=1e30", "optim.warmup_steps=0", "optim.schedule=constant", "train.save_every=1"]
    again = launch(["-m", "titok.cli", "train", "generator", str(path), "--resume", "train.max_steps=8", *lr])
    assert again.returncode == 1, again.stderr[-3000:]
    err = again.stderr
    assert f"skipped checkpoint {ckpts / 'checkpoint-4'}: {ckpts / 'checkpoint-4' / 'rng-1.pt'} is missing" in err
    assert "with a changed recipe: optim.lr 0.003 -> 1e+30" in err
    assert err.count("step 4: loss = nan; stopping (checkpoint-3 holds the weights that gave them") == 2
    assert f"the last good checkpoint, {ckpts / 'checkpoint-2'}, is intact" in err
    assert names(ckpts) == ["checkpoint-2", "checkpoint-3.rejected", "checkpoint-4"]


def test_a_resume_refuses_another_architecture_before_writing_anything(rule_tokens, tmp_path, capsys):  # noqa: F811
    path = recipe_file(tmp_path, rule_tokens, max_steps=2, batch_size=8, save_every=2)
    assert main(["train", "generator", str(path)]) == 0
    run = tmp_path / "run"
    before = {name: (run / name).read_bytes() for name in ("recipe.json", "metrics.jsonl")}
    capsys.readouterr()
    assert main(["train", "generator", str(path), "--resume", "model.depth=3", "model.mlp_dim=32"]) == 2
    err = capsys.readouterr().err
    assert "the recipe changes the architecture" in err and "Traceback" not in err
    assert "model.depth is 2 there, 3 now; model.mlp_dim is 64 there, 32 now" in err
    assert {name: (run / name).read_bytes() for name in before} == before
    assert not (run / runfolder.HISTORY).exists()


def test_other_recipe_changes_are_warned_about_and_appended_to_the_history(
    rule_tokens,  # noqa: F811
    tmp_path,
    caplog,
):
    path = recipe_file(tmp_path, rule_tokens, max_steps=2, batch_size=8, save_every=2)
    assert main(["train", "generator", str(path)]) == 0
    run = tmp_path / "run"
    original = (run / "recipe.json").read_text()
    assert main(["train", "generator", str(path), "--resume", "optim.lr=0.01", "train.max_steps=4"]) == 0
    assert "with a changed recipe: optim.lr 0.003 -> 0.01, train.max_steps 2 -> 4" in caplog.text
    assert main(["train", "generator", str(path), "--resume", "optim.lr=0.01", "train.max_steps=6"]) == 0
    assert (run / "recipe.json").read_text() == original  # the recipe the run started with
    history = [json.loads(line) for line in (run / runfolder.HISTORY).read_text().splitlines()]
    assert [(h["step"], h["changes"]) for h in history] == [
        (2, {"optim.lr": [0.003, 0.01], "train.max_steps": [2, 4]}),
        (4, {"train.max_steps": [4, 6]}),  # compared with checkpoint-4's recipe, which had lr 0.01
    ]
    assert history[-1]["recipe"]["train"]["max_steps"] == 6
    assert sorted(losses(run)) == list(range(1, 7))


def test_the_discriminator_shape_is_fixed_only_once_there_is_a_discriminator(tmp_path):
    stored = {"recipe": "single_stage", "model": {"depth": 1}, "gan": {"weight": 0.1, "hidden_channels": 8}}
    changed = {**stored, "gan": {"weight": 0.1, "hidden_channels": 16}}
    with pytest.raises(ValueError, match=r"gan\.hidden_channels is 8 there, 16 now"):
        runfolder.check_resume(tmp_path, stored, changed, resume_architecture)
    without = {**stored, "gan": {"weight": 0.0, "hidden_channels": 8}}
    turned_on = runfolder.check_resume(tmp_path, without, changed, resume_architecture)
    assert turned_on == {"gan.weight": (0.0, 0.1), "gan.hidden_channels": (8, 16)}
    with pytest.raises(ValueError, match='recipe is "single_stage" there, "vqgan" now'):
        runfolder.check_resume(tmp_path, stored, {**stored, "recipe": "vqgan"})


def _damage(how: str, folder: Path) -> str:
    """Damage checkpoint ``folder``; returns what the skip message says."""
    state = folder / "state.pt"
    if how == "truncated":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
        return f"{state} cannot be read (RuntimeError: PytorchStreamReader failed"
    if how == "empty":
        state.write_bytes(b"")
        return f"{state} cannot be read (EOFError"
    if how == "text":
        state.write_text("not a checkpoint\n")
        return f"{state} cannot be read"
    (folder / "rng-0.pt").unlink()
    return f"{folder / 'rng-0.pt'} is missing"


@pytest.mark.parametrize("how", ["truncated", "empty", "text", "no rng file"])
def test_a_damaged_newest_checkpoint_falls_back_to_an_older_one(rule_tokens, tmp_path, caplog, how):  # noqa: F811
    path = recipe_file(tmp_path, rule_tokens, max_steps=4, batch_size=8, save_every=2)
    assert main(["train", "generator", str(path)]) == 0
    ckpts = tmp_path / "run" / "checkpoints"
    reason = _damage(how, ckpts / "checkpoint-4")
    caplog.set_level(logging.INFO)
    assert main(["train", "generator", str(path), "--resume", "train.max_steps=5"]) == 0
    assert f"skipped checkpoint {ckpts / 'checkpoint-4'}: {reason}" in caplog.text
    assert f"resuming from {ckpts / 'checkpoint-2'}" in caplog.text
    assert sorted(losses(tmp_path / "run")) == list(range(1, 6))


def test_no_readable_checkpoint_and_a_damaged_resume_from_are_named(rule_tokens, tmp_path, capsys):  # noqa: F811
    path = recipe_file(tmp_path, rule_tokens, max_steps=4, batch_size=8, save_every=2)
    assert main(["train", "generator", str(path)]) == 0
    ckpts = tmp_path / "run" / "checkpoints"
    for step in (2, 4):
        _damage("truncated", ckpts / f"checkpoint-{step}")
    capsys.readouterr()
    assert main(["train", "generator", str(path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"no checkpoint in {ckpts} can be resumed: checkpoint-4: {ckpts / 'checkpoint-4' / 'state.pt'}" in err
    assert "checkpoint-2: " in err and "Traceback" not in err
    assert main(["train", "generator", str(path), "--resume-from", str(ckpts / "checkpoint-2")]) == 2
    assert f"{ckpts / 'checkpoint-2' / 'state.pt'} cannot be read" in capsys.readouterr().err


def test_checkpoint_files_and_folders_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    CheckpointManager(tmp_path / "c").save(7, {"w": torch.ones(1)})
    tmp = str(tmp_path / "c" / ".checkpoint-7.tmp")
    assert synced == [f"{tmp}/rng-0.pt", f"{tmp}/state.pt", tmp, str(tmp_path / "c")]


def test_a_torn_metrics_line_is_dropped_with_a_warning(rule_tokens, tmp_path, caplog):  # noqa: F811
    path = recipe_file(tmp_path, rule_tokens, max_steps=2, batch_size=8, save_every=2)
    assert main(["train", "generator", str(path)]) == 0
    metrics = tmp_path / "run" / "metrics.jsonl"
    with metrics.open("a") as f:
        f.write('{"step": 3, "loss": 2.7')  # killed while writing step 3
    assert main(["train", "generator", str(path), "--resume", "train.max_steps=3"]) == 0
    assert f"{metrics} line 3 is torn or not a metrics entry" in caplog.text
    assert sorted(losses(tmp_path / "run")) == [1, 2, 3]


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("recipe: generator\ntrain:\n  max_steps: 3\n   output_dir: x\n")
    with pytest.raises(ValueError, match=r"bad\.yaml, line 4, column 14: not valid YAML: mapping values are not"):
        read_recipe(path)
    path.write_text("recipe: generator\nmodel: {depth: [1, 2}\n")
    with pytest.raises(ValueError, match=r"line 2, column 21: not valid YAML: .*flow sequence at line 2"):
        read_recipe(path)
    path.write_bytes(b"\xff\xfe recipe")
    with pytest.raises(ValueError, match="is not a UTF-8 text file"):
        read_recipe(path)
    assert main(["train", "generator", str(path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_leftovers_of_killed_writes_are_removed_on_resume_and_export(rule_tokens, tmp_path, caplog):  # noqa: F811
    path = recipe_file(tmp_path, rule_tokens, max_steps=2, batch_size=8, save_every=2)
    assert main(["train", "generator", str(path)]) == 0
    run = tmp_path / "run"
    leftovers = [
        run / "final" / ".model.safetensors.k2j3h4.tmp",  # a kill during the export
        run / ".recipe.json.a8s7d6.tmp",
        run / "checkpoints" / ".checkpoint-3.tmp",
    ]
    for p in leftovers[:2]:
        p.write_bytes(b"half")
    leftovers[2].mkdir()
    (run / "final" / "notes.tmp").write_text("the user's")  # not a name atomic writes use: kept
    assert main(["train", "generator", str(path), "--resume", "train.max_steps=3"]) == 0
    assert not any(p.exists() for p in leftovers)
    assert f"removed {leftovers[0]}, left by an interrupted write" in caplog.text
    assert "notes.tmp" in names(run / "final") and not [n for n in names(run) if n.endswith(".tmp")]
    runfolder_leftover = run / "final" / ".config.json.x1y2z3.tmp"
    runfolder_leftover.write_text("{")
    assert runfolder.remove_leftovers(run / "final", ()) == [runfolder_leftover]
