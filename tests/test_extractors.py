"""Feature extractors: the Inception weights' lookup and checks, the shipped Fashion-MNIST classifier, custom
modules, and LPIPS only when its backbone weights are local."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from titok.metrics import extractors
from titok.metrics.extractors import INCEPTION_FILES, InceptionExtractor, ModuleExtractor, find_inception_weights


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    """No Inception or backbone weights anywhere, and no download attempt."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(extractors.INCEPTION_ENV, raising=False)
    return tmp_path / "torch"


def test_missing_inception_weights_name_the_file_and_where_it_goes(empty_torch_home):
    with pytest.raises(FileNotFoundError) as e:
        find_inception_weights()
    message = str(e.value)
    assert INCEPTION_FILES[0] in message and str(empty_torch_home / "hub" / "checkpoints") in message
    assert "--inception-weights" in message and extractors.INCEPTION_URL in message


def test_explicit_inception_weights_must_exist(empty_torch_home, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"does not exist: .*nope\.pth"):
        find_inception_weights(tmp_path / "nope.pth")
    monkeypatch.setenv(extractors.INCEPTION_ENV, str(tmp_path / "env.pth"))
    with pytest.raises(FileNotFoundError, match=r"named by \$TITOK_INCEPTION_WEIGHTS does not exist"):
        find_inception_weights()


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """Random weights in the FID Inception's layout (torchvision's Inception-v3 with 1008 classes, no aux head)."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    path = tmp_path_factory.mktemp("inception") / INCEPTION_FILES[1]
    torch.save(net.state_dict(), path)
    return path


def test_other_inception_weights_are_refused(random_inception_weights):
    pytest.importorskip("torch_fidelity")
    with pytest.raises(ValueError, match="is not the FID Inception weights: its SHA-256 is"):
        InceptionExtractor(random_inception_weights)


def test_inception_extractor_runs_and_marks_unverified_weights(random_inception_weights):
    pytest.importorskip("torch_fidelity")
    net = InceptionExtractor(random_inception_weights, verify=False)
    assert net.name == "inception-v3-compat-unverified"  # never mistaken for the FID network
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    features, logits = net(images)
    assert features.shape == (2, 2048) and logits.shape == (2, 1008) and features.dtype == torch.float64
    # logits_unbiased: the fc layer without its bias, on the pool features
    fc = net.net.fc.weight.double()
    torch.testing.assert_close(logits, features @ fc.T, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="uint8 images"):
        net(images.float())


def test_shipped_fmnist_classifier_classifies_held_out_images():
    from safetensors import safe_open

    from titok.data.datasets import FashionMNIST
    from titok.data.transforms import Preprocess
    from titok.metrics.fmnist import WEIGHTS

    net = extractors.fmnist()
    data = FashionMNIST("test", Preprocess(32))
    images = torch.stack([data[i][0] for i in range(500)])
    features, logits = net((images * 255).round().to(torch.uint8))
    assert features.shape == (500, 128) and logits.shape == (500, 10)
    assert (logits.argmax(1) == data.labels[:500]).double().mean() > 0.88
    with safe_open(str(WEIGHTS), "pt") as f:
        assert float(f.metadata()["test_accuracy"]) > 0.9
    assert net.sha256 == extractors.sha256_file(WEIGHTS) and net.score_name == "FD-fmnist"
    small = net(torch.randint(0, 256, (2, 3, 28, 28), dtype=torch.uint8))  # other sizes are resized
    assert small.features.shape == (2, 128)


def test_any_module_is_an_extractor():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    plain = ModuleExtractor(body, "linear")
    out = plain(torch.full((4, 3, 8, 8), 255, dtype=torch.uint8))
    assert out.logits is None and out.features.shape == (4, 5) and plain.score_name == "FD-linear"
    torch.testing.assert_close(out.features, body(torch.ones(4, 3, 8, 8)).double())  # uint8 -> [0, 1]

    class WithLogits(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = body, nn.Linear(5, 3)

        def forward(self, x):
            f = self.body(x)
            return f, self.head(f)

    classifier = ModuleExtractor(WithLogits(), "with-logits")
    assert classifier(torch.zeros(2, 3, 8, 8, dtype=torch.uint8)).logits.shape == (2, 3)
    assert classifier.sha256 != plain.sha256


def test_lpips_is_skipped_with_a_reason_without_backbone_weights(empty_torch_home):
    from titok.metrics.perceptual import load_lpips

    pytest.importorskip("lpips")
    module, reason = load_lpips("alex")
    assert module is None and "alexnet-owt-7be5be79.pth" in reason and str(empty_torch_home) in reason


def test_lpips_runs_when_backbone_weights_are_local(empty_torch_home):
    """torchvision reads a backbone found in its cache without downloading: here a randomly initialised
    SqueezeNet (5 MB) stands in for the ImageNet one, to exercise the loading path and the call."""
    import torchvision

    from titok.metrics.perceptual import LPIPS_BACKBONES, load_lpips, lpips_distance

    pytest.importorskip("lpips")
    checkpoints = empty_torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), checkpoints / LPIPS_BACKBONES["squeeze"])
    module, reason = load_lpips("squeeze")
    assert module is not None and reason == ""
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    assert torch.allclose(lpips_distance(module, x, x), torch.zeros(2, dtype=torch.float64))
    assert (lpips_distance(module, x, y) > 0).all()
