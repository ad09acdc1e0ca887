"""Bad inputs and faults on the command line: each gets a clear answer and its exit status; nothing hangs, nothing
already done is lost."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from tiny import build

import titok
from titok.cli import main

NON_UTF8 = os.fsdecode(b"caf\xe9")  # Latin-1 bytes: not a valid UTF-8 name


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    build("titok_pixels_vq").save_pretrained(root / "model")  # 32 px, 4 codes of 32
    build("titok_vae").save_pretrained(root / "vae")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(images / f"{name}.png")
    return root


def _in_time(call, seconds: float = 60):
    """``call()``'s result; fails (instead of hanging the suite) if it does not return within ``seconds``."""
    result = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert result, f"still running after {seconds} s: hangs"
    return result[0]


# --- exit codes ---------------------------------------------------------------------------------------------------


def test_help_lists_the_exit_codes():
    out = subprocess.run([sys.executable, "-m", "titok.cli", "--help"], capture_output=True, text=True, check=True)
    assert "exit status:" in out.stdout
    for line in (
        "0    all done",
        "1    done, but some inputs were skipped",
        "2    usage or input error",
        "3    unexpected",
    ):
        assert line in out.stdout


def test_an_unexpected_failure_is_one_line_and_status_3(ws, monkeypatch, capsys):
    import titok.cli.info

    def broken(model):
        raise RuntimeError("something inside broke\nsecond line")

    monkeypatch.setattr(titok.cli.info, "describe", broken)
    assert main(["info", str(ws / "model")]) == 3
    err = capsys.readouterr().err
    assert err == "error: unexpected failure: RuntimeError: something inside broke (run with -v for the traceback)\n"
    assert main(["info", str(ws / "model"), "-v"]) == 3
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_usage_errors_are_status_2():
    with pytest.raises(SystemExit) as e:
        main(["tokenize"])
    assert e.value.code == 2


