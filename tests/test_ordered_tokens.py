"""Ordered tokens: any prefix of the codes decodes; the cut and learned-token tails match their definitions; the
training draws of kept lengths; recipes that cannot train them say why."""

from __future__ import annotations

import warnings

import pytest
import torch
from tiny import TINY_CONFIGS

import titok
from titok.train.ordering import OrderingConfig, candidate_lengths, draw_lengths


def _model(**overrides) -> titok.TiTok:
    torch.manual_seed(0)
    return titok.models.build_model(TINY_CONFIGS["titok_pixels_vq"].replace(**overrides)).eval()


def test_prefix_shapes_through_tokenize_detokenize_encode_decode():
    model = _model(ordered=True)
    images = torch.rand(3, 3, 32, 32)
    full = model.tokenize(images)
    for k in (1, 2, 4):
        codes = model.tokenize(images, num_tokens=k)
        assert codes.shape == (3, k) and torch.equal(codes, full[:, :k])
        assert model.detokenize(codes).shape == (3, 3, 32, 32)
        assert model.encode(images, num_tokens=k).shape == (3, k, 8)
    with pytest.raises(ValueError, match=r"num_tokens must be an integer in \[1, 4\], got 5"):
        model.tokenize(images, num_tokens=5)
    with pytest.raises(ValueError, match=r"codes must have shape \(B, k\) with 1 <= k <= 4"):
        model.detokenize(torch.zeros(3, 0, dtype=torch.long))


def test_cut_tail_reads_only_the_kept_tokens():
    model = _model(ordered=True)  # tail "cut"
    latents = torch.randn(2, 4, 8)
    dec = model.decoder
    # by definition: the decoder's sequence is [class | masks | the k kept latents], nothing else
    g = dec.pos_embed.shape[0] - 1
    z = dec.embed(latents[:, :2]) + dec.latent_pos_embed[:2]
    queries = torch.cat([dec.class_token[None], dec.mask_token.expand(g, -1)]) + dec.pos_embed
    x = dec.norm_post(dec.blocks(dec.norm_pre(torch.cat([queries.expand(2, -1, -1), z], 1)))[:, 1 : g + 1])
    torch.testing.assert_close(model.decode(latents[:, :2]), model.head(x))
    with pytest.raises(ValueError, match="needs tail='learned'"):
        model.decoder(latents, keep=torch.tensor([2, 3]))


def test_learned_tail_puts_the_learned_token_in_place_of_each_dropped_one():
    model = _model(ordered=True, tail="learned")
    latents = torch.randn(2, 4, 8)
    keep = torch.tensor([1, 3])
    per_image = model.decode(latents, keep=keep)
    for i, k in enumerate(keep.tolist()):  # the dropped tokens' content does not matter; the prefix decodes alike
        torch.testing.assert_close(per_image[i : i + 1], model.decode(latents[i : i + 1, :k]))
        scrambled = latents[i : i + 1].clone()
        scrambled[:, k:] = 100.0
        torch.testing.assert_close(per_image[i : i + 1], model.decode(scrambled, keep=keep[i : i + 1]))
    assert "decoder.tail_token" in model.state_dict()
    assert "decoder.tail_token" not in _model(ordered=True).state_dict()


def test_a_model_not_trained_for_prefixes_says_so():
    model = _model()
    images = torch.rand(1, 3, 32, 32)
    with pytest.warns(UserWarning, match="not trained with tail drops"):
        model.tokenize(images, num_tokens=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.tokenize(images)  # all tokens: no warning
        _model(ordered=True).tokenize(images, num_tokens=2)  # trained for prefixes: no warning
    assert not [w for w in caught if "tail drops" in str(w.message)]


def test_forward_with_kept_lengths_matches_decoding_the_prefix():
    model = _model(ordered=True, tail="learned")
    images = torch.rand(2, 3, 32, 32)
    keep = torch.tensor([2, 4])
    out = model(images, keep=keep)
    codes = model.tokenize(images)
    for i, k in enumerate(keep.tolist()):
        torch.testing.assert_close(out.decoded[i : i + 1], model.detokenize(codes[i : i + 1, :k]), atol=1e-4, rtol=1e-4)
    cut = _model(ordered=True)
    with pytest.raises(ValueError, match="one number of tokens per batch"):
        cut(images, keep=keep)


def test_kept_length_draws():
    assert candidate_lengths(32, "pow2").tolist() == [1, 2, 4, 8, 16, 32]
    assert candidate_lengths(24, "pow2").tolist() == [1, 2, 4, 8, 16, 24]
    assert candidate_lengths(6, "uniform", 3).tolist() == [3, 4, 5, 6]
    g = torch.Generator().manual_seed(0)
    batch = draw_lengths(OrderingConfig(per="batch"), 16, 32, g)
    assert batch.shape == (16,) and len(batch.unique()) == 1 and 1 <= int(batch[0]) <= 32
    many = torch.cat([draw_lengths(OrderingConfig(per="image", lengths="pow2"), 64, 32, g) for _ in range(20)])
    assert set(many.tolist()) == {1, 2, 4, 8, 16, 32}
    assert draw_lengths(OrderingConfig(), 4, 32, g) is None


def test_full_share_keeps_all_tokens_that_often():
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([draw_lengths(OrderingConfig(per="image", full_share=0.5), 100, 32, g) for _ in range(40)])
    # half the draws are 32 outright, and a 32nd of the rest
    assert abs(float((draws == 32).float().mean()) - (0.5 + 0.5 / 32)) < 0.04
    assert draws.min() >= 1 and len(draws.unique()) == 32
    always = draw_lengths(OrderingConfig(per="batch", full_share=1.0), 8, 16, g)
    assert always.tolist() == [16] * 8
    with pytest.raises(ValueError, match="full_share must lie in"):
        OrderingConfig(per="image", full_share=1.5)


def test_recipes_check_the_model_fits_the_ordering():
    with pytest.raises(ValueError, match=r"set model\.ordered=true"):
        OrderingConfig(per="batch").check({"ordered": False})
    with pytest.raises(ValueError, match=r"needs model\.tail=learned"):
        OrderingConfig(per="image").check({"ordered": True, "tail": "cut"})
    with pytest.raises(ValueError, match="ordered/tail are 1-D only"):
        TINY_CONFIGS["titok_2d"].replace(ordered=True)
