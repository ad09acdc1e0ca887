"""MaskGIT sampling: the reference's sampled ids exactly, schedules, seeds, and bad settings."""

from __future__ import annotations

import math

import pytest
import torch
from refcases import cases, outputs, write_reference_folder
from tiny import TINY_CONFIGS, build

import titok
from titok.sampling import MASK_SCHEDULES, SamplingConfig, guidance_at, mask_ratio, maskgit_decode


@pytest.fixture(scope="module", params=["imagebert", "uvitbert"])
def reference_generator(request, tmp_path_factory):
    return request.param, titok.load(write_reference_folder(request.param, tmp_path_factory.mktemp(request.param)))


def test_every_reference_sampling_run_exactly(reference_generator):
    name, model = reference_generator
    ref = outputs(name)
    runs = cases()[name]["generate_runs"]
    assert len(runs) == 12
    for run in runs:
        kwargs = {k: v for k, v in run.items() if k not in ("key", "stable_under_1e-5_perturbation")}
        ids = model.generate(ref["labels"], **kwargs)
        assert ids.dtype == torch.int64
        assert torch.equal(ids, ref[run["key"]]), run["key"]


@pytest.mark.parametrize("schedule", list(MASK_SCHEDULES))
def test_mask_schedules_are_bounded_and_monotone(schedule):
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    r = mask_ratio(schedule, t)
    assert r[0] == pytest.approx(1, abs=1e-12) and r[-1] == pytest.approx(0, abs=1e-12)
    assert ((r >= 0) & (r <= 1)).all()
    assert (r[1:] <= r[:-1]).all()


def _counting_model(num_tokens=32, codebook=16):
    calls, masked = [], []

    def tokens_to_logits(codes, drop):
        calls.append(codes.shape[0])
        masked.append(int((codes[0] == codebook).sum()))
        return torch.randn(codes.shape[0], num_tokens, codebook, generator=torch.Generator().manual_seed(len(calls)))

    return tokens_to_logits, calls, masked


@pytest.mark.parametrize("steps", [1, 4, 8, 13])
@pytest.mark.parametrize("decay", ["constant", "linear", "power-cosine"])
def test_decoding_starts_masked_ends_revealed_in_exactly_n_passes(steps, decay):
    f, calls, masked = _counting_model()
    settings = SamplingConfig(num_sample_steps=steps, guidance_decay=decay, randomize_temperature=1.0)
    ids = maskgit_decode(
        f,
        batch_size=3,
        num_tokens=32,
        mask_token_id=16,
        conditional=True,
        settings=settings,
        device=torch.device("cpu"),
    )
    assert len(calls) == steps
    assert masked[0] == 32  # the first step sees everything masked
    assert (ids != 16).all() and ids.shape == (3, 32)  # nothing left masked
    assert masked == sorted(masked, reverse=True)
    # a guided step is one batched forward over conditional and unconditional rows
    expected = [3 if guidance_at(s, steps, 3.0, decay) == 0 else 6 for s in range(steps)]
    assert calls == expected


def test_masked_counts_follow_the_arccos_schedule():
    f, _, masked = _counting_model(num_tokens=32)
    maskgit_decode(
        f,
        batch_size=2,
        num_tokens=32,
        mask_token_id=16,
        conditional=False,
        settings=SamplingConfig(num_sample_steps=8),
        device=torch.device("cpu"),
    )
    assert masked[1:] == [29, 26, 24, 21, 18, 14, 10]  # the reference's counts for N=32, 8 steps


def test_guidance_schedules():
    assert [guidance_at(s, 8, 4.5, "linear") for s in (0, 1, 7)] == pytest.approx([0.0, 0.5625, 3.9375], abs=1e-12)
    assert guidance_at(0, 64, 6.9, "power-cosine") == pytest.approx(1.0, abs=1e-12)
    assert guidance_at(32, 64, 6.9, "power-cosine") == pytest.approx(1.225, abs=1e-3)
    assert guidance_at(63, 64, 6.9, "power-cosine") == pytest.approx(6.87, abs=1e-2)
    assert guidance_at(5, 8, 2.0, "constant") == 2.0


