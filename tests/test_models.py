"""Presets, shapes of every model family, the quantizer and the posterior."""

from __future__ import annotations

import pytest
import torch
from tiny import TINY_CONFIGS, build

import titok
from titok.models import PRESETS, build_model
from titok.quantizers import DiagonalGaussian, VectorQuantizer

# Parameter counts and tokens per image of the reference's models (its classes instantiated on CPU).
SPEC = {
    "titok_l32": (641_054_735, 32),
    "titok_b64": (204_814_095, 64),
    "titok_s128": (83_674_639, 128),
    "titok_bl64_vq8k": (390_016_148, 64),
    "titok_bl128_vq8k": (390_179_988, 128),
    "titok_sl256_vq8k": (330_260_884, 256),
    "titok_ll32_vae": (606_879_604, 32),
    "titok_bl64_vae": (389_418_100, 64),
    "titok_bl128_vae": (389_581_940, 128),
    "maskgit_vqgan": (54_515_587, 256),
    "generator_titok_l32": (177_202_432, 32),
    "generator_titok_b64": (177_227_008, 64),
    "generator_titok_s128": (294_990_848, 128),
}


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds(name):
    with torch.device("meta"):
        model = titok.create_model(name)
    if name in SPEC:
        params, tokens = SPEC[name]
        assert model.num_parameters() == params
        assert model.num_tokens == tokens
    else:  # the paper's 512 px variants, not released: 32 x 32 patches
        assert model.config.image_size == 512
        assert model.config.grid_size == 32


def test_released_parts_match_the_reference():
    with torch.device("meta"):
        l32 = titok.create_model("titok_l32")
        uvit = titok.create_model("generator_titok_s128")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(l32.encoder) - l32.encoder.latent_tokens.numel() == 303_410_188
    assert count(l32.head.pixel_decoder) == 30_478_339
    assert l32.encoder.latent_tokens.numel() == 32_768
    assert len(uvit.in_blocks) + 1 + len(uvit.out_blocks) == 21


def test_create_model_overrides_and_unknown_names():
    with torch.device("meta"):
        model = titok.create_model("titok_s128", num_tokens=64)
    assert model.num_tokens == 64
    with pytest.raises(ValueError, match="unknown preset 'titok_xl'"):
        titok.create_model("titok_xl")
    with pytest.raises(ValueError, match="unknown key"):
        titok.create_model("titok_s128", num_tokenz=64)


@pytest.mark.parametrize("name", ["titok_pixels_vq", "titok_vqgan_head", "titok_2d"])
def test_tokenizer_round_trip_shapes(name):
    model = build(name)
    images = torch.rand(2, 3, 32, 32)
    codes = model.tokenize(images)
    assert codes.shape == (2, model.num_tokens) and codes.dtype == torch.int64
    assert model.detokenize(codes).shape == (2, 3, 32, 32)
    out = model(images)
    assert out.decoded.shape == (2, 3, 32, 32)
    assert torch.equal(out.quantizer.codes, codes)


def test_proxy_head_outputs_logits_not_images():
    model = build("titok_proxy")
    images = torch.rand(2, 3, 32, 32)
    latents = model.quantize(model.encode(images)).quantized
    assert model.proxy_logits(latents).shape == (2, 16, 16)  # (B, grid 4x4, 16 proxy codes)
    assert model(images).decoded.shape == (2, 16, 16)
    with pytest.raises(ValueError, match="proxy codes"):
        model.decode(latents)


def test_vae_tokenizer():
    model = build("titok_vae")
    images = torch.rand(2, 3, 32, 32)
    posterior = model.encode(images)
    assert isinstance(posterior, DiagonalGaussian)
    assert posterior.mean.shape == posterior.logvar.shape == (2, 4, 8)
    g = torch.Generator().manual_seed(3)
    a, b = posterior.sample(torch.Generator().manual_seed(3)), posterior.sample(g)
    assert torch.equal(a, b) and not torch.equal(a, posterior.sample(g))
    assert (posterior.kl() >= 0).all() and posterior.kl().shape == (2, 4)
    assert model.decode(posterior.mean).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="continuous"):
        model.tokenize(images)


def test_legacy_token_order_is_the_reshape_without_transpose():
    from titok.models.tokenizer import LegacyTokenOrder

    x = torch.arange(2 * 3 * 4.0).view(2, 3, 4)  # (B, N=3, W=4)
    scrambled = LegacyTokenOrder()(x)
    assert scrambled.shape == (2, 3, 4)
    # element (c, j) of the reference's (W, N) view is f[c * N + j] of the row-major flattening f
    flat = x.reshape(2, -1)
    for c in range(4):
        for j in range(3):
            assert torch.equal(scrambled[:, j, c], flat[:, c * 3 + j])


@pytest.mark.parametrize("name", ["bert", "uvit"])
def test_generator_logits_shapes(name):
    model = build(name)
    codes = torch.randint(0, 17, (3, 4))  # 16 is the mask token
    logits = model.logits(codes, torch.tensor([0, 1, 2]))
    assert logits.shape == (3, 4, 16)
    uncond = model.logits(codes, None)
    dropped = model.logits(codes, torch.tensor([0, 1, 2]), drop=torch.tensor([True, True, True]))
    assert torch.allclose(uncond, dropped)
    assert not torch.allclose(uncond, logits)


