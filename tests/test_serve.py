"""``titok serve``'s API without a browser: what each endpoint returns (the same codes, pictures and samples as the
``titok`` commands), the messages of refused requests, and requests run one at a time."""

from __future__ import annotations

import base64
import io
import itertools
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from serving import Served, save_tiny_models
from starlette.testclient import TestClient

import titok
from titok.cli import main
from titok.data.datasets import FASHION_MNIST_CLASSES
from titok.demo import GENERATOR, TOKENIZER
from titok.serve.app import create_app
from titok.serve.engine import Engine, Limits

FP32 = ["--precision", "fp32", "--device", "cpu"]


@pytest.fixture(scope="module")
def shipped():
    engine = Engine(titok.load(TOKENIZER), titok.load(GENERATOR), class_names=FASHION_MNIST_CLASSES)
    with TestClient(create_app(engine)) as client:
        yield client


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    return save_tiny_models(tmp_path_factory.mktemp("serve"))


def tiny_client(tiny_models, **limits) -> TestClient:
    tokenizer, generator = (titok.load(path) for path in tiny_models)
    return TestClient(create_app(Engine(tokenizer, generator, limits=Limits(**limits))), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def tiny(tiny_models):
    with tiny_client(tiny_models) as client:
        yield client


def pixels(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def png_bytes(array: np.ndarray, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=save.pop("format", "PNG"), **save)
    return buffer.getvalue()


def test_info_describes_the_models_the_settings_and_the_examples(shipped):
    info = shipped.get("/api/info").json()
    assert info["tokenizer"] == {
        "name": "",
        "num_tokens": 32,
        "codebook_size": titok.load(GENERATOR).codebook_size,  # the shipped pair shares its codebook
        "image_size": 32,
        "ordered": False,
    }
    generator = info["generator"]
    assert generator["classes"] == list(FASHION_MNIST_CLASSES) and generator["num_classes"] == 10
    assert generator["sampling"] == titok.load(GENERATOR).config.sampling.to_dict()
    assert [e["name"] for e in info["examples"]] == list(FASHION_MNIST_CLASSES)
    assert info["precision"].startswith("fp32")


def test_tokenize_gives_what_titok_tokenize_and_reconstruct_give(shipped, tmp_path):
    example = shipped.get("/api/examples/6.png")
    assert example.headers["content-type"] == "image/png"
    (tmp_path / "coat.png").write_bytes(example.content)
    result = shipped.post("/api/tokenize", content=example.content, headers={"X-File-Name": "coat%20%C3%A9.png"})
    assert result.status_code == 200, result.text
    result = result.json()
    assert result["name"] == "coat é.png"
    assert main(["tokenize", str(TOKENIZER), str(tmp_path / "coat.png"), "-o", str(tmp_path / "c.npz"), *FP32]) == 0
    with np.load(tmp_path / "c.npz") as data:
        assert result["codes"] == data["codes"][0].tolist()
    assert main(["reconstruct", str(TOKENIZER), str(tmp_path / "coat.png"), "-o", str(tmp_path / "r"), *FP32]) == 0
    psnr_db = float((tmp_path / "r" / "psnr.csv").read_text().splitlines()[1].split(",")[1])
    assert result["psnr"] == pytest.approx(psnr_db, abs=1e-3)
    assert main(["detokenize", str(TOKENIZER), str(tmp_path / "c.npz"), "-o", str(tmp_path / "d"), *FP32]) == 0
    decoded = np.asarray(Image.open(next((tmp_path / "d").glob("*.png"))))
    assert np.abs(pixels(result["reconstruction"]).astype(int) - decoded).max() <= 1
    original = titok.load_images(tmp_path / "coat.png", 32)[0]
    assert np.abs(pixels(result["original"]) / 255 - original.permute(1, 2, 0).numpy()).max() <= 0.5 / 255 + 1e-6


def test_an_upload_is_read_as_the_cli_reads_its_file(tiny, tiny_models, tmp_path):
    """A JPEG of another size, lying down with an EXIF orientation: the same codes as ``titok tokenize``."""
    rng = np.random.default_rng(1)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: shown upright after a 90-degree turn
    data = png_bytes(rng.integers(0, 255, (40, 70, 3), dtype=np.uint8), format="JPEG", exif=exif)
    (tmp_path / "photo.jpg").write_bytes(data)
    codes = tiny.post("/api/tokenize", content=data).json()["codes"]
    assert (
        main(["tokenize", str(tiny_models[0]), str(tmp_path / "photo.jpg"), "-o", str(tmp_path / "c.npz"), *FP32]) == 0
    )
    with np.load(tmp_path / "c.npz") as cli:
        assert codes == cli["codes"][0].tolist()


@pytest.mark.parametrize("precision,enabled", [("fp32", False), ("bf16", True)])
def test_the_work_runs_in_the_chosen_precision_on_the_worker_thread(tiny_models, precision, enabled):
    """torch's autocast is per thread: the worker enters it itself, around each call."""
    import asyncio

    from titok.precision import resolve
    from titok.serve.worker import Worker

    engine = Engine(titok.load(tiny_models[0]), precision=resolve(precision, "cpu"))
    worker = Worker(engine.scope)
    try:
        state = asyncio.run(worker.run(lambda: (torch.is_autocast_enabled("cpu"), torch.is_grad_enabled())))
    finally:
        worker.close()
    assert state == (enabled, False)


def test_generate_gives_the_codes_and_samples_of_titok_generate(shipped, tmp_path):
    sampling = {"num_sample_steps": 6, "guidance_scale": 2.5, "randomize_temperature": 1.5, "mask_schedule": "cosine"}
    request = {"label": 3, "num_samples": 4, "seed": 7, "sampling": sampling}
    result = shipped.post("/api/generate", json=request).json()
    options = ["--steps", "6", "--guidance", "2.5", "--temperature", "1.5", "--mask-schedule", "cosine", "--seed", "7"]
    out = ["--codes", str(tmp_path / "g.npz"), "--out-dir", str(tmp_path / "g")]
    assert (
        main(["generate", str(TOKENIZER), str(GENERATOR), "--classes", "3", "--per-class", "4", *options, *out, *FP32])
        == 0
    )
    with np.load(tmp_path / "g.npz") as data:
        assert result["codes"] == data["codes"].tolist()
    for url, png in zip(result["images"], sorted((tmp_path / "g").glob("*.png")), strict=True):
        assert np.array_equal(pixels(url), np.asarray(Image.open(png)))
    assert result["labels"] == [3] * 4 and result["steps"] == [] and result["sampling"]["mask_schedule"] == "cosine"


def test_unconditional_samples_across_batches_equal_the_cli(tiny, tiny_models, tmp_path):
    request = {"label": None, "num_samples": 40, "seed": 3, "sampling": {"num_sample_steps": 3}}
    result = tiny.post("/api/generate", json=request).json()
    argv = ["generate", *map(str, tiny_models), "--unconditional", "40", "--seed", "3", "--steps", "3"]
    assert main([*argv, "--codes", str(tmp_path / "u.npz"), *FP32]) == 0  # two batches: 32 and 8
    with np.load(tmp_path / "u.npz") as data:
        assert result["codes"] == data["codes"].tolist() and len(result["images"]) == 40


def test_the_steps_show_the_codes_kept_and_end_with_the_samples(tiny):
    request = {"label": 2, "num_samples": 3, "seed": 0, "show_steps": True, "sampling": {"num_sample_steps": 4}}
    result = tiny.post("/api/generate", json=request).json()
    steps = result["steps"]
    assert [s["step"] for s in steps] == [1, 2, 3, 4]
    kept = [[row.count("1") for row in s["kept"]] for s in steps]
    assert all(len(s["images"]) == 3 and len(s["kept"]) == 3 for s in steps)
    assert kept[-1] == [8, 8, 8] and all(a <= b for x, y in itertools.pairwise(kept) for a, b in zip(x, y))
    assert 0 < kept[0][0] < 8
    assert steps[-1]["images"] == result["images"]
    without = tiny.post("/api/generate", json={**request, "show_steps": False}).json()
    assert without["codes"] == result["codes"]  # watching the steps changes nothing


def test_detokenize_decodes_edited_codes_and_prefixes(tiny, tiny_models):
    data = png_bytes(np.random.default_rng(2).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    upload = tiny.post("/api/tokenize", content=data).json()
    tokenizer = titok.load(tiny_models[0])
    edited = [*upload["codes"][:2], (upload["codes"][2] + 5) % 32, *upload["codes"][3:]]
    for codes, keep in ((upload["codes"], 8), (edited, 8), (edited, 3)):
        result = tiny.post("/api/detokenize", json={"codes": codes, "keep": keep, "image": upload["id"]}).json()
        expected = tokenizer.detokenize(torch.tensor([codes[:keep]])).clamp(0, 1)[0].permute(1, 2, 0).numpy()
        assert np.abs(pixels(result["image"]) / 255 - expected).max() <= 1 / 255 + 1e-6
        assert result["keep"] == keep and isinstance(result["psnr"], float)
    same = tiny.post("/api/detokenize", json={"codes": upload["codes"], "image": upload["id"]}).json()
    assert same["psnr"] == pytest.approx(upload["psnr"], abs=1e-6) and same["image"] == upload["reconstruction"]
    assert tiny.post("/api/detokenize", json={"codes": edited, "image": "forgotten"}).json()["psnr"] is None


def _float_tiff(high: float) -> bytes:
    return png_bytes(np.linspace(0, high, 64, dtype=np.float32).reshape(8, 8), format="TIFF")


@pytest.mark.parametrize(
    "content,status,message",
    [
        (b"GIF89a but not a picture", 415, "not an image titok can read"),
        (b"just some text", 415, "not an image titok can read"),
        (b"", 400, "the upload is empty"),
        (png_bytes(np.zeros((20, 20, 3), np.uint8)), 413, "20x20 = 400 pixels; titok serve takes at most 300"),
        (png_bytes(np.zeros((2, 70, 3), np.uint8)), 400, "aspect ratio 35:1 is beyond"),
        (bytes(1001), 413, "1,001 bytes; titok serve takes at most 1,000"),
        (_float_tiff(5.0), 400, "mode F: 32-bit float pixels must be in [0, 1], but these span [0, 5]"),
    ],
)
def test_a_bad_upload_gets_a_message(tiny_models, content, status, message):
    with tiny_client(tiny_models, max_bytes=1000, max_pixels=300) as client:
        response = client.post("/api/tokenize", content=content, headers={"X-File-Name": "x.png"})
    assert response.status_code == status and message in response.json()["error"], response.text
    assert "Traceback" not in response.text


def test_a_deep_grey_upload_is_read(tiny):
    assert tiny.post("/api/tokenize", content=_float_tiff(1.0)).status_code == 200


@pytest.mark.parametrize(
    "path,body,message",
    [
        ("detokenize", {"codes": [1, 2]}, "codes must be a list of this tokenizer's 8 codes, got [1, 2]"),
        ("detokenize", {"codes": [0] * 7 + [32]}, "code 32 at position 7 is not an integer in [0, 32)"),
        ("detokenize", {"codes": [0] * 7 + [True]}, "code True at position 7"),
        ("detokenize", {"codes": [0] * 8, "keep": 9}, "keep must be an integer in [1, 8], got 9"),
        ("detokenize", {"codes": [0] * 8, "extra": 1}, "unknown key(s) ['extra']"),
        ("detokenize", [1, 2], "the request must be a JSON object"),
        ("generate", {"label": 3}, "label must be an integer in [0, 2], got 3"),
        ("generate", {"num_samples": 0}, "num_samples must be an integer in [1, 64], got 0"),
        ("generate", {"seed": -1}, "seed must be an integer in [0, "),
        ("generate", {"sampling": {"num_sample_steps": 2.5}}, "num_sample_steps: expected an integer, got 2.5"),
        ("generate", {"sampling": {"num_sample_steps": 65}}, "at most 64 steps, got 65"),
        ("generate", {"sampling": {"mask_schedule": "zigzag"}}, "'zigzag' is not one of ['arccos'"),
        ("generate", {"sampling": {"temperature": 1}}, "sampling has unknown key(s) ['temperature']"),
        ("generate", {"show_steps": "yes"}, "show_steps must be true or false"),
    ],
)
def test_a_bad_request_gets_a_message(tiny, path, body, message):
    response = tiny.post(f"/api/{path}", json=body)
    assert response.status_code == 400 and message in response.json()["error"], response.text


def test_other_refusals(shipped, tiny_models):
    response = shipped.post("/api/detokenize", json={"codes": [0] * 32, "keep": 5})
    assert response.status_code == 400 and "not ordered" in response.json()["error"]
    response = shipped.post("/api/generate", content=b"{not json")
    assert response.status_code == 400 and response.json() == {"error": "the request body is not JSON"}
    assert shipped.get("/api/examples/1000.png").status_code == 404
    assert shipped.get("/api/nothing").json() == {"error": "GET /api/nothing: Not Found"}
    assert shipped.get("/api/tokenize").status_code == 405
    tokenizer = titok.load(tiny_models[0])
    with TestClient(create_app(Engine(tokenizer))) as alone:
        assert alone.get("/api/info").json()["generator"] is None
        response = alone.post("/api/generate", json={})
        assert response.status_code == 400 and "no generator is loaded" in response.json()["error"]


def test_a_failure_is_a_500_with_one_line_and_no_traceback(tiny_models, monkeypatch):
    def broken(*args):
        raise RuntimeError("the decoder fell over\nsecond line")

    with tiny_client(tiny_models) as client:
        monkeypatch.setattr(client.app.state.api.engine, "decode", broken)
        response = client.post("/api/detokenize", json={"codes": [0] * 8})
    assert response.status_code == 500
    assert response.json() == {
        "error": "the server failed: RuntimeError: the decoder fell over (its log has the details)"
    }


def test_the_page_loads_nothing_from_elsewhere(tiny):
    page = tiny.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    static = Path(titok.__file__).parent / "serve" / "static"
    for name in ("index.html", "app.js", "style.css"):
        text = (static / name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name
        assert tiny.get(f"/static/{name}" if name != "index.html" else "/").text == text


def test_requests_run_one_at_a_time_and_wait_their_turn(tiny_models):
    """Eight browsers decode at once: every request is answered, and the model never runs two at a time."""
    tokenizer, generator = (titok.load(path) for path in tiny_models)
    engine = Engine(tokenizer, generator, limits=Limits(max_pending=3))
    running, most, lock, release = [0], [0], threading.Lock(), threading.Event()
    decode = engine.decode

    def watched(*args):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        release.wait(10)
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return decode(*args)

    engine.decode = watched
    served = Served(create_app(engine))
    answers: list[tuple[int, dict]] = []

    def ask():
        response = httpx.post(f"{served.url}/api/detokenize", json={"codes": [1] * 8}, timeout=30)
        answers.append((response.status_code, response.json()))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while len(answers) < 5 and time.monotonic() < deadline:  # three wait (one running), five are turned away
            time.sleep(0.01)
        release.set()
        for thread in threads:
            thread.join()
    finally:
        release.set()
        served.stop()
    assert sorted(status for status, _ in answers) == [200] * 3 + [503] * 5 and most[0] == 1
    busy = [body["error"] for status, body in answers if status == 503]
    assert busy[0] == "the server is busy (3 requests waiting); try again in a moment"