# --- outputs checked before the work ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv,message",
    [
        (["tokenize", "MODEL", "IMAGES", "-o", "DIR"], "-o DIR is a folder"),
        (["tokenize", "MODEL", "IMAGES", "-o", "FILE/c.npz"], "FILE/c.npz: /"),
        (["detokenize", "MODEL", "codes.npz", "-o", "FILE"], "-o FILE exists and is not a folder"),
        (["reconstruct", "MODEL", "IMAGES", "-o", "FILE"], "-o FILE exists and is not a folder"),
        (["reconstruct", "MODEL", "IMAGES", "-o", "FILE/sub"], "FILE is not a folder"),
        (["generate", "MODEL", "MODEL", "-o", "DIR"], "-o DIR is a folder"),
        (["generate", "MODEL", "MODEL", "--out-dir", "FILE"], "--out-dir FILE exists and is not a folder"),
        (["generate", "MODEL", "MODEL", "--codes", "DIR"], "--codes DIR is a folder"),
        (["pretokenize", "MODEL", "IMAGES", "-o", "FILE"], "-o FILE exists and is not a folder"),
        (["eval", "recon", "MODEL", "IMAGES", "-o", "DIR"], "-o DIR is a folder"),
        (["eval", "gen", "MODEL", "MODEL", "--ref", "x.npz", "-o", "DIR"], "-o DIR is a folder"),
        (["eval", "gen", "MODEL", "MODEL", "--ref", "x.npz", "--export-npz", "DIR"], "--export-npz DIR is a folder"),
        (["eval", "stats", "IMAGES", "--size", "32", "-o", "DIR"], "-o DIR is a folder"),
        (["demo", "--out", "DIR"], "--out DIR is a folder"),
    ],
)
def test_outputs_are_checked_before_the_work(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    Path("DIR").mkdir()
    Path("FILE").write_text("a file")
    # the model does not exist: an error about it would mean the output was checked after loading
    assert main([*argv, "--device", "cpu"] if argv[0] != "demo" else argv) == 2
    err = capsys.readouterr().err
    assert message in err and "folder" in err and "MODEL" not in err


def test_an_unwritable_output_folder_is_refused(tmp_path, monkeypatch, capsys, ws):
    import titok.cli.common

    def refuse(prefix, dir):
        raise PermissionError(13, "Permission denied")  # as in a read-only folder (chmod does not stop root)

    monkeypatch.setattr(titok.cli.common.tempfile, "mkstemp", refuse)
    assert main(["tokenize", str(ws / "model"), str(ws / "images"), "-o", str(tmp_path / "c.npz")]) == 2
    assert f"cannot write in {tmp_path} (Permission denied)" in capsys.readouterr().err


def test_a_training_run_checks_its_output_folder_before_the_data(tmp_path, monkeypatch, capsys):
    import titok.cli.train

    monkeypatch.chdir(tmp_path)
    Path("FILE").write_text("a file")
    monkeypatch.setattr(titok.cli.train, "_run", lambda *a: pytest.fail("the run started"))
    argv = ["train", "tokenizer", "single_stage_vq_fmnist", "train.output_dir=FILE/run"]
    assert main(argv) == 2
    assert "train.output_dir FILE/run: " in capsys.readouterr().err


# --- bad input files ----------------------------------------------------------------------------------------------


def test_bad_images_are_skipped_and_the_rest_done(ws, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes((ws / "images" / name).read_bytes())
    Image.new("L", (3_000_000, 1)).save(folder / "strip.png")  # 3 KB; resized it would be 256 x 768,000,000
    os.mkfifo(folder / "fifo.png")
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    os.mkfifo(tmp_path / "given.png")
    out = tmp_path / "codes.npz"
    argv = ["tokenize", str(ws / "model"), str(folder), str(tmp_path / "given.png"), "-o", str(out)]
    assert _in_time(lambda: main(argv)) == 1
    err = capsys.readouterr().err
    assert "4 of 6 input(s) could not be read and were skipped" in err
    assert "aspect ratio 3,000,000:1" in err and err.count("FIFO") == 2 and "symbolic link loop" in err
    with np.load(out) as data:
        assert [Path(f).name for f in data["files"]] == ["a.png", "b.png"]


def test_reconstruct_writes_non_utf8_names_as_their_bytes(ws, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / f"{NON_UTF8}.png").write_bytes((ws / "images" / "a.png").read_bytes())
    (folder / "with,comma.png").write_bytes((ws / "images" / "b.png").read_bytes())
    out = tmp_path / "out"
    assert main(["reconstruct", str(ws / "model"), str(folder), "-o", str(out)]) == 0
    assert "caf\\udce9.png" in capsys.readouterr().out  # printed with the bad byte escaped
    raw = (out / "psnr.csv").read_bytes()
    assert os.fsencode(str(folder / NON_UTF8)) + b".png" in raw  # the file's own name, byte for byte
    rows = list(csv.reader(raw.decode("utf-8", "surrogateescape").splitlines()))
    assert [Path(r[0]).name for r in rows[1:]] == [f"{NON_UTF8}.png", "with,comma.png"]
    assert sorted(os.listdir(os.fsencode(out))) == [b"00000_caf\xe9.png", b"00001_with,comma.png", b"psnr.csv"]


def _codes(ws, tmp_path) -> Path:
    path = tmp_path / "codes.npz"
    assert main(["tokenize", str(ws / "model"), str(ws / "images"), "-o", str(path)]) == 0
    return path


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.uint64])
def test_detokenize_takes_any_integer_dtype(ws, tmp_path, dtype):
    with np.load(_codes(ws, tmp_path)) as data:
        codes, files = data["codes"], data["files"]
    np.savez(tmp_path / "small.npz", codes=codes.astype(dtype), files=files)
    assert main(["detokenize", str(ws / "model"), str(tmp_path / "small.npz"), "-o", str(tmp_path / "a")]) == 0
    assert main(["detokenize", str(ws / "model"), str(tmp_path / "codes.npz"), "-o", str(tmp_path / "b")]) == 0
    for name in ("00000_a.png", "00001_b.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def _truncated(source: Path, path: Path) -> None:
    path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p, c: np.savez(p, codes=np.zeros((2, 4), np.int64), files=np.array("a.png")), "'files' is <U5 ()"),
        (lambda p, c: np.savez(p, codes=np.zeros((2, 4), np.int64), files=np.array(["a"])), "one name per row"),
        (lambda p, c: p.write_bytes(b""), "not an .npz archive (a zip file written by np.savez): it is empty"),
        (lambda p, c: _truncated(c, p), "damaged or truncated"),
        (lambda p, c: np.save(p.with_suffix(".npy"), np.zeros(2)) or p.with_suffix(".npy").rename(p), "a single .npy"),
        (lambda p, c: np.savez(p, codes=np.zeros((2, 4), np.float32)), "'codes' are float32, but codes are integers"),
        (lambda p, c: p.write_text("codes: 1 2 3 4\n"), "not an .npz archive (a zip file written by np.savez): it st"),
        (lambda p, c: np.savez(p, codes=np.full((1, 4), 32)), "code 32 is out of range; this model's codes lie in"),
        (lambda p, c: np.savez(p, codes=np.full((1, 4), -1, np.int8)), "code -1 is out of range"),
        (lambda p, c: np.savez(p, codes=np.zeros((1, 4), bool)), "'codes' are bool, but codes are integers"),
        (lambda p, c: np.savez(p, codes=np.zeros((1, 2, 4), np.int64)), "holds codes (1, 2, 4); expected (B, K)"),
        (lambda p, c: os.mkfifo(p), "is not a regular file"),
    ],
)
def test_detokenize_explains_bad_files(ws, tmp_path, capsys, make, message):
    path = tmp_path / "bad.npz"
    make(path, _codes(ws, tmp_path))
    capsys.readouterr()
    assert _in_time(lambda: main(["detokenize", str(ws / "model"), str(path), "-o", str(tmp_path / "out")])) == 2
    err = capsys.readouterr().err
    last = err.splitlines()[-1]  # after the precision line the command prints first
    assert last.startswith(f"error: {path}") or last.startswith(f"error: cannot read {path}")
    assert message in err and "latents must have shape" not in err and "pickled" not in err
    assert "Traceback" not in err


