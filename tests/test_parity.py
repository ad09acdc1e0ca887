"""Every reference-parity case: weights written in the reference's layout, loaded through ``titok.load``."""

from __future__ import annotations

import pytest
import torch
from refcases import (
    outputs,
    rel_err,
    to_ref_logits,
    to_ref_tokens,
    write_reference_folder,
    write_vqgan_bin,
)

import titok

TOL = 1e-4


def assert_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape
    assert rel_err(ours, ref) < TOL


@pytest.mark.parametrize("name", ["titok_vq_legacy", "titok_vq_legacy_pixel_decoder", "titok_vq_pixel_head"])
def test_vq_tokenizer(name, tmp_path):
    model = titok.load(write_reference_folder(name, tmp_path))
    assert isinstance(model, titok.TiTok)
    ref = outputs(name)
    images = ref["images"]
    with torch.no_grad():
        latents = model.encode(images)
        assert_close(to_ref_tokens(latents), ref["encoder_output"])
        q = model.quantize(latents)
        assert_close(to_ref_tokens(q.quantized), ref["quantized"])
        codes = model.tokenize(images)
        assert codes.dtype == torch.int64
        assert torch.equal(codes, ref["codes"][:, 0])
        if model.config.head == "proxy":
            assert_close(to_ref_logits(model.proxy_logits(q.quantized)), ref["decoded"])
            from_codes = to_ref_logits(model.proxy_logits(model.quantizer.embed(codes)))
        else:
            assert_close(model.decode(q.quantized), ref["decoded"])
            from_codes = model.detokenize(codes)
        assert_close(from_codes, ref["decoded_from_codes"])


def test_vae_tokenizer(tmp_path):
    model = titok.load(write_reference_folder("titok_vae", tmp_path))
    ref = outputs("titok_vae")
    with torch.no_grad():
        assert_close(to_ref_tokens(model.encoder(ref["images"])), ref["encoder_output"])
        posterior = model.encode(ref["images"])
        assert_close(to_ref_tokens(posterior.mean), ref["posterior_mean"])
        assert_close(to_ref_tokens(posterior.logvar), ref["posterior_logvar"])
        assert_close(model.decode(posterior.mean), ref["decoded"])


def test_maskgit_vqgan_bare_file(tmp_path):
    model = titok.load(write_vqgan_bin(tmp_path), preset="maskgit_vqgan")
    assert isinstance(model, titok.MaskGITVQGAN)
    ref = outputs("maskgit_vqgan")
    with torch.no_grad():
        latents = model.encode(ref["images"])
        b, _n, c = latents.shape
        assert_close(latents.transpose(1, 2).reshape(b, c, 4, 4), ref["encoder_output"])
        codes = model.tokenize(ref["images"])
        assert torch.equal(codes, ref["codes"])
        assert_close(model.detokenize(codes), ref["decoded_from_codes"])


@pytest.mark.parametrize("name,cls", [("imagebert", titok.BertGenerator), ("uvitbert", titok.UViTGenerator)])
def test_generator_logits(name, cls, tmp_path):
    model = titok.load(write_reference_folder(name, tmp_path))
    assert type(model) is cls
    ref = outputs(name)
    with torch.no_grad():
        assert_close(model.logits(ref["input_ids"], ref["labels"]), ref["logits_conditional"])
        assert_close(model.logits(ref["input_ids"], None), ref["logits_unconditional"])


def test_pickled_reference_folder(tmp_path):
    """The reference's older layout, ``pytorch_model.bin`` beside ``config.json``, loads the same."""
    model = titok.load(write_reference_folder("titok_vq_pixel_head", tmp_path, pickle=True))
    ref = outputs("titok_vq_pixel_head")
    assert torch.equal(model.tokenize(ref["images"]), ref["codes"][:, 0])
