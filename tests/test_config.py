"""Strict config loading: unknown keys and wrong types are errors that name the key."""

from __future__ import annotations

import pytest

from titok.models import GeneratorConfig, TiTokConfig


def test_unknown_key_is_named():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['num_tokenz'\]"):
        TiTokConfig.from_dict({"num_tokenz": 32})


def test_nested_unknown_key_is_named_with_its_path():
    with pytest.raises(ValueError, match=r"TiTokConfig.encoder: unknown key\(s\) \['widht'\]"):
        TiTokConfig.from_dict({"encoder": {"widht": 3, "depth": 1, "num_heads": 1}})


@pytest.mark.parametrize(
    "data,message",
    [
        ({"num_tokens": "32"}, r"num_tokens: expected an integer, got '32'"),
        ({"num_tokens": 32.0}, r"num_tokens: expected an integer"),
        ({"l2_norm": 1}, r"l2_norm: expected bool"),
        ({"quantizer": "lfq"}, r"quantizer: 'lfq' is not one of \['vq', 'vae', 'fsq'\]"),
        ({"commitment_cost": True}, r"commitment_cost: expected a number"),
    ],
)
def test_wrong_types_are_named(data, message):
    with pytest.raises(ValueError, match=message):
        TiTokConfig.from_dict(data)


def test_inconsistent_configs_are_rejected():
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        TiTokConfig(image_size=100, patch_size=16)
    with pytest.raises(ValueError, match="needs a pixel_decoder"):
        TiTokConfig(head="vqgan")


def test_nested_config_and_replace():
    config = GeneratorConfig.from_dict({"sampling": {"num_sample_steps": 12}})
    assert config.sampling.num_sample_steps == 12
    assert config.replace(depth=3).depth == 3
    with pytest.raises(ValueError, match="sampling: unknown key"):
        GeneratorConfig.from_dict({"sampling": {"steps": 12}})
