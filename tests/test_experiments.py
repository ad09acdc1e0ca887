"""experiments/fashion_mnist.py: the report is made from the results file alone, tables and plots."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fm():
    spec = importlib.util.spec_from_file_location("fashion_mnist", ROOT / "experiments" / "fashion_mnist.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _curve(*rfds: float) -> list[dict]:
    return [{"step": 1000 * (i + 1), "rfd": r, "psnr": 15.0, "usage": 0.9} for i, r in enumerate(rfds)]


def _recon(tokens: int, rfd: float, layout: str = "1d", width: int = 128) -> dict:
    return {"rfd": rfd, "psnr": 30 - rfd, "ssim": 0.5, "usage": 0.3, "params": 1.5e6, "num_tokens": tokens,
            "layout": layout, "patch_size": 4, "width": width, "depth": 2, "images": 2000, "codebook_size": 1024,
            "curve": _curve(1.2 * rfd, 1.05 * rfd, rfd)}  # fmt: skip


def test_report_writes_tables_plots_and_verdicts(fm, tmp_path):
    runs = sys.modules["fmnist_runs"]
    recon = {f"tokens{n}": _recon(n, 10 / n) for n in runs.TOKENS}
    recon |= {"sizeXS_tokens16": _recon(16, 1.0, width=64), "sizeM_tokens16": _recon(16, 0.5, width=192)}
    recon |= {"grid_tokens64": _recon(64, 0.3, "2d"), "grid_tokens16": _recon(16, 0.5, "2d")}
    recon |= {"grid_tokens4": _recon(4, 9.0, "2d")}
    stages = {
        "two_stage": {
            **_recon(32, 2.9),
            "steps": 6000,
            "images_seen": 192000,
            "teacher_steps": 3000,
            "teacher": {
                "usage": 0.996,
                "rfd": 0.857,
                "psnr": 24.56,
                "remedies": "clustering, restart_after=50",
                "codebook_size": 256,
            },
        },
        "single_stage": {**_recon(32, 1.5), "steps": 6000, "images_seen": 192000, "teacher_steps": 0},
    }
    gen = {f"{s}_{n}": {"gfd": 1.0 + n / 100 + i, "is": 5.0} for i, s in enumerate(runs.SCHEDULES) for n in runs.STEPS}
    speed = {"threads": 2, "batch": 100, "cpu": "x86_64", "tokenize": 5000.0, "detokenize": 4000.0}
    speed |= {f"generate_{n}": 100.0 / n for n in runs.STEPS} | {f"generate_decode_{n}": 90.0 / n for n in runs.STEPS}
    results = tmp_path / "results.json"
    sampling = {"num_sample_steps": 8, "mask_schedule": "arccos", "guidance_scale": 2.0, "guidance_decay": "linear",
                "randomize_temperature": 1.0}  # fmt: skip
    shipped = {"gfd": 1.234, "is": 4.5, "samples": 10000, "tokenizer": stages["two_stage"], "bytes": 13e6,
               "generator_params": 1.9e6, "sampling": sampling}  # fmt: skip
    shipped["previous"] = {**shipped, "gfd": 2.5, "tokenizer": {**stages["two_stage"], "codebook_size": 256}}
    curve = [{"step": s, "rfd": 9.0 / s, "psnr": 15 + s / 500, "usage": 0.5, "perplexity": 100.0} for s in (500, 1000)]
    remedies = {
        "vq": {**_recon(32, 5.0), "usage": 0.1, "overrides": "", "curve": curve, "steps": 2000},
        "vq_clustering": {**_recon(32, 2.0), "usage": 0.95, "overrides": "codebook.clustering=true", "curve": curve,
                          "steps": 2000},
    }  # fmt: skip
    everything = {"recon": recon, "stages": stages, "gen": gen, "speed": speed, "shipped": shipped}
    everything["remedies"] = remedies
    results.write_text(json.dumps(everything))
    doc = tmp_path / "doc.md"
    fm.main(["report", "--results", str(results), "--doc", str(doc)])
    text = doc.read_text()
    for png in ("tokens", "twin", "stages", "stages_curves", "generation", "remedies", "sweep_curves", "twin_curves"):
        assert (tmp_path / "doc" / f"{png}.png").stat().st_size > 5000
        assert f"(doc/{png}.png)" in text
    assert "The single-stage tokenizer is better by rFD-fmnist (2.900 two-stage, 1.500 single-stage) and" in text
    assert "The best by rFD-fmnist is `vq_clustering` (2.000, against 5.000 for the recipe as it was)." in text
    assert "Codebook usage reaches 0.9 with: `vq_clustering`." in text
    assert "| vq_clustering | codebook.clustering=true | 1.50M | 32 | 2.000 |" in text
    assert "uses 100% of its codes on the whole test split (codebook remedies: clustering, restart_after=50)" in text
    assert "the teacher itself reconstructs the test split at rFD-fmnist 0.857, PSNR 24.56 dB" in text
    assert (
        "## Codebook usage of each recipe" in text and "| `vqgan_fmnist` (the two-stage teacher) | 256 | 1.00 |" in text
    )
    assert "| `single_stage_vq_fmnist` (6,000 steps) | 1,024 | 0.30 |" in text
    assert "**Not reproduced** at this budget: the held-out curves settle the order." in text  # single-stage won
    assert "every doubling of the tokens: **reproduced** (tokens4 → tokens8: 2.500 → 1.250, as expected" in text
    assert (
        "With model size at 16 tokens: **reproduced** (sizeXS_tokens16 → tokens16: 1.000 → 0.625, as expected" in text
    )
    assert (
        "64 tokens: 1-D 0.156, 2-D 0.300, **reproduced**; 16 tokens: 1-D 0.625, 2-D 0.500, **not reproduced**" in text
    )
    assert "(64 tokens 0.52 then 0.52; 16 tokens 1.25 then 1.25; 4 tokens 0.28 then 0.28) holds: the 1-D" in text
    assert "reaches 0.500, against 0.500 for the base-size 2-D twin: size narrows the gap and closes it." in text
    assert "arccos is the best schedule at 8 steps (1.080): reproduced" in text
    assert "16 steps are no better than 8 with arccos (1.160 against 1.080)" in text
    assert "| generate + decode (8 steps) | 11 |" in text
    assert "| gFD-fmnist (10,000 samples) | 2.500 | 1.234 |" in text  # against the models shipped before
    assert "| gFD-fmnist | 1.234 |" in text and "8 steps, arccos, guidance 2.0 (linear), temperature 1.0" in text


def test_train_runs_a_group_in_parallel_and_skips_finished_runs(fm, tmp_path, monkeypatch):
    tiny = {"train.batch_size": 4, "data.split": "test", "data.limit": 16, "model.num_tokens": 4}
    monkeypatch.setitem(fm.GROUPS, "tiny", [fm.Run("a", tiny, steps=2), fm.Run("b", tiny, steps=2, checkpoints=2)])
    monkeypatch.setattr(fm, "RESULTS", tmp_path / "results.json")
    args = ["train", "--group", "tiny", "--runs", str(tmp_path / "runs"), "--jobs", "2", "--threads", "1"]
    fm.main(args)
    assert (tmp_path / "runs" / "a" / "final" / "config.json").is_file()
    assert (tmp_path / "runs" / "b" / "checkpoints" / "checkpoint-1").is_dir()  # two checkpoints: every step
    assert set(json.loads((tmp_path / "results.json").read_text())["train_seconds"]) == {"a", "b"}
    mtime = (tmp_path / "runs" / "a" / "final" / "config.json").stat().st_mtime
    fm.main(args)  # both done: nothing retrains
    assert (tmp_path / "runs" / "a" / "final" / "config.json").stat().st_mtime == mtime


def test_a_finding_is_settled_only_when_the_curves_say_so(fm):
    report = sys.modules["fmnist_report"]
    a = {"rfd": 1.0, "curve": _curve(3.0, 1.5, 1.0)}
    b = {"rfd": 2.0, "curve": _curve(2.5, 2.2, 2.0)}
    assert report.settled(a, b)  # a leads at the last two checkpoints; b closed 0.2 of a 1.0 gap
    assert report.expected({"few": b, "many": a}, [("few", "many")])[0] == "reproduced"
    assert report.expected({"few": a, "many": b}, [("few", "many")])[0] == "not reproduced"
    crossing = {"rfd": 1.0, "curve": _curve(3.0, 2.4, 1.0)}  # behind at the last but one checkpoint
    assert not report.settled(crossing, b)
    assert report.expected({"few": b, "many": crossing}, [("few", "many")])[0] == "not resolved at this budget"
    closing = {"rfd": 1.9, "curve": _curve(9.0, 6.0, 1.9)}  # fell 4.1 in its last interval, 0.9 behind
    assert not report.settled(a, closing)
    assert report.expected({"few": closing, "many": a}, [("few", "many")])[0] == "not resolved at this budget"
    runs = {"tokens4": b, "tokens8": a}
    assert report.incomplete("reproduced", ["tokens4", "tokens8", "tokens16"], runs) == (
        "not resolved at this budget (tokens16 not trained yet)"
    )
    assert report.incomplete("not reproduced", ["tokens4", "tokens16"], runs) == "not reproduced"
    assert report.incomplete("reproduced", ["tokens4", "tokens8"], runs) == "reproduced"
    assert not report.settled({"rfd": 1.0}, b)  # no learning curve, nothing settled


def test_two_stage_verdict_follows_the_curves(fm):
    report = sys.modules["fmnist_report"]
    two = {"rfd": 1.0, "psnr": 18.0, "ssim": 0.5, "curve": _curve(3.0, 1.5, 1.0)}
    one = {"rfd": 2.0, "psnr": 19.0, "ssim": 0.6, "curve": _curve(2.5, 2.2, 2.0)}
    won = report.stages_verdict(two, one)
    assert "By the paper's measure, **reproduced**" in won and "The pixel metrics favour the single-stage" in won
    assert "**Not reproduced**" in report.stages_verdict(one, two)
    closing = {**one, "curve": _curve(9.0, 6.0, 2.0)}  # still falling fast: the order may turn
    assert "**not resolved at this budget**" in report.stages_verdict(two, closing)
