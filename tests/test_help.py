"""Every command's help: no option listed twice, defaults shown, one description per command; pretokenize reruns
are no-ops; typos get a close-match suggestion."""

from __future__ import annotations

import argparse
import json
import re

import pytest
from tiny import build

import titok
from titok.cli import build_parser, main
from titok.models import TiTokConfig


def _subparsers(parser: argparse.ArgumentParser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*path, name), child
                yield from _subparsers(child, (*path, name))


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return capsys.readouterr().out


def test_eval_gen_lists_each_sampling_option_once(capsys):
    text = _help(["eval", "gen"], capsys)
    options = text[text.index("sampling (default") :]
    for option in ("--steps", "--guidance ", "--guidance-decay", "--temperature", "--annealing", "--mask-schedule"):
        assert options.count(option) == 1, option
    assert "--anneal," not in text and "--schedule " not in text and "arccos,cosine" not in options


def test_eval_subcommands_have_their_own_descriptions_and_outputs(capsys):
    texts = {what: _help(["eval", what], capsys) for what in ("recon", "gen", "stats")}
    first_lines = {what: text.split("\n\n")[1] for what, text in texts.items()}
    assert len(set(first_lines.values())) == 3
    assert "-o NPZ" in texts["stats"] and "JSON" not in texts["stats"]
    assert "-o JSON" in texts["recon"] and "-o JSON" in texts["gen"]
    assert "about an hour on a CPU" in " ".join(texts["gen"].split())


def test_every_option_shows_its_default_once(capsys):
    parser = build_parser()
    for path, child in _subparsers(parser):
        if any(isinstance(a, argparse._SubParsersAction) for a in child._actions):
            continue
        text = child.format_help()
        assert "(default: None)" not in text and "(default: False)" not in text, path
        for action in child._actions:
            formatter = child._get_formatter()
            formatter.add_argument(action)
            shown = " ".join(formatter.format_help().replace("ema (default)", "ema").split())
            unset = any(action.default is v for v in (None, False, True, argparse.SUPPRESS)) or action.default == []
            if not unset and action.option_strings and action.help != argparse.SUPPRESS:
                assert "default" in shown, (path, action.option_strings)
            assert shown.count("default") <= 1, (path, shown)
    assert "(default: 16)" in " ".join(_help(["tokenize"], capsys).split())
    assert "(default: 42)" in " ".join(_help(["eval", "gen"], capsys).split())


def test_info_has_a_description(capsys):
    text = _help(["info"], capsys)
    assert "Describe MODEL" in text


def test_typos_suggest_the_close_match(tmp_path):
    with pytest.raises(ValueError, match="did you mean 'titok_l32'"):
        titok.create_model("titok_l33")
    with pytest.raises(FileNotFoundError, match="did you mean 'titok_l32'"):
        titok.load("titok_l33")
    with pytest.raises(ValueError, match="did you mean 'num_tokens'"):
        TiTokConfig.from_dict({"num_tokenz": 8})


def test_pretokenize_rerun_is_a_noop_and_meta_records_center_crops(tmp_path, capsys):
    build("titok_pixels_vq").save_pretrained(tmp_path / "tok")
    out = tmp_path / "tokens"
    args = ["pretokenize", str(tmp_path / "tok"), "fashion-mnist:test", "--limit", "8", "-o", str(out)]
    args += ["--num-workers", "0", "--device", "cpu"]
    assert main(args) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["data"]["random_crop"] is False and meta["data"]["random_flip"] is False
    written = (out / "codes.npy").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0
    assert re.search(r"already finished \(8 sequence\(s\)\): nothing to do", capsys.readouterr().out)
    assert (out / "codes.npy").stat().st_mtime_ns == written
    assert main([*args[:4], "4", *args[5:]]) == 2  # another --limit: refused, naming the difference
    assert "data.limit 8 (now 4)" in capsys.readouterr().err