def test_same_seed_same_samples_other_seed_other_samples():
    model = build("bert")
    labels = torch.tensor([0, 1, 2, 0])
    a = model.generate(labels, randomize_temperature=2.0, generator=torch.Generator().manual_seed(7))
    b = model.generate(labels, randomize_temperature=2.0, generator=torch.Generator().manual_seed(7))
    c = model.generate(labels, randomize_temperature=2.0, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_the_step_callback_watches_without_changing_the_samples():
    torch.manual_seed(0)
    model = titok.models.build_model(TINY_CONFIGS["bert"].replace(num_tokens=16)).eval()
    labels, mask = torch.tensor([0, 2, 1]), model.mask_token_id
    settings = {"num_sample_steps": 5, "randomize_temperature": 2.0}
    plain = model.generate(labels, generator=torch.Generator().manual_seed(3), **settings)
    seen = []
    watched = model.generate(
        labels, generator=torch.Generator().manual_seed(3), on_step=lambda *a: seen.append(a), **settings
    )
    assert torch.equal(plain, watched)
    assert [step for step, _, _ in seen] == list(range(5))
    masked = [int((codes == mask).sum()) for _, codes, _ in seen]
    assert masked == sorted(masked, reverse=True) and 0 < masked[0] < 48 and masked[-1] == 0
    for _, codes, sampled in seen:  # a code once kept stays; the guess fills exactly the masked positions
        kept = codes != mask
        assert torch.equal(codes[kept], plain[kept]) and torch.equal(sampled[kept], codes[kept])
        assert ((sampled >= 0) & (sampled < model.codebook_size)).all()
    assert torch.equal(seen[-1][1], plain) and torch.equal(seen[-1][2], plain)


def test_unconditional_samples():
    model = build("uvit")
    ids = model.generate(num_samples=5, generator=torch.Generator().manual_seed(0))
    assert ids.shape == (5, 4) and ((ids >= 0) & (ids < 16)).all()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(labels=torch.tensor([0, 5])), r"class id 5 is out of range"),
        (dict(labels=torch.tensor([0]), num_sample_steps=0), r"num_sample_steps must be at least 1, got 0"),
        (dict(labels=torch.tensor([0]), guidance_decay="cubic"), r"guidance_decay: 'cubic' is not one of"),
        (dict(labels=torch.tensor([0]), mask_schedule="exp"), r"mask_schedule: 'exp' is not one of"),
        (dict(labels=None), r"unconditional sampling needs num_samples >= 1"),
        (dict(labels=torch.tensor([0, 1]), num_samples=3), r"num_samples=3 disagrees with the 2 labels"),
    ],
)
def test_bad_sampling_input(kwargs, message):
    model = build("bert")
    with pytest.raises(ValueError, match=message):
        model.generate(**kwargs)


def test_released_sampling_defaults():
    with torch.device("meta"):
        l32 = titok.create_model("generator_titok_l32")
    s = l32.config.sampling
    assert (s.num_sample_steps, s.guidance_scale, s.guidance_decay, s.randomize_temperature) == (8, 4.5, "linear", 9.5)
    assert s.softmax_temperature_annealing and math.isclose(s.guidance_scale_pow, 3.0)


def test_gumbel_noise_is_finite_and_gumbel_distributed():
    from titok.sampling import gumbel

    g = gumbel((200_000,), torch.Generator().manual_seed(0), torch.device("cpu"))
    assert torch.isfinite(g).all()
    assert g.mean().item() == pytest.approx(0.5772, abs=0.01)  # Euler-Mascheroni constant
    assert g.var().item() == pytest.approx(math.pi**2 / 6, rel=0.02)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_sample_follows_the_tempered_softmax(temperature):
    from titok.sampling import sample

    logits = torch.tensor([2.0, 1.0, 0.0, -1.0]).expand(50_000, 4)
    draws = sample(logits, temperature, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).float() / 50_000
    assert torch.allclose(freq, torch.softmax(logits[0] / temperature, 0), atol=0.01)
    assert (sample(logits[:3], 0.0) == 0).all()  # greedy


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_sample_adds_the_noise_as_the_plain_formula_does(dtype):
    from titok.sampling import gumbel, sample

    logits = (torch.randn(4, 8, 64, generator=torch.Generator().manual_seed(1)) * 3).to(dtype)
    noise = gumbel(logits.shape, torch.Generator().manual_seed(2), logits.device)
    expected = (logits + 1.7 * noise).argmax(-1)  # in place or not, the same sums in the same precision
    assert torch.equal(sample(logits, 1.7, torch.Generator().manual_seed(2)), expected)
    assert logits.dtype == dtype and torch.equal(sample(logits, 0.0), logits.argmax(-1))
