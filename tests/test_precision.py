"""``titok.precision``: which CPUs get bf16 under ``auto``, the cached micro-benchmark, the autocast scope, and the
parts that stay float32 whatever the precision."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import build

import titok
from titok import precision
from titok.quantizers import VectorQuantizer
from titok.sampling import SamplingConfig, maskgit_decode

X86_AVX2 = "flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2\n"
X86_SKYLAKE = X86_AVX2.rstrip() + " avx512f avx512dq avx512bw avx512vl avx512_vnni\n"
X86_SAPPHIRE = X86_SKYLAKE.rstrip() + " avx512_bf16 amx_bf16 amx_tile amx_int8\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes sha2 crc32 atomics fphp asimdhp sve bf16 i8mm\n"
ARM_PLAIN = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"


@pytest.fixture
def cpu(monkeypatch, tmp_path):
    """Pretend to be a CPU: ``cpu(machine, cpuinfo_text or None, speedup, attention)``, where ``speedup`` is what the
    matrix-product benchmark measures and ``attention`` what the attention one does; returns the former's calls."""
    calls = []

    def pretend(machine: str, cpuinfo: str | None, speedup: float = 1.0, attention: float = 0.5) -> list:
        monkeypatch.setattr(precision.platform, "machine", lambda: machine)
        flags = precision.parse_cpuinfo(cpuinfo) if cpuinfo is not None else None
        monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
        monkeypatch.setattr(precision, "cached_speedup", lambda: calls.append(1) or speedup)
        monkeypatch.setattr(precision, "measure_attention_speedup", lambda: attention)
        monkeypatch.setattr(precision, "_ATTENTION", None)  # decided again for this CPU (restored after)
        monkeypatch.setenv("TITOK_CACHE", str(tmp_path / "cache"))
        precision.cpu_bf16.cache_clear()
        return calls

    yield pretend
    precision.cpu_bf16.cache_clear()


def test_cpuinfo_flags_are_read_for_x86_and_arm():
    assert {"avx512_bf16", "amx_bf16", "avx2"} <= precision.parse_cpuinfo(X86_SAPPHIRE)
    assert "bf16" in precision.parse_cpuinfo(ARM_BF16) and "bf16" not in precision.parse_cpuinfo(ARM_PLAIN)
    assert precision.parse_cpuinfo("processor\t: 0\n") is None
    assert precision.normalize_flag("AVX512BF16") == "avx512_bf16"  # macOS spelling


@pytest.mark.parametrize(
    ("machine", "cpuinfo", "native"),
    [
        ("x86_64", X86_AVX2, False),  # bf16 emulated, ~20x slower
        ("x86_64", X86_SKYLAKE, False),  # AVX-512 without AVX512-BF16: still emulated
        ("x86_64", X86_SAPPHIRE, True),
        ("aarch64", ARM_PLAIN, False),
    ],
)
def test_auto_follows_the_cpu_flags_without_measuring(cpu, machine, cpuinfo, native):
    calls = cpu(machine, cpuinfo, speedup=10.0)  # a benchmark would say yes: it must not be asked
    choice = precision.resolve("auto", "cpu")
    assert choice.precision == ("bf16" if native else "fp32") and not calls
    assert choice.reason.startswith("auto: ")


@pytest.mark.parametrize(("machine", "cpuinfo"), [("aarch64", ARM_BF16), ("x86_64", None)])
@pytest.mark.parametrize("speedup", [0.05, 3.0])
def test_the_micro_benchmark_decides_on_arm_bf16_and_unreadable_flags(cpu, monkeypatch, machine, cpuinfo, speedup):
    calls = cpu(machine, cpuinfo, speedup)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    choice = precision.resolve("auto", "cpu")
    assert choice.precision == ("bf16" if speedup > 1 else "fp32") and len(calls) == 1
    assert f"{speedup:.2f}x" in choice.reason


def test_without_os_flags_torch_cpuinfo_decides_on_x86(cpu, monkeypatch):
    calls = cpu("AMD64", None, speedup=10.0)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert precision.resolve("auto", "cpu").precision == "fp32" and not calls


