"""Generator training: a planted rule is learned, resume after a kill equals an uninterrupted run, two processes
stay identical, and bad recipes or tokens are named. Also pretokenization and ``titok generate``."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from tiny import build

import titok
from titok.cli import main
from titok.data.tokens import TokenDataset, write_tokens
from titok.train.config import read_recipe
from titok.train.generator import GeneratorRecipe, train

K, N, CLASSES = 16, 4, 8
MODEL = dict(
    arch="bert", codebook_size=K, num_tokens=N, num_classes=CLASSES, hidden_size=32, depth=2, num_heads=2, mlp_dim=64
)


@pytest.fixture(scope="module")
def rule_tokens(tmp_path_factory):
    """Every token of a sequence equals its class id."""
    root = tmp_path_factory.mktemp("tokens") / "rule"
    labels = np.arange(256) % CLASSES
    write_tokens(root, np.repeat(labels[:, None], N, 1), labels, codebook_size=K, tokenizer="planted rule")
    return root


def recipe_file(tmp_path: Path, tokens: Path, **train) -> Path:
    recipe = {
        "recipe": "generator",
        "tokens": str(tokens),
        "model": MODEL,
        "masking": {"label_smoothing": 0.0},
        "optim": {"lr": 3e-3, "warmup_steps": 20, "end_lr": 1e-4},
        "train": {
            "output_dir": str(tmp_path / "run"),
            "max_steps": 300,
            "batch_size": 32,
            "log_every": 1,
            "save_every": 100,
            "num_workers": 0,
            "tensorboard": False,
            "ema_decay": 0.0,
            **train,
        },
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def launch(args: list[str], timeout: float = 240, **env_vars: str) -> subprocess.CompletedProcess:
    """Run torchrun with two CPU processes; on a timeout, kill the workers too (they run in their own session)."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", **env_vars}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def test_a_planted_rule_is_learned(rule_tokens, tmp_path):
    path = recipe_file(tmp_path, rule_tokens)
    final = train(GeneratorRecipe.from_dict(read_recipe(path)))
    loss = losses(tmp_path / "run")
    assert loss[300] < 0.1 * math.log(K) < loss[1]  # far below chance
    model = titok.load(final)
    labels = torch.arange(CLASSES).repeat(4)
    codes = model.generate(labels, randomize_temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(codes, labels[:, None].expand(-1, N))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "titok.cli", *args]


