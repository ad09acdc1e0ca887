"""The pieces of tokenizer training: discriminator, hinge and LeCam, perceptual losses read from local files, codebook
statistics, the stage-2 model builder, cached teacher codes, and webdataset shards streamed and resumed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import TINY_VQGAN, build
from torch import nn

import titok
from titok.losses.gan import BlurDownsample, Conv2dSame, LeCam, NLayerDiscriminator, hinge_d_loss, hinge_g_loss
from titok.losses.perceptual import LPIPS, LogitMSE, build_perceptual, convnext_small
from titok.metrics.codebook import code_histogram, codebook_stats
from titok.models.tokenizer import two_stage_from

TEACHER = TINY_VQGAN.replace(channel_mult=(1, 1, 1, 2))  # 8x downsampling: one code per 8x8 patch of tiny TiTok


def test_discriminator_is_the_reference_one():
    d = NLayerDiscriminator()
    assert sum(p.numel() for p in d.parameters()) == 1_909_889
    shapes = {k: tuple(v.shape) for k, v in d.state_dict().items()}
    assert shapes["block_in.0.weight"] == (128, 3, 5, 5) and shapes["blocks.2.0.weight"] == (512, 256, 3, 3)
    assert shapes["blocks.0.1.kernel"] == (1, 1, 4, 4) and shapes["to_logits.2.weight"] == (1, 512, 5, 5)
    assert d(torch.rand(1, 3, 64, 64)).shape == (1, 1, 16, 16)
    tiny = NLayerDiscriminator(hidden_channels=8, num_stages=2, norm_groups=4, pool_size=4)
    assert tiny(torch.rand(2, 3, 32, 32)).shape == (2, 1, 4, 4)
    with pytest.raises(ValueError, match="norm_groups=32"):
        NLayerDiscriminator(hidden_channels=8)


def test_same_padding_and_blur():
    conv = Conv2dSame(1, 1, 5, stride=2, bias=False)
    assert conv(torch.zeros(1, 1, 7, 9)).shape == (1, 1, 4, 5)  # ceil(7/2), ceil(9/2)
    blur = BlurDownsample()
    assert blur.kernel.sum().item() == pytest.approx(1.0)
    out = blur(torch.ones(1, 3, 8, 8))
    assert out.shape == (1, 3, 4, 4) and torch.allclose(out[..., 1:-1, 1:-1], torch.ones(1, 3, 2, 2))


def test_hinge_and_lecam():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (0.25 + 0.5))
    assert hinge_g_loss(fake).item() == pytest.approx(1.0)
    lecam = LeCam(decay=0.9)
    m_r, m_f = torch.tensor(1.25), torch.tensor(-1.0)
    assert lecam.loss(m_r, m_f).item() == pytest.approx(1.25**2 + 1.0**2)  # averages start at 0
    lecam.update(m_r, m_f)
    assert lecam.ema_real_logits_mean.item() == pytest.approx(0.125)
    assert lecam.ema_fake_logits_mean.item() == pytest.approx(-0.1)
    assert set(lecam.state_dict()) == {"ema_real_logits_mean", "ema_fake_logits_mean"}


def test_missing_perceptual_weights_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError, match=r"torch/hub/checkpoints/vgg16-397923af\.pth.*download https://"):
        build_perceptual(1.0, 0.0)
    with pytest.raises(FileNotFoundError, match=r"convnext_small-0c510722\.pth.*losses\.convnext_weights"):
        build_perceptual(0.0, 0.1)
    assert build_perceptual(0.0, 0.0) is None


def test_lpips_reads_the_vgg_trunk_from_a_file(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers(cfgs["D"])
    path = tmp_path / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    lpips = LPIPS(path)
    assert torch.equal(
        lpips.net.net.slice3.get_submodule("10").weight, features[10].weight
    )  # torchvision index 10 = conv3_1
    assert not any(p.requires_grad for p in lpips.parameters())
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    y = torch.rand(2, 3, 32, 32)
    distance = lpips(x, y)
    assert distance.shape == (2,) and (distance > 0).all() and lpips(y, y).abs().max() < 1e-6
    distance.sum().backward()
    assert x.grad.abs().sum() > 0
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"'features.0.weight' has shape \(3,\), expected"):
        LPIPS(tmp_path / "bad.pth")
    torch.save({"classifier.0.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"not a torchvision VGG16 state_dict: it has no 'features\.0\.weight'"):
        LPIPS(tmp_path / "other.pth")
    torch.save({"net.lin0.weight": torch.zeros(1, 64, 1, 1)}, tmp_path / "heads.pth")  # not the v0.1 key names
    with pytest.raises(ValueError, match=r"heads.pth is not an LPIPS v0.1 heads file.*'net.lin0.weight'"):
        LPIPS(path, heads=tmp_path / "heads.pth")


def test_convnext_logit_mse(tmp_path):
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 5))
    loss = LogitMSE(net, size=16)
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )

    def logits(t):
        return net((nn.functional.interpolate(t, size=16, mode="bilinear", antialias=True) - mean) / std)

    assert loss(x, y).item() == pytest.approx(((logits(x) - logits(y)) ** 2).mean().item(), rel=1e-5)
    # a file in torchvision's layout loads into ConvNeXt-S (broadcast constants keep the file small)
    from torchvision.models import convnext_small as architecture

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in architecture().state_dict().items()}
    state = {k: torch.full((), i / 1000).expand(shape) for i, (k, shape) in enumerate(shapes.items())}
    torch.save(state, tmp_path / "convnext.pth")
    net = convnext_small(tmp_path / "convnext.pth")
    key = "features.1.0.block.0.weight"
    assert torch.equal(net.state_dict()[key], state[key]) and not net.training
    assert not any(p.requires_grad for p in net.parameters())
    del state[key]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=f"missing \\['{key}'\\]"):
        convnext_small(tmp_path / "partial.pth")


def test_codebook_stats():
    counts = code_histogram(torch.tensor([[0, 1, 1], [3, 3, 3]]), 8)
    assert counts.tolist() == [1, 2, 0, 3, 0, 0, 0, 0]
    stats = codebook_stats(counts)
    p = np.array([1, 2, 3]) / 6
    assert stats.usage == 3 / 8 and stats.dead == 5
    assert stats.entropy == pytest.approx(float(-(p * np.log2(p)).sum()))
    assert codebook_stats(torch.ones(16, dtype=torch.long)).entropy == pytest.approx(4.0)
    assert codebook_stats(torch.zeros(4, dtype=torch.long)).entropy == 0.0


def test_stage_two_starts_from_stage_one_and_its_teacher():
    stage1, teacher = build("titok_proxy"), titok.models.build_model(TEACHER).eval()
    before = {k: v.clone() for k, v in stage1.state_dict().items()}
    model = two_stage_from(stage1, teacher).eval()
    assert all(torch.equal(before[k], v) for k, v in stage1.state_dict().items())  # the inputs are not changed
    assert model.config.head == "vqgan" and model.config.pixel_decoder == TEACHER
    images = torch.rand(2, 3, 32, 32)
    codes = model.tokenize(images)
    assert torch.equal(codes, stage1.tokenize(images))
    with torch.no_grad():
        latents = stage1.quantizer.embed(codes)
        soft = stage1.proxy_logits(latents).softmax(-1) @ teacher.quantizer.embedding.weight  # (B, G, C)
        expected = teacher.decode(soft)
        assert torch.allclose(model.detokenize(codes), expected, atol=1e-5)
    with pytest.raises(ValueError, match="head 'proxy'"):
        two_stage_from(model, teacher)


@pytest.mark.parametrize(
    "teacher,message",
    [
        (TEACHER.replace(codebook_size=8), "teacher VQGAN has 8 codes; the tokenizer's proxy_codebook_size is 16"),
        (TINY_VQGAN, r"teacher VQGAN gives a 16x16 grid of codes .* tokenizer predicts a 4x4 grid \(patch_size 8\)"),
        (TEACHER.replace(image_size=64), "teacher VQGAN reads 64 px images, the tokenizer 32 px"),
    ],
)
def test_teachers_that_do_not_fit_are_named(teacher, message):
    with pytest.raises(ValueError, match=message):
        two_stage_from(build("titok_proxy"), titok.models.build_model(teacher))