def test_explicit_precisions_and_bad_names(cpu):
    cpu("x86_64", X86_AVX2)
    assert precision.resolve("bf16", "cpu").precision == "bf16"  # asked for: honoured (with a warning)
    assert precision.resolve("no", "cpu").precision == "fp32"  # train.mixed_precision's old spelling
    with pytest.raises(ValueError, match="'fp16' needs a CUDA GPU"):
        precision.resolve("fp16", "cpu")
    with pytest.raises(ValueError, match=r"'fp8'.*\['auto', 'fp32', 'bf16', 'fp16'\]"):
        precision.resolve("fp8", "cpu")
    assert precision.accelerate_precision("fp32", cuda=False)[0] == "no"
    assert precision.accelerate_precision("bf16", cuda=False)[0] == "bf16"


def test_the_speedup_is_measured_once_per_machine_and_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("TITOK_CACHE", str(tmp_path))
    measured = []
    monkeypatch.setattr(precision, "measure_speedup", lambda: measured.append(1) or 2.5)
    assert precision.cached_speedup() == 2.5 and precision.cached_speedup() == 2.5 and len(measured) == 1
    (key, entry), *_ = json.loads((tmp_path / "precision.json").read_text()).items()
    assert torch.__version__ in key and precision.cpu_name() in key and entry == {"bf16_speedup": 2.5}
    (tmp_path / "precision.json").write_text("{not json")  # a damaged cache is measured again
    assert precision.cached_speedup() == 2.5 and len(measured) == 2


def test_measure_speedup_runs():
    assert precision.measure_speedup(size=64, repeats=2) > 0
    assert precision.measure_attention_speedup(shapes=[(2, 2, 8, 4)], repeats=2) > 0


@pytest.mark.parametrize(("cpuinfo", "attention", "bf16"), [(X86_SAPPHIRE, 1.6, True), (X86_SAPPHIRE, 0.6, False)])
def test_attention_runs_in_bf16_only_where_it_measures_faster(cpu, tmp_path, cpuinfo, attention, bf16):
    cpu("x86_64", cpuinfo, attention=attention)
    choice = precision.resolve("auto", "cpu")
    assert choice.precision == "bf16" and precision.bf16_attention() is bf16
    note = "attention in bf16" if bf16 else f"attention in float32 (bf16 attention measured {attention:.2f}x"
    assert note in choice.reason and note in precision.resolve("bf16", "cpu").reason
    (entry,) = json.loads((tmp_path / "cache" / "precision.json").read_text()).values()
    assert entry == {"bf16_attention_speedup": attention}  # measured once per machine, kept beside the other


def test_emulated_bf16_keeps_attention_in_float32_without_measuring(cpu, monkeypatch):
    cpu("x86_64", X86_AVX2)
    monkeypatch.setattr(precision, "measure_attention_speedup", lambda: pytest.fail("measured"))
    assert not precision.bf16_attention()
    assert precision.resolve("bf16", "cpu").reason == "asked; attention in float32"


@pytest.mark.parametrize("decided", [True, False, None])
def test_the_attention_layer_follows_the_decision(monkeypatch, decided):
    from titok import layers

    seen = []
    sdpa = layers.F.scaled_dot_product_attention
    monkeypatch.setattr(
        layers.F, "scaled_dot_product_attention", lambda q, *a, **k: seen.append(q.dtype) or sdpa(q, *a, **k)
    )
    monkeypatch.setattr(precision, "_ATTENTION", None if decided is None else (decided, 2.0 if decided else 0.5))
    if decided is None:  # undecided while torch.compile traces: float32, and nothing is measured
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        monkeypatch.setattr(precision, "bf16_attention", lambda: pytest.fail("measured while tracing"))
    q, k, v = (torch.randn(2, 2, 5, 4, dtype=torch.bfloat16) for _ in range(3))
    out = layers.attention(q, k, v)
    assert out.dtype == torch.bfloat16 and seen == [torch.bfloat16 if decided else torch.float32]
    layers.attention(q.float(), k.float(), v.float())  # float32 inputs are left alone
    assert seen[-1] == torch.float32


def test_autocast_scope_sets_the_format_and_detokenize_returns_float32():
    tok = build("titok_vqgan_head").eval()
    codes = torch.randint(0, 32, (2, 4))
    layer = torch.nn.Linear(4, 4)
    with titok.autocast("bf16", "cpu") as choices:
        assert choices["cpu"].dtype == torch.bfloat16 and layer(torch.ones(1, 4)).dtype == torch.bfloat16
        assert tok.detokenize(codes).dtype == torch.float32
    with titok.autocast("fp32", "cpu"):
        assert layer(torch.ones(1, 4)).dtype == torch.float32
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'fp16' needs a CUDA GPU"), titok.autocast("fp16"):
            pass