@pytest.mark.parametrize("l2", [False, True])
def test_quantizer_codes_embeddings_codes(l2):
    torch.manual_seed(0)
    vq = VectorQuantizer(64, 8, l2_norm=l2)
    nn_init = torch.randn(64, 8)
    vq.embedding.weight.data.copy_(nn_init)
    codes = torch.randint(0, 64, (4, 10))
    vectors = vq.embed(codes)
    if l2:
        assert torch.allclose(vectors.norm(dim=-1), torch.ones(4, 10))
    out = vq(vectors)
    assert torch.equal(out.codes, codes)
    assert out.loss.item() == pytest.approx(0.0, abs=1e-10)


def test_quantizer_straight_through_and_losses():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 4, commitment_cost=0.25)
    z = torch.randn(2, 5, 4, requires_grad=True)
    out = vq(z)
    weight = torch.randn(2, 5, 4)
    (out.quantized * weight).sum().backward()
    assert torch.allclose(z.grad, weight)  # identity gradient through the quantizer
    gap = (vq.embedding.weight[out.codes] - z).pow(2).mean().item()
    assert out.codebook_loss.item() == pytest.approx(gap, rel=1e-5)
    assert out.commitment_loss.item() == pytest.approx(0.25 * gap, rel=1e-5)
    assert torch.allclose(out.quantized, vq.embedding.weight[out.codes])
    # the codebook term trains the codebook, the commitment term the encoder
    vq.zero_grad()
    out = vq(z.detach().requires_grad_())
    out.codebook_loss.backward()
    assert vq.embedding.weight.grad.abs().sum() > 0


def test_quantizer_picks_nearest_code():
    vq = VectorQuantizer(3, 2)
    vq.embedding.weight.data = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 5.0]])
    out = vq(torch.tensor([[[0.9, 0.2], [0.1, 4.0], [0.1, -0.1]]]))
    assert out.codes.tolist() == [[1, 2, 0]]


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_config_round_trips_through_dict(name):
    config = TINY_CONFIGS[name]
    assert type(config).from_dict(config.to_dict()) == config
    assert build_model(config).config == config


def test_the_2d_twin_ties_each_token_to_its_patch():
    """The 2-D twin has one token per patch, each at its patch's position, and no learnable latent tokens."""
    model = build("titok_2d")
    assert model.num_tokens == model.config.grid_size**2 == 16
    assert not hasattr(model.encoder, "latent_tokens")
    assert model.encoder.pos_embed.shape[0] == model.decoder.pos_embed.shape[0] == 16


@pytest.mark.parametrize("name", ["titok_pixels_vq", "titok_2d", "bert", "uvit"])
def test_activation_checkpointing_changes_nothing_but_memory(name):
    model = build(name).train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0

    def run():
        torch.manual_seed(0)
        if isinstance(model, titok.MaskedGenerator):
            out = model.logits(torch.randint(0, 17, (2, 4)), torch.tensor([0, 2]))
        else:
            out = model(torch.rand(2, 3, 32, 32)).decoded
        out.square().mean().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        return out.detach(), grads

    first = getattr(model, "blocks", None) or getattr(model, "in_blocks", None) or model.encoder.blocks
    calls, forward = [], first[0].forward
    first[0].forward = lambda *a, **k: (
        calls.append(1) or forward(*a, **k)
    )  # (checkpoint's recompute skips forward hooks)
    plain_out, plain_grads = run()
    plain_calls = len(calls)
    model.set_grad_checkpointing(True)
    ckpt_out, ckpt_grads = run()
    assert len(calls) - plain_calls == 2 * plain_calls  # once in forward, once more in backward
    assert torch.allclose(plain_out, ckpt_out, atol=1e-6)
    assert plain_grads.keys() == ckpt_grads.keys()
    assert all(torch.allclose(plain_grads[k], ckpt_grads[k], atol=1e-6) for k in plain_grads)


@pytest.mark.parametrize("name", ["titok_pixels_vq", "vqgan"])
def test_tokenize_and_encode_check_the_images_once(name, monkeypatch):
    model = build(name).eval()
    calls = []
    check = type(model).check_images
    monkeypatch.setattr(type(model), "check_images", lambda self, x: calls.append(x.shape) or check(self, x))
    images = torch.rand(2, 3, model.image_size, model.image_size)
    codes = model.tokenize(images)
    assert len(calls) == 1
    model.encode(images)
    assert len(calls) == 2
    assert torch.equal(codes, model.quantize(model.encode(images)).codes)


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_a_last_block_computing_some_rows_matches_the_full_stack(qkv_bias):
    from titok.layers import Block, BlockStack

    torch.manual_seed(0)
    stack = BlockStack(Block(16, 2, 32, qkv_bias=qkv_bias) for _ in range(2))
    x = torch.randn(3, 10, 16)
    for rows in (slice(-4, None), slice(1, 7)):
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        full, part = stack(a)[:, rows], stack(b, rows=rows)
        assert part.shape == full.shape and torch.allclose(part, full, atol=1e-5)
        weights = torch.randn_like(full)
        (full * weights).sum().backward()
        (part * weights).sum().backward()
        assert torch.allclose(a.grad, b.grad, atol=1e-5)
    assert torch.equal(BlockStack()(x, rows=slice(2, 5)), x[:, 2:5])
