"""experiments/ordered_tokens.py: scores prefixes, codecs at matched bytes, generation and adaptive length on a few
test images with tiny models, and writes the results JSON and the report (tables, plots, the commands)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from tiny import tiny_titok

from titok.models import GeneratorConfig, build_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ot():
    spec = importlib.util.spec_from_file_location("ordered_tokens", ROOT / "experiments" / "ordered_tokens.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_token_bytes_and_codec_matching(ot):
    assert ot.token_bytes(16, 1024) == 20 and ot.token_bytes(3, 256) == 3
    curve = [{"quality": q, "bytes": b, "psnr": 0.0, "rfd": 0.0} for q, b in ((1, 300), (10, 400), (50, 900))]
    picked = ot.matched(curve, {4: 100.0, 32: 380.0, 64: 1000.0})
    assert [(m["k"], m["quality"], m["reachable"]) for m in picked] == [(4, 1, False), (32, 10, True), (64, 50, True)]


def test_codec_round_trip_counts_the_whole_file(ot):
    grey = torch.rand(1, 32, 32).expand(3, -1, -1)
    size, decoded = ot.codec_round_trip("jpeg", grey, 50)
    assert decoded.shape == (3, 32, 32) and size > 100  # JPEG headers alone take more
    small, _ = ot.codec_round_trip("webp", grey, 0)
    large, _ = ot.codec_round_trip("webp", grey, 90)
    assert 0 < small < large


def test_evaluate_and_report_end_to_end(ot, tmp_path, capsys):
    torch.manual_seed(0)
    for name, ordered in (("ordered", True), ("fixed", False)):
        build_model(tiny_titok(num_tokens=8, ordered=ordered)).save_pretrained(tmp_path / name)
    build_model(tiny_titok(num_tokens=8, ordered=True, tail="cut")).save_pretrained(tmp_path / "cut")
    gen = GeneratorConfig(codebook_size=32, num_tokens=8, num_classes=10, hidden_size=16, depth=1, num_heads=2,
                          mlp_dim=32, ordered=True)  # fmt: skip
    build_model(gen).save_pretrained(tmp_path / "gen")
    results, doc = tmp_path / "r.json", tmp_path / "report.md"
    argv = ["evaluate", "--ordered", str(tmp_path / "ordered"), "--fixed", str(tmp_path / "fixed"), "--generator",
            str(tmp_path / "gen"), "--num", "12", "--gen-num", "10", "--threads", "1", "--psnr-targets", "10,30",
            "--adaptive-num", "5", "--tails", f"learned={tmp_path / 'ordered'}", f"cut={tmp_path / 'cut'}",
            "--results", str(results), "--doc", str(doc)]  # fmt: skip
    ot.main(argv)
    r = json.loads(results.read_text())
    assert r["command"] == "python experiments/ordered_tokens.py " + " ".join(argv)
    assert r["settings"]["images"] == 12 and r["settings"]["gen_samples"] == 10
    ordered = r["tokenizers"]["ordered"]
    assert ordered["ordered"] and not r["tokenizers"]["fixed"]["ordered"]
    assert [p["k"] for p in ordered["curve"]] == [1, 2, 4, 8] and ordered["curve"][2]["bytes"] == 4 * 5 / 8
    assert all(p["psnr"] > 0 and p["rfd"] >= 0 for p in ordered["curve"])
    for codec in ("jpeg", "webp"):
        assert len(r["codecs"][codec]) == len(ot.CODEC_QUALITIES[codec]) and len(r["matched"][codec]) == 4
    assert [p["k"] for p in r["generation"]["ordered"]["points"]] == [4, 8] and "fixed" not in r["generation"]
    assert [a["psnr"] for a in r["adaptive"]] == [10.0, 30.0] and r["settings"]["adaptive_images"] == 5
    assert all(1 <= a["mean_k"] <= 8 and 0 <= a["met"] <= 1 for a in r["adaptive"])
    assert r["tails"]["cut"]["tail"] == "cut" and [p["k"] for p in r["tails"]["cut"]["curve"]] == [1, 2, 4, 8]
    assert r["tails"]["learned"]["curve"] == ordered["curve"]  # the same model scores the same
    text = doc.read_text()
    assert "## Learned tail against cut tail" in text and "(report/tails.png)" in text
    assert "Measured on the first 5 of the scored test images." in text
    assert f"Every number below comes from `{r['command']}`" in text
    assert f"python experiments/ordered_tokens.py report --results {results} --doc {doc}" in text
    for png in ("tokens", "bytes", "generation"):
        assert (tmp_path / "report" / f"{png}.png").stat().st_size > 5000
        assert f"(report/{png}.png)" in text
    for heading in ("## Quality against the number of tokens", "## Against bytes: JPEG and WebP",
                    "## Generation at any length", "## Adaptive length"):  # fmt: skip
        assert heading in text
    assert "| 8 | 5.0 |" in text  # k = N: 8 codes of 32 (5 bits each) = 5 bytes
    assert "**Findings.** The ordered tokenizer's PSNR" in text and "At k = N = 8" in text


def test_the_tails_verdict_names_the_lengths_each_tail_leads(ot, tmp_path):
    sys.path.insert(0, str(ROOT / "experiments"))
    from ordered_tokens_report import tails_section

    def entry(tail, psnrs):
        return {
            "path": tail,
            "tail": tail,
            "curve": [{"k": k, "psnr": p, "rfd": 1.0} for k, p in zip((1, 2, 4), psnrs)],
        }

    mixed = {"tails": {"learned": entry("learned", [3, 4, 5]), "cut": entry("cut", [2, 4.5, 6])}}
    verdict = tails_section(mixed, tmp_path / "a")[-2]
    assert "Neither is better at every length: `learned` leads at k = 1; `cut` leads at k = 2, 4." in verdict
    clear = {"tails": {"learned": entry("learned", [3, 4, 5]), "cut": entry("cut", [2, 3, 4])}}
    assert "`learned` has the higher PSNR at every length." in tails_section(clear, tmp_path / "b")[-2]


def test_train_runs_the_unfinished_steps_resumes_cut_ones_and_the_report_names_them(ot, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    (runs / "tail_learned" / "final").mkdir(parents=True)
    (runs / "tail_learned" / "final" / "config.json").write_text("{}")  # finished
    (runs / "tail_cut" / "checkpoints").mkdir(parents=True)  # cut short
    calls = []

    def fake_run(cmd, env):
        calls.append(cmd[3:])
        assert cmd[1:3] == ["-m", "titok.cli"] and env["OMP_NUM_THREADS"] == "1"
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(ot.subprocess, "run", fake_run)
    ot.main(["train", "--runs", str(runs), "--threads", "1"])
    assert [c[:3] for c in calls] == [
        ["train", "tokenizer", "ordered_vq_fmnist_perceptual"],
        ["train", "tokenizer", "single_stage_vq_fmnist"],
        ["pretokenize", str(runs / "tokenizer" / "final"), "fashion-mnist:train"],
        ["train", "generator", "fmnist_ordered"],
    ]
    assert calls[1][3] == "--resume" and "model.tail=cut" in calls[1] and "--resume" not in calls[0]
    assert f"tokens={runs / 'tokens'}" in calls[3] and f"tokenizer={runs / 'tokenizer' / 'final'}" in calls[3]

    calls.clear()  # an existing tokenizer: no tokenizer step, its codes for the generator
    ot.main(["train", "--runs", str(runs), "--threads", "1", "--tokenizer", "shipped", "--only", "tokens"])
    assert calls == [["pretokenize", "shipped", "fashion-mnist:train", "-o", str(runs / "tokens"), "--flip"]]
    with pytest.raises(SystemExit):
        ot.main(["train", "--runs", str(runs), "--only", "vqgan"])

    monkeypatch.setattr(ot.subprocess, "run", lambda cmd, env: type("Done", (), {"returncode": 3})())
    with pytest.raises(SystemExit, match="tokenizer: failed \\(exit 3\\)"):
        ot.main(["train", "--runs", str(runs), "--threads", "1"])

    sys.path.insert(0, str(ROOT / "experiments"))
    from ordered_tokens_report import training_section

    text = "\n".join(training_section(ot.plan(Path("runs/o")), Path("runs/o")))
    assert "`python experiments/ordered_tokens.py train --runs runs/o`" in text
    assert "titok train tokenizer single_stage_vq_fmnist model.ordered=true model.tail=cut" in text
    assert "titok pretokenize runs/o/tokenizer/final fashion-mnist:train -o runs/o/tokens --flip" in text