def test_the_quantizer_searches_in_float32_under_bf16():
    torch.manual_seed(0)
    vq = VectorQuantizer(4096, 12, l2_norm=True)
    z = torch.randn(4, 64, 12)
    expected = vq(z).codes
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(z)
    assert torch.equal(out.codes, expected) and out.quantized.dtype == torch.float32


def test_guidance_combines_bf16_logits_in_float32():
    # cond + 1 * (cond - uncond) = [8, 8.03125]: code 1 in float32, a tie (code 0) if rounded to bf16 first
    def tokens_to_logits(codes, drop):
        rows = torch.where(drop[:, None], torch.tensor([8.0, 7.96875]), torch.tensor([8.0, 8.0]))
        return rows[:, None, :].expand(-1, codes.shape[1], -1).to(torch.bfloat16)

    settings = SamplingConfig(num_sample_steps=1, guidance_scale=1.0, randomize_temperature=0.0)
    codes = maskgit_decode(
        tokens_to_logits,
        batch_size=1,
        num_tokens=3,
        mask_token_id=2,
        conditional=True,
        settings=settings,
        device=torch.device("cpu"),
    )
    assert codes.tolist() == [[1, 1, 1]]


def test_the_vqgan_works_in_channels_last_and_returns_contiguous_images():
    vqgan = build("vqgan").eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        latents = vqgan.encode(images)
        decoded = vqgan.decode(latents)
    assert decoded.is_contiguous() and decoded.shape == (2, 3, 32, 32)
    assert latents.shape == (2, 256, 8)


def test_the_cli_prints_its_precision_and_refuses_fp16_on_the_cpu(tmp_path, capsys, cpu):
    from PIL import Image

    from titok.cli import main

    cpu("x86_64", X86_SAPPHIRE)
    build("titok_pixels_vq").save_pretrained(tmp_path / "model")
    Image.new("RGB", (32, 32), "gray").save(tmp_path / "a.png")
    args = ["tokenize", str(tmp_path / "model"), str(tmp_path / "a.png"), "-o", str(tmp_path / "c.npz")]
    assert main([*args, "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "precision: bf16 on cpu (auto: the CPU has amx_bf16 and avx512_bf16; attention in float32 " in err
    assert main([*args, "--precision", "fp32"]) == 0 and "precision: fp32 on cpu (asked)" in capsys.readouterr().err
    assert main([*args, "--precision", "fp16", "--device", "cpu"]) == 2
    assert "--precision fp16: precision 'fp16' needs a CUDA GPU" in capsys.readouterr().err
    assert main([*args, "--workers", "2"]) == 0  # images read in worker processes
    assert main([*args, "--workers", "-1"]) == 2 and "--workers must be at least 0, got -1" in capsys.readouterr().err


def test_image_batches_read_in_workers_match_the_serial_ones(tmp_path):
    from PIL import Image

    from titok.data.images import iter_image_batches

    paths = []
    for i in range(7):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (40, 30), (i * 30, 0, 0)).save(paths[-1])
    paths.insert(3, tmp_path / "bad.png")
    paths[3].write_bytes(b"not an image")
    results = {}
    for workers in (0, 2):
        failures = []
        batches = list(iter_image_batches(paths, 16, 3, failures, num_workers=workers))
        results[workers] = ([b.paths for b in batches], torch.cat([b.images for b in batches]), failures)
    (paths0, images0, failures0), (paths2, images2, failures2) = results[0], results[2]
    assert paths0 == paths2 == [paths[:3], paths[4:7], paths[7:]]
    assert torch.equal(images0, images2) and images0.shape == (7, 3, 16, 16)
    assert [f[0] for f in failures0] == [f[0] for f in failures2] == [paths[3]]


def test_training_runtime_unwraps_compiled_models_and_trains_in_bf16_on_cpus(tmp_path):
    from titok.train.config import RunConfig
    from titok.train.runtime import start

    run = RunConfig(output_dir=str(tmp_path / "run"), mixed_precision="bf16", tensorboard=False)
    rt = start(run, {"recipe": "test"})
    try:
        model = torch.nn.Linear(4, 4)
        assert rt.unwrap(torch.compile(model)) is model  # train.compile=true: EMA and export see plain names
        assert rt.accelerator.mixed_precision == "bf16"
        with rt.accelerator.autocast():
            assert model(torch.ones(1, 4)).dtype == torch.bfloat16
    finally:
        rt.close()
