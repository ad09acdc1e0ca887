"""The ``titok serve`` command: it serves the shipped models by default on localhost and says where, stops on
Ctrl-C, and refuses what it cannot do with a message."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading

import httpx
import pytest
import torch
from serving import save_tiny_models

import titok
from titok.cli import build_parser, main
from titok.cli.common import CommandError
from titok.cli.serve import _engine, _is_loopback
from titok.data.datasets import FASHION_MNIST_CLASSES
from titok.demo import GENERATOR


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    return save_tiny_models(tmp_path_factory.mktemp("serve-cli"))


def test_serve_says_where_it_listens_serves_the_shipped_models_and_stops_on_ctrl_c():
    command = [sys.executable, "-m", "titok.cli", "serve", "--port", "0", "--precision", "fp32", "--device", "cpu"]
    # Ctrl-C as a terminal delivers it: a shell that started this test in the background may have set SIGINT to
    # "ignored", which children inherit (Python then installs no KeyboardInterrupt handler)
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint
    )
    timer = threading.Timer(120, process.kill)  # a hung server fails the test instead of hanging it
    timer.start()
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        found = re.search(r"listening on (http://127\.0\.0\.1:(\d+)/) \(Ctrl-C to stop\)", lines[1])
        assert found, lines
        shipped = "the shipped Fashion-MNIST model"
        assert lines[0] == f"tokenizer: {shipped}; generator: {shipped}; precision: fp32 on cpu (asked)\n"
        info = httpx.get(found.group(1) + "api/info", timeout=30).json()
        assert info["generator"]["classes"] == list(FASHION_MNIST_CLASSES)
        assert info["tokenizer"]["num_tokens"] == 32 and info["precision"].startswith("fp32")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130  # the status of every titok command stopped by Ctrl-C
    finally:
        timer.cancel()
        process.kill()
        err = process.communicate()[1]
    assert err.splitlines() == ["precision: fp32 on cpu (asked)", "interrupted"]


def test_a_port_in_use_is_an_error_that_says_so(tiny_models, capsys):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        status = main(["serve", "--tokenizer", str(tiny_models[0]), "--port", str(port), "--device", "cpu"])
    assert status == 2
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in capsys.readouterr().err


def test_without_the_demo_extra_the_error_names_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if uvicorn were not installed
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "titok serve needs the 'demo' extra (uvicorn is not installed): pip install 'titok-tokenizer[demo]'" in err


def _args(*argv: str):
    args = build_parser().parse_args(["serve", *argv])
    args.device, args.precision = torch.device("cpu"), "fp32"
    return args


def test_a_tokenizer_alone_is_served_without_a_generator(tiny_models):
    engine = _engine(_args("--tokenizer", str(tiny_models[0])))
    assert engine.generator is None and engine.names == (str(tiny_models[0]), "")
    assert engine.info()["tokenizer"]["ordered"] is True


def test_class_names_come_from_a_file_one_a_line(tiny_models, tmp_path):
    models = ["--tokenizer", str(tiny_models[0]), "--generator", str(tiny_models[1])]
    (tmp_path / "names.txt").write_text("cat\ndog\n\nbird\n")
    engine = _engine(_args(*models, "--class-names", str(tmp_path / "names.txt")))
    assert engine.info()["generator"]["classes"] == ["cat", "dog", "bird"]
    assert _engine(_args(*models)).info()["generator"]["classes"] == ["class 0", "class 1", "class 2"]
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    with pytest.raises(CommandError, match="2 class names for a generator of 3"):
        _engine(_args(*models, "--class-names", str(tmp_path / "names.txt")))


def test_models_that_do_not_fit_are_refused(tiny_models, capsys):
    argv = ["serve", "--tokenizer", str(tiny_models[0]), "--generator", str(tiny_models[0]), "--device", "cpu"]
    assert main(argv) == 2
    assert "error: the generator is a TiTok, not a generator" in capsys.readouterr().err
    assert main(["serve", "--tokenizer", str(tiny_models[0]), "--generator", str(GENERATOR), "--device", "cpu"]) == 2
    codebook = titok.load(GENERATOR).codebook_size
    assert f"the generator models 32 codes of {codebook}; the tokenizer has 8 codes of 32" in capsys.readouterr().err


@pytest.mark.parametrize("host,local", [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False)])
def test_which_hosts_are_local(host, local):
    assert _is_loopback(host) is local
