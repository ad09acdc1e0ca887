"""Start-up: `titok --help` and every command's --help import no torch; options are never matched by prefix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from titok.cli import main

PROBE = """
import sys
from titok.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "torchvision", "PIL", "huggingface_hub") if m in sys.modules)
print("IMPORTED", heavy)
"""


def _imported(argv: list[str]) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_help_imports_no_torch():
    assert _imported(["--help"]) == "IMPORTED []"
    commands = (["tokenize", "--help"], ["eval", "gen", "--help"], ["train", "--list"], ["export", "--help"])
    for argv in (*commands, ["serve", "--help"]):
        assert _imported(argv) == "IMPORTED []", argv


def test_import_titok_is_lazy_and_complete():
    import titok

    for name in titok.__all__:
        assert getattr(titok, name) is not None, name


def test_sampling_choices_agree_with_titok_sampling():
    from titok import sampling
    from titok.cli import common as cli

    assert tuple(sampling.MASK_SCHEDULES) == cli.MASK_SCHEDULES
    assert tuple(sampling.GUIDANCE_DECAYS) == cli.GUIDANCE_DECAYS


@pytest.mark.parametrize(
    "argv",
    [
        ["pretokenize", "MODEL", "fashion-mnist:test", "-o", "out", "--num", "512"],
        ["tokenize", "MODEL", "x.png", "-o", "c.npz", "--batch", "4"],
        ["train", "tokenizer", "single_stage_vq_fmnist", "--res"],
    ],
)
def test_an_option_prefix_is_refused(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


LOAD_PROBE = """
import sys
import titok
from titok.models import build_model, get_preset, list_models
from titok.skeleton import skeleton
for name in ("fashion_mnist/tokenizer", "fashion_mnist/generator"):
    titok.load(titok.__path__[0] + "/assets/" + name)
for name in list_models():
    with skeleton():
        build_model(get_preset(name).config)
print("COMPILER", sorted(m for m in ("torch._dynamo", "torch._inductor", "torch.fx.experimental.symbolic_shapes")
                         if m in sys.modules))
"""


def test_loading_imports_no_compiler_stack():
    out = subprocess.run([sys.executable, "-c", LOAD_PROBE], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "COMPILER []"


def test_skeleton_matches_a_built_model():
    import torch

    from titok.models import build_model, get_preset, list_models
    from titok.skeleton import skeleton

    for name in list_models():
        config = get_preset(name).config
        with skeleton():
            empty = build_model(config)
        assert all(t.is_meta for t in empty.state_dict().values()), name
        if sum(t.numel() for t in empty.state_dict().values()) < 30_000_000:
            built = build_model(config)
            shapes = {k: (v.shape, v.dtype) for k, v in built.state_dict().items()}
            assert {k: (v.shape, v.dtype) for k, v in empty.state_dict().items()} == shapes, name
    with skeleton():
        t = 0.5 * torch.randn(2, 1, 3) + torch.rand((4, 1))
        n = torch.nn.init.trunc_normal_(torch.empty(3), std=0.02)
        i = torch.randint(0, 9, (5,))
    assert (t.shape, t.dtype, t.is_meta, n.is_meta, i.dtype) == ((2, 4, 3), torch.float32, True, True, torch.int64)


def test_hub_id_unreachable_fails_fast_naming_hf_hub_offline(tmp_path):
    import os
    import time

    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path)}
    env.pop("HF_HUB_OFFLINE", None)
    for extra, why in (({}, "cannot be reached"), ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set")):
        start = time.monotonic()
        cmd = [sys.executable, "-m", "titok.cli", "info", "someone/not-cached"]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**env, **extra}, timeout=60)
        assert time.monotonic() - start < 15  # huggingface_hub alone retries for ~25 s
        assert done.returncode != 0 and "HF_HUB_OFFLINE" in done.stderr and "someone/not-cached" in done.stderr
        assert why in done.stderr