def kill_and_resume(cmd: list[str], run: Path, step: int, env: dict) -> subprocess.CompletedProcess:
    """Start ``cmd``, SIGKILL it once checkpoint ``step`` exists, run it again with ``--resume`` and check that it
    continued from the latest checkpoint (it did not start over)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    while not (run / "checkpoints" / f"checkpoint-{step}").is_dir():
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    latest = max((run / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    resumed = subprocess.run([*cmd, "--resume", "-v"], capture_output=True, text=True, env=env)
    assert f"resuming from {latest}" in resumed.stderr, resumed.stderr[-3000:]
    return resumed


def test_kill_and_resume_equals_an_uninterrupted_run(rule_tokens, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = recipe_file(tmp_path / "a", rule_tokens, max_steps=200, save_every=40)
    subprocess.run(_cli("train", "generator", str(straight)), check=True, capture_output=True, env=env)

    killed = recipe_file(tmp_path / "b", rule_tokens, max_steps=200, save_every=40)
    run = tmp_path / "b" / "run"
    resumed = kill_and_resume(_cli("train", "generator", str(killed)), run, 80, env)
    assert resumed.returncode == 0, resumed.stderr
    a, b = losses(tmp_path / "a" / "run"), losses(run)
    assert sorted(b) == list(range(1, 201))
    assert all(a[s] == b[s] for s in a), [s for s in a if a[s] != b[s]][:5]


def test_two_processes_end_with_identical_weights(rule_tokens, tmp_path):
    path = recipe_file(tmp_path, rule_tokens, max_steps=20, batch_size=8, save_every=10)
    script = Path(__file__).parent / "scripts" / "dist_generator.py"
    out = launch([str(script), str(path)])
    assert out.returncode == 0, out.stderr[-3000:]
    w0, w1 = (torch.load(tmp_path / "run" / f"rank{r}.pt") for r in (0, 1))
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    initial = titok.models.build_model(GeneratorRecipe.from_dict(read_recipe(path)).model_config()).state_dict()
    assert any(not torch.equal(w0[k], initial[k]) for k in w0)  # it trained
    assert titok.load(tmp_path / "run" / "final").num_tokens == N


def test_a_nan_in_one_process_stops_both(rule_tokens, tmp_path):
    path = recipe_file(tmp_path, rule_tokens, max_steps=40, batch_size=8, save_every=10)
    script = Path(__file__).parent / "scripts" / "dist_generator.py"
    out = launch([str(script), str(path)], timeout=180, TITOK_TEST_NAN_RANK="1")
    assert out.returncode != 0
    assert "step 15: loss = nan; stopping" in out.stderr  # process 1
    assert "step 15: non-finite values in 1 other process(es); stopping" in out.stderr  # process 0, not left waiting
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-10").is_dir()


def test_an_existing_run_is_not_overwritten(rule_tokens, tmp_path):
    path = recipe_file(tmp_path, rule_tokens, max_steps=2, save_every=1)
    assert main(["train", "generator", str(path)]) == 0
    assert main(["train", "generator", str(path)]) == 2  # checkpoints exist and no --resume


def test_start_messages_and_a_finished_run_on_resume(rule_tokens, tmp_path, capsys):
    path = recipe_file(tmp_path, rule_tokens, max_steps=4, save_every=2)
    assert main(["train", "generator", str(path)]) == 0
    err = capsys.readouterr().err
    params = sum(p.numel() for p in titok.load(tmp_path / "run" / "final").parameters())
    assert "training generator: BertGenerator, 1 process(es) on cpu" in err
    assert f"{params:,} parameters" in err and "data: 256 items" in err and "starting from step 0" in err
    weights = tmp_path / "run" / "final" / "model.safetensors"
    written = weights.stat().st_mtime_ns
    assert main(["train", "generator", str(path), "--resume"]) == 0
    out = capsys.readouterr()
    assert "is finished (step 4 of 4): nothing to train" in out.err and "finished run, nothing to do" in out.out
    assert weights.stat().st_mtime_ns == written and "training generator" not in out.err
    assert main(["train", "generator", str(path), "--resume", "train.max_steps=6"]) == 0
    out = capsys.readouterr()
    assert "checkpoint-4 (step 4)" in out.err and "exported" in out.out and weights.stat().st_mtime_ns != written


def test_tokens_of_another_codebook_are_rejected(rule_tokens, tmp_path, capsys):
    path = recipe_file(tmp_path, rule_tokens)
    assert main(["train", "generator", str(path), "model.codebook_size=32"]) == 2
    err = capsys.readouterr().err
    assert "codebook size 16" in err and "codebook_size is 32" in err


def test_unknown_recipe_keys_are_named(rule_tokens, tmp_path, capsys):
    path = recipe_file(tmp_path, rule_tokens)
    assert main(["train", "generator", str(path), "train.max_stepz=3"]) == 2
    assert "unknown key(s) ['max_stepz']" in capsys.readouterr().err
    assert main(["train", "generator", str(path), "masking.schedule=exp"]) == 2
    assert "masking.schedule: 'exp' is not one of" in capsys.readouterr().err


def test_nan_loss_stops_with_the_last_checkpoint_intact(rule_tokens, tmp_path, monkeypatch, caplog):
    import titok.train.generator as recipe_module

    real, calls = recipe_module.masked_token_loss, []

    def poisoned(*args, **kwargs):  # the loss turns NaN at step 25, after the checkpoints of steps 10 and 20
        calls.append(1)
        loss, accuracy = real(*args, **kwargs)
        return (loss * float("nan") if len(calls) >= 25 else loss), accuracy

    monkeypatch.setattr(recipe_module, "masked_token_loss", poisoned)
    path = recipe_file(tmp_path, rule_tokens, max_steps=40, save_every=10)
    assert main(["train", "generator", str(path)]) == 2
    assert "step 25: loss = nan; stopping (the last good checkpoint" in caplog.text
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-10", "checkpoint-20"]
    state = torch.load(tmp_path / "run" / "checkpoints" / "checkpoint-20" / "state.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    monkeypatch.setattr(recipe_module, "masked_token_loss", real)
    assert main(["train", "generator", str(path), "--resume"]) == 0  # and the run can go on from there


def test_pretokenize_resumes_and_matches_tokenize(tmp_path):
    tok = build("titok_pixels_vq")
    tok.save_pretrained(tmp_path / "tok")
    out = tmp_path / "tokens"
    args = [
        "pretokenize",
        str(tmp_path / "tok"),
        "fashion-mnist:test",
        "--limit",
        "40",
        "-o",
        str(out),
        "--batch-size",
        "16",
        "--num-workers",
        "0",
        "--device",
        "cpu",
    ]
    shard = out / "shard-0"
    shard.mkdir(parents=True)  # an interrupted run that wrote its first batch (16 images), then died
    from titok.data.build import DataConfig, build_dataset
    from titok.data.tokens import ShardWriter

    data = build_dataset(DataConfig(split="test", limit=40), 32, train=False)
    images = torch.stack([data[i][0] for i in range(40)])
    expected = tok.tokenize(images).numpy()
    writer = ShardWriter(out, 0, 1, 40, 4, np.dtype(np.uint16))
    labels = np.array([data[i][1] for i in range(16)])
    sentinel = np.full((16, 4), 31)  # not what the tokenizer gives: proves these rows are kept, not redone
    writer.write(sentinel, labels, np.arange(16), np.ones(16, bool))
    assert main(args) == 0
    tokens = TokenDataset(out)
    assert len(tokens) == 40 and not shard.exists()
    assert np.array_equal(tokens.codes[:16], sentinel) and np.array_equal(tokens.codes[16:], expected[16:])
    assert [tokens[i][1] for i in range(40)] == [int(data[i][1]) for i in range(40)]


def test_generate_cli_writes_a_grid(tmp_path, capsys):
    build("titok_pixels_vq").save_pretrained(tmp_path / "tok")
    gen = titok.models.build_model(titok.GeneratorConfig(**{**MODEL, "codebook_size": 32}))
    gen.save_pretrained(tmp_path / "gen")
    grid, pngs = tmp_path / "grid.png", tmp_path / "pngs"
    assert (
        main(
            [
                "generate",
                str(tmp_path / "tok"),
                str(tmp_path / "gen"),
                "--classes",
                "1,3",
                "--per-class",
                "3",
                "-o",
                str(grid),
                "--out-dir",
                str(pngs),
                "--steps",
                "4",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert grid.is_file() and len(list(pngs.glob("*_class3.png"))) == 3
    assert Image.open(next(pngs.glob("*.png"))).size == (32, 32)  # the samples themselves, unscaled
    # one row per class (named on the left: "class 3" = 7 characters), 3 samples at 4x (128 + 2 * 2 px) under a header
    assert Image.open(grid).size == (6 * 7 + 12 + 3 * 132, 22 + 2 * 132)
    assert "num_sample_steps=4" in capsys.readouterr().out
    options = ["--guidance", "1.5", "--guidance-decay", "power-cosine", "--guidance-pow", "2.5", "--temperature", "0.5"]
    options += ["--no-anneal", "--schedule", "sqrt"]  # the short spellings of --no-annealing, --mask-schedule
    assert main(["generate", str(tmp_path / "tok"), str(tmp_path / "gen"), "-o", str(grid), *options]) == 0
    used = capsys.readouterr().out.split("sampling: ")[1].splitlines()[0]
    for setting in [
        "guidance_scale=1.5",
        "guidance_decay=power-cosine",
        "guidance_scale_pow=2.5",
        "mask_schedule=sqrt",
    ]:
        assert setting in used
    assert "randomize_temperature=0.5" in used and "softmax_temperature_annealing=False" in used
    assert main(["generate", str(tmp_path / "tok"), str(tmp_path / "gen"), "--classes", "9", "-o", str(grid)]) == 2
    assert "class id 9 is out of range" in capsys.readouterr().err
    build("bert").save_pretrained(tmp_path / "gen16")  # codebook 16: does not fit the tokenizer's 32
    assert main(["generate", str(tmp_path / "tok"), str(tmp_path / "gen16"), "-o", str(grid)]) == 2
    assert "codes of 16" in capsys.readouterr().err


def test_generate_cli_writes_the_codes_that_detokenize_to_its_samples(tmp_path):
    build("titok_pixels_vq").save_pretrained(tmp_path / "tok")
    titok.models.build_model(titok.GeneratorConfig(**{**MODEL, "codebook_size": 32})).save_pretrained(tmp_path / "gen")
    tok, gen, codes, pngs = (str(tmp_path / x) for x in ("tok", "gen", "codes.npz", "pngs"))
    options = ["--classes", "2,0", "--per-class", "2", "--steps", "3", "--device", "cpu", "--precision", "fp32"]
    assert main(["generate", tok, gen, "--codes", codes, "--out-dir", pngs, *options]) == 0
    with np.load(codes) as data:
        assert data["codes"].shape == (4, 4) and data["codes"].dtype == np.int64
        assert data["labels"].tolist() == [2, 2, 0, 0] and str(data["model"]) == tok
    assert main(["detokenize", tok, codes, "-o", str(tmp_path / "decoded"), "--precision", "fp32"]) == 0
    for sample, decoded in zip(sorted(Path(pngs).glob("*.png")), sorted((tmp_path / "decoded").glob("*.png"))):
        assert np.array_equal(np.asarray(Image.open(sample)), np.asarray(Image.open(decoded)))
    assert main(["generate", tok, gen, "--unconditional", "3", "--codes", codes, *options[4:]]) == 0
    with np.load(codes) as data:
        assert data["codes"].shape == (3, 4) and data["labels"].tolist() == [-1, -1, -1]


def test_pretokenize_two_processes_equal_one(tmp_path):
    build("titok_pixels_vq").save_pretrained(tmp_path / "tok")
    common = [
        str(tmp_path / "tok"),
        "fashion-mnist:test",
        "--limit",
        "30",
        "--flip",
        "--num-workers",
        "0",
        "--device",
        "cpu",
        "--batch-size",
        "8",
    ]
    assert main(["pretokenize", *common, "-o", str(tmp_path / "one")]) == 0
    out = launch(["-m", "titok.cli", "pretokenize", *common, "-o", str(tmp_path / "two")])
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("codes", "labels", "sources"):
        one, two = (np.load(tmp_path / d / f"{name}.npy") for d in ("one", "two"))
        assert np.array_equal(one, two), name
    assert len(np.load(tmp_path / "one" / "codes.npy")) == 60  # 30 images and their flipped copies


def test_pretokenize_skips_and_counts_a_corrupt_image(tmp_path, capsys):
    from PIL import Image

    build("titok_pixels_vq").save_pretrained(tmp_path / "tok")
    for cls in ("cats", "dogs"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 36), (i * 60, 20, 90)).save(tmp_path / "data" / cls / f"{i}.png")
    (tmp_path / "data" / "dogs" / "1.png").write_bytes(b"broken")
    args = [
        "pretokenize",
        str(tmp_path / "tok"),
        str(tmp_path / "data"),
        "-o",
        str(tmp_path / "t"),
        "--num-workers",
        "0",
        "--device",
        "cpu",
    ]
    assert main(args) == 1
    assert "5 sequence(s)" in capsys.readouterr().out
    tokens = TokenDataset(tmp_path / "t")
    assert tokens.meta.skipped == 1 and sorted(int(x) for x in tokens.labels) == [0, 0, 0, 1, 1]


def test_data_position_is_saved_and_survives_a_batch_size_change(rule_tokens, tmp_path):
    path = recipe_file(tmp_path, rule_tokens, max_steps=10, save_every=10, batch_size=8)
    assert main(["train", "generator", str(path)]) == 0
    ckpt = tmp_path / "run" / "checkpoints"
    assert torch.load(ckpt / "checkpoint-10" / "state.pt", weights_only=True)["data_position"] == 80
    assert main(["train", "generator", str(path), "--resume", "train.max_steps=20", "train.batch_size=16"]) == 0
    assert torch.load(ckpt / "checkpoint-20" / "state.pt", weights_only=True)["data_position"] == 80 + 10 * 16


def test_a_resume_with_another_process_count_keeps_the_items_taken_in_all(rule_tokens, tmp_path, caplog):
    path = recipe_file(tmp_path, rule_tokens, max_steps=10, save_every=10, batch_size=8)
    assert main(["train", "generator", str(path)]) == 0
    state_file = tmp_path / "run" / "checkpoints" / "checkpoint-10" / "state.pt"
    state = torch.load(state_file, weights_only=True)
    assert state["data_world"] == 1
    state["data_world"] = 2  # as if two processes had taken 80 items each
    torch.save(state, state_file)
    assert main(["train", "generator", str(path), "--resume", "train.max_steps=11"]) == 0
    assert "written by 2 process(es), this run has 1" in caplog.text
    ckpt = tmp_path / "run" / "checkpoints" / "checkpoint-11" / "state.pt"
    assert torch.load(ckpt, weights_only=True)["data_position"] == 160 + 8


def test_activation_checkpointing_option_trains(rule_tokens, tmp_path):
    path = recipe_file(tmp_path, rule_tokens, max_steps=3, save_every=3, activation_checkpointing=True)
    assert main(["train", "generator", str(path)]) == 0
    assert titok.load(tmp_path / "run" / "final").num_tokens == N