def test_detokenize_refuses_nonfinite_latents(ws, tmp_path, capsys):
    np.savez(tmp_path / "l.npz", latents=np.full((1, 4, 8), np.nan, np.float32))
    assert main(["detokenize", str(ws / "vae"), str(tmp_path / "l.npz"), "-o", str(tmp_path / "o")]) == 2
    assert "the latents hold NaN or infinite values" in capsys.readouterr().err


# --- model files --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["[1, 2]", '"a string"', "null", "\xff\xfe"])
def test_a_config_that_is_not_a_json_object_is_named(ws, tmp_path, capsys, text):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((ws / "model" / "model.safetensors").read_bytes())
    (folder / "config.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match=r"config.json (holds a JSON|is not UTF-8 text)"):
        titok.load(folder)
    assert main(["info", str(folder)]) == 2
    assert "config.json" in capsys.readouterr().err


def test_nonfinite_weights_are_refused_unless_allowed(ws, tmp_path, capsys):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_bytes((ws / "model" / "config.json").read_bytes())
    state = load_file(ws / "model" / "model.safetensors")
    key = sorted(state)[3]
    state[key] = state[key].clone()
    state[key].view(-1)[:2] = torch.tensor([float("nan"), float("inf")])
    save_file(state, folder / "model.safetensors")
    with pytest.raises(ValueError, match=rf"NaN or infinite weights: '{key}': 2 of .* allow_nonfinite=True"):
        titok.load(folder)
    model = titok.load(folder, allow_nonfinite=True)
    assert torch.isnan(model.state_dict()[key]).any()
    assert main(["info", str(folder)]) == 2 and key in capsys.readouterr().err


def test_a_truncated_zip_is_not_mistaken_for_a_good_one(tmp_path):
    np.savez(tmp_path / "c.npz", codes=np.zeros((2, 4), np.int64))
    _truncated(tmp_path / "c.npz", tmp_path / "t.npz")
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(tmp_path / "t.npz")


def test_eval_data_that_is_a_fifo_is_named(ws, tmp_path, capsys):
    os.mkfifo(tmp_path / "data.npz")
    argv = ["eval", "stats", str(tmp_path / "data.npz"), "--size", "32", "-o", str(tmp_path / "s.npz")]
    assert _in_time(lambda: main([*argv, "--extractor", "fmnist", "--device", "cpu"])) == 2
    assert f"{tmp_path / 'data.npz'} is a FIFO (named pipe); expected a folder" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["text", "npy", "truncated", "short data"])
def test_bad_npz_files_of_statistics_and_eval_data_are_named(ws, tmp_path, capsys, kind):
    from titok.metrics.fid import Statistics

    images = np.zeros((12, 32, 32, 3), np.uint8)
    path = tmp_path / "bad.npz"
    if kind == "text":
        path.write_text("mu sigma\n")
    elif kind == "npy":
        np.save(tmp_path / "a.npy", images)
        (tmp_path / "a.npy").rename(path)
    else:
        np.savez(tmp_path / "good.npz", arr_0=images, mu=np.zeros(2), sigma=np.eye(2))
        data = (tmp_path / "good.npz").read_bytes()
        path.write_bytes(data[: len(data) // 2] if kind == "truncated" else data[:200] + data[-100:])
    with pytest.raises(ValueError, match=f"{path}"):
        Statistics.load(path)
    argv = ["eval", "recon", str(ws / "model"), str(path), "--extractor", "fmnist", "--device", "cpu", "--workers", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "pickled" not in err and "Traceback" not in err
