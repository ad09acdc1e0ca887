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
    for argv in (["tokenize", "--help"], ["eval", "gen", "--help"], ["train", "--list"], ["export", "--help"]):
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
