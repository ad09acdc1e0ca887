"""Saving and loading: titok's layout, strictness, pickles that try to run code, bare files, the Hub cache."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from refcases import cases, outputs, reference_state, write_reference_folder
from safetensors.torch import load_file, save_file
from tiny import TINY_CONFIGS, build

import titok


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_save_then_load_is_bit_identical(name, tmp_path):
    model = build(name, seed=1)
    model.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors"} <= set(os.listdir(tmp_path))
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    for loaded in (type(model).from_pretrained(tmp_path), titok.load(tmp_path)):
        assert type(loaded) is type(model)
        assert loaded.config == model.config
        assert not loaded.training
        ours, theirs = model.state_dict(), loaded.state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_from_pretrained_of_the_wrong_class(tmp_path):
    build("bert").save_pretrained(tmp_path)
    with pytest.raises(TypeError, match="holds a BertGenerator, not a TiTok"):
        titok.TiTok.from_pretrained(tmp_path)


def test_from_pretrained_reads_titok_layout_only_and_serves_abstract_classes(tmp_path):
    # titok's own layout is read below the model classes; the reference's goes through titok.load (checkpoints.py)
    build("uvit").save_pretrained(tmp_path / "gen")
    assert type(titok.MaskedGenerator.from_pretrained(tmp_path / "gen")) is titok.UViTGenerator
    folder = write_reference_folder("titok_vq_pixel_head", tmp_path / "ref")
    with pytest.raises(ValueError, match=r"not a folder or Hub repo in titok's layout.*titok\.load reads it"):
        titok.TiTok.from_pretrained(folder)
    assert type(titok.load(folder)) is titok.TiTok
    with pytest.raises(ValueError, match=r"titok\.load reads it"):
        titok.TiTok.from_pretrained(tmp_path / "gen" / "model.safetensors")


def test_config_that_disagrees_with_its_weights(tmp_path):
    build("titok_pixels_vq").save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["config"]["num_tokens"] = 6
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"'encoder.latent_tokens' has shape \(4, 32\), the model expects \(6, 32\)"):
        titok.load(tmp_path)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    build("titok_pixels_vq").save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["encoder.extra"] = state.pop("quantizer.embedding.weight")
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError) as e:
        titok.load(tmp_path)
    assert "missing 1 key(s): 'quantizer.embedding.weight'" in str(e.value)
    assert "unexpected 1 key(s): 'encoder.extra'" in str(e.value)


def test_reference_key_errors_name_the_reference_key(tmp_path):
    folder = write_reference_folder("titok_vq_pixel_head", tmp_path)
    state = load_file(folder / "model.safetensors")
    state["decoder.ffn.0.weight"] = state["decoder.ffn.0.weight"][:10]
    save_file(state, folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"'head.proj.weight' \(stored as 'decoder.ffn.0.weight'\) has shape"):
        titok.load(folder)


def test_unknown_config_key_is_named(tmp_path):
    build("titok_pixels_vq").save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["config"]["num_latent_tokens"] = 4
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['num_latent_tokens'\]"):
        titok.load(tmp_path)


class _RunsCode:
    def __reduce__(self):
        return (Path.write_text, (Path(os.environ["TITOK_PWNED"]), "ran"))


def test_a_pickle_that_tries_to_run_code_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("TITOK_PWNED", str(marker))
    path = tmp_path / "evil.bin"
    torch.save({"encoder.conv_in.weight": torch.zeros(1), "payload": _RunsCode()}, path)
    with pytest.raises(ValueError, match="refusing to load"):
        titok.load(path, preset="maskgit_vqgan")
    assert not marker.exists()


def test_bare_files_need_a_preset(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file(reference_state("maskgit_vqgan"), path)
    with pytest.raises(ValueError, match="bare weights file: name its architecture with preset="):
        titok.load(path)
    with pytest.raises(ValueError, match="unknown preset 'vqgan'"):
        titok.load(path, preset="vqgan")


def test_bare_file_in_titok_key_names(tmp_path):
    """A state_dict saved from a titok model loads by preset, as the reference's does."""
    bin_path = tmp_path / "maskgit-vqgan-imagenet-f16-256.bin"
    torch.save(reference_state("maskgit_vqgan"), bin_path)
    ref = titok.load(bin_path, preset="maskgit_vqgan")
    ours = tmp_path / "vqgan.safetensors"
    save_file(ref.state_dict(), ours)
    again = titok.load(ours, preset="maskgit_vqgan")
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in ref.state_dict().items())


def test_wrong_preset_for_reference_weights(tmp_path):
    path = tmp_path / "maskgit-vqgan-imagenet-f16-256.bin"
    torch.save(reference_state("maskgit_vqgan"), path)
    with pytest.raises(ValueError, match="does not fit a TiTok"):
        titok.load(path, preset="titok_s128")


def test_missing_paths_and_unreleased_presets():
    with pytest.raises(FileNotFoundError, match="not a file, a folder, a preset name or a Hub id"):
        titok.load("no/such/folder/here")
    with pytest.raises(ValueError, match="'titok_l64' has no released weights"):
        titok.load("titok_l64")


def _fake_hub_cache(cache: Path, repo_id: str, files: Path) -> None:
    """The layout huggingface_hub keeps downloads in: refs/main names a snapshot folder holding the files."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    sha = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    shutil.copytree(files, repo / "snapshots" / sha)


def test_hub_id_loads_from_the_hub_cache_offline(tmp_path):
    folder = write_reference_folder("uvitbert", tmp_path / "files")
    _fake_hub_cache(tmp_path / "cache", "someone/generator_tiny", folder)
    model = titok.load("someone/generator_tiny", cache_dir=tmp_path / "cache", local_files_only=True)
    ref = outputs("uvitbert")
    assert isinstance(model, titok.UViTGenerator)
    with torch.no_grad():
        expected = ref["logits_conditional"]
        assert torch.allclose(model.logits(ref["input_ids"], ref["labels"]), expected, atol=1e-4)


def test_preset_name_resolves_to_its_release(tmp_path):
    folder = write_reference_folder("titok_vq_legacy_pixel_decoder", tmp_path / "files")
    _fake_hub_cache(tmp_path / "cache", "yucornetto/tokenizer_titok_l32_imagenet", folder)
    model = titok.load("titok_l32", cache_dir=tmp_path / "cache", local_files_only=True)
    assert isinstance(model, titok.TiTok) and model.config.head == "vqgan"


def test_hub_id_not_cached_offline(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"local_files_only=True.*HF_HUB_OFFLINE"):
        titok.load("someone/absent", cache_dir=tmp_path, local_files_only=True)


def test_reference_config_interpolations_and_defaults(tmp_path):
    """The released configs carry ${...} references and omit finetune_decoder / is_legacy (both default true)."""
    folder = write_reference_folder("imagebert", tmp_path)
    config = cases()["imagebert"]["reference_config"]
    config["model"]["generator"]["image_seq_len"] = "${model.vq_model.num_latent_tokens}"
    config["model"]["vq_model"]["num_latent_tokens"] = 8
    config["model"]["generator"]["mask_schedule_strategy"] = "arccos"
    (folder / "config.json").write_text(json.dumps(config))
    assert titok.load(folder).config.num_tokens == 8

    folder = write_reference_folder("titok_vq_legacy_pixel_decoder", tmp_path / "legacy")
    config = cases()["titok_vq_legacy_pixel_decoder"]["reference_config"]
    del config["model"]["vq_model"]["finetune_decoder"]
    (folder / "config.json").write_text(json.dumps(config))
    model = titok.load(folder)
    assert model.config.head == "vqgan" and model.config.legacy_token_order


def test_loading_onto_a_device_and_position_ids_are_ignored(tmp_path):
    folder = write_reference_folder("imagebert", tmp_path)
    state = load_file(folder / "model.safetensors")
    state["model.embeddings.position_ids"] = torch.arange(9.0)[None]
    save_file(state, folder / "model.safetensors")
    for device in ("cpu", "cpu:0", torch.device("cpu", 0)):  # accelerate names the CPU "cpu:0"
        assert titok.load(folder, device=device).device.type == "cpu"
