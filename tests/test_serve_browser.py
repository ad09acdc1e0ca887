"""``titok serve``'s page in a real browser (Debian's headless Chromium, driven by Selenium): upload, read the codes and
the reconstruction, move the tokens-kept slider, edit a token, generate with a fixed seed; the codes and pictures
are those of the ``titok`` commands. Skipped, with the reason, only where Chromium or its driver is not installed."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image
from serving import Served, browser_missing, chromium, save_tiny_models

import titok
from titok.cli import main
from titok.data.datasets import FASHION_MNIST_CLASSES
from titok.demo import GENERATOR, TOKENIZER
from titok.serve.app import create_app
from titok.serve.engine import Engine

pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=f"no browser to test in: {browser_missing()}")

FP32 = ["--precision", "fp32", "--device", "cpu"]
CLASSES = ["cat", "dog", "bird"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return save_tiny_models(tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def served(models):
    engine = Engine(*(titok.load(path) for path in models), class_names=CLASSES, names=("tiny", "tiny generator"))
    server = Served(create_app(engine))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def driver():
    browser = chromium()
    yield browser
    browser.quit()


def by(driver, css: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def settle(driver, condition=lambda d: True, timeout: float = 30):
    """Wait until the page has no request in flight and ``condition(driver)`` holds."""
    from selenium.webdriver.support.ui import WebDriverWait

    def done(d):
        return by(d, "body")[0].get_attribute("data-busy") == "0" and condition(d)

    WebDriverWait(driver, timeout, poll_frequency=0.05).until(done)


def open_page(driver, url: str) -> None:
    driver.get(url)
    settle(driver, lambda d: by(d, "body")[0].get_attribute("data-ready") == "1")


def codes(driver) -> list[int]:
    return [int(cell.text) for cell in by(driver, "#codes .code")]


def shown(driver, css: str) -> np.ndarray:
    """The pixels of an image on the page (a PNG data URL), at the model's resolution."""
    source = by(driver, css)[0].get_attribute("src")
    assert source.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).convert("RGB"))


def decoded(tokenizer, values: list[int]) -> np.ndarray:
    return np.asarray(tokenizer.detokenize(torch.tensor([values])).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255)


def close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and float(np.abs(a.astype(float) - b).max()) <= 1.0


@pytest.fixture
def uploaded(driver, served, tmp_path):
    """The page, with a 48x40 RGB picture uploaded through its file input."""
    path = tmp_path / "picture.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
    open_page(driver, served.url)
    by(driver, "#upload")[0].send_keys(str(path))
    settle(driver, lambda d: len(codes(d)) == 8)
    return path


def test_an_upload_shows_the_codes_and_reconstruction_the_cli_gives(driver, served, models, uploaded, tmp_path):
    assert main(["tokenize", str(models[0]), str(uploaded), "-o", str(tmp_path / "c.npz"), *FP32]) == 0
    with np.load(tmp_path / "c.npz") as data:
        assert codes(driver) == data["codes"][0].tolist()
    assert main(["reconstruct", str(models[0]), str(uploaded), "-o", str(tmp_path / "r"), *FP32]) == 0
    psnr_db = float((tmp_path / "r" / "psnr.csv").read_text().splitlines()[1].split(",")[1])
    assert by(driver, "#psnr")[0].text == f"PSNR {psnr_db:.2f} dB"
    assert main(["detokenize", str(models[0]), str(tmp_path / "c.npz"), "-o", str(tmp_path / "d"), *FP32]) == 0
    assert close(shown(driver, "#reconstruction"), np.asarray(Image.open(next((tmp_path / "d").glob("*.png")))))
    picture = by(driver, "#reconstruction")[0]  # 32 pixels drawn 256 wide, nearest neighbour
    assert picture.get_property("naturalWidth") == 32 and picture.value_of_css_property("width") == "256px"
    assert picture.value_of_css_property("image-rendering") == "pixelated"
    assert by(driver, "#keep-box")[0].is_displayed() and not by(driver, "#unordered")[0].is_displayed()
    loaded = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(served.url) for url in loaded), loaded  # nothing from elsewhere


def test_the_slider_decodes_the_first_k_tokens(driver, models, uploaded):
    from selenium.webdriver.common.keys import Keys

    tokenizer, original = titok.load(models[0]), codes(driver)
    slider = by(driver, "#keep")[0]
    for _ in range(3):
        slider.send_keys(Keys.ARROW_LEFT)
    settle(driver, lambda d: by(d, "#keep-value")[0].text == "5")
    settle(driver, lambda d: close(shown(d, "#reconstruction"), decoded(tokenizer, original[:5])))
    dropped = [cell.get_attribute("data-position") for cell in by(driver, "#codes .code.dropped")]
    assert dropped == ["5", "6", "7"] and codes(driver) == original
    assert by(driver, "#kept-count")[0].text == "the first 5 of 8"


def test_a_token_set_by_hand_or_at_random_changes_the_image(driver, models, uploaded):
    tokenizer, original = titok.load(models[0]), codes(driver)
    by(driver, "#codes .code")[2].click()
    assert by(driver, "#editor")[0].is_displayed() and by(driver, "#edit-position")[0].text == "2"
    field = by(driver, "#edit-code")[0]
    assert field.get_attribute("value") == str(original[2])
    field.clear()
    field.send_keys(str((original[2] + 7) % 32))
    by(driver, "#edit-set")[0].click()
    edited = [*original[:2], (original[2] + 7) % 32, *original[3:]]
    settle(driver, lambda d: codes(d) == edited and close(shown(d, "#reconstruction"), decoded(tokenizer, edited)))
    assert [cell.get_attribute("data-position") for cell in by(driver, "#codes .code.edited")] == ["2"]
    by(driver, "#edit-random")[0].click()
    settle(driver, lambda d: codes(d)[2] != edited[2])
    settle(driver, lambda d: close(shown(d, "#reconstruction"), decoded(tokenizer, codes(d))))
    field.clear()
    field.send_keys("32")
    by(driver, "#edit-set")[0].click()
    assert by(driver, "#tokenize-error")[0].text == "a code is a whole number from 0 to 31"
    by(driver, "#edit-reset")[0].click()
    settle(driver, lambda d: codes(d) == original and close(shown(d, "#reconstruction"), decoded(tokenizer, original)))


def test_a_grid_generated_with_a_seed_has_the_codes_of_titok_generate(driver, served, models, tmp_path):
    from selenium.webdriver.support.ui import Select

    open_page(driver, served.url)
    by(driver, "#tab-generate")[0].click()
    Select(by(driver, "#label")[0]).select_by_visible_text("dog")
    Select(by(driver, "#schedule")[0]).select_by_visible_text("linear")
    for field, value in (
        ("num-samples", "3"),
        ("steps", "4"),
        ("guidance", "1.5"),
        ("temperature", "0.5"),
        ("seed", "11"),
    ):
        by(driver, f"#{field}")[0].clear()
        by(driver, f"#{field}")[0].send_keys(value)
    by(driver, "#show-steps")[0].click()
    by(driver, "#generate")[0].click()
    settle(driver, lambda d: len(by(d, "#samples img")) == 3)
    options = ["--steps", "4", "--guidance", "1.5", "--temperature", "0.5", "--mask-schedule", "linear", "--seed", "11"]
    argv = ["generate", *map(str, models), "--classes", "1", "--per-class", "3", *options]
    assert main([*argv, "--codes", str(tmp_path / "g.npz"), *FP32]) == 0
    with np.load(tmp_path / "g.npz") as data:
        expected = data["codes"].tolist()
    assert [
        [int(c) for c in image.get_attribute("data-codes").split()] for image in by(driver, "#samples img")
    ] == expected
    assert [caption.text for caption in by(driver, "#samples figcaption")] == ["dog"] * 3
    steps = by(driver, "#steps-view > .step")
    assert len(steps) == 4 and all(len(by(step, "img")) == 3 for step in steps)
    assert by(driver, "#steps-view h3")[-1].text == "step 4: 8 of 8 tokens kept"
    by(driver, "#steps")[0].clear()
    by(driver, "#generate")[0].click()
    settle(driver, lambda d: by(d, "#generate-error")[0].is_displayed())
    assert by(driver, "#generate-error")[0].text == "steps: enter a number"


def test_a_file_that_is_not_an_image_gets_a_message_on_the_page(driver, served, tmp_path):
    (tmp_path / "notes.png").write_text("shopping list: bread, milk")
    open_page(driver, served.url)
    by(driver, "#upload")[0].send_keys(str(tmp_path / "notes.png"))
    settle(driver, lambda d: by(d, "#tokenize-error")[0].is_displayed())
    message = by(driver, "#tokenize-error")[0].text
    assert message.startswith("notes.png is not an image titok can read") and "Traceback" not in message
    assert not by(driver, "#result")[0].is_displayed()


def test_the_shipped_models_by_name_and_without_a_slider(driver):
    engine = Engine(titok.load(TOKENIZER), titok.load(GENERATOR), class_names=FASHION_MNIST_CLASSES)
    server = Served(create_app(engine))
    try:
        open_page(driver, server.url)
        assert [e.get_attribute("title") for e in by(driver, ".example")] == list(FASHION_MNIST_CLASSES)
        by(driver, ".example")[1].click()
        settle(driver, lambda d: len(codes(d)) == 32)
        assert not by(driver, "#keep-box")[0].is_displayed() and by(driver, "#unordered")[0].is_displayed()
        assert by(driver, "#file-name")[0].text == "(example 2: Trouser)"
        names = [option.get_attribute("textContent") for option in by(driver, "#label option")]
        assert names == [*FASHION_MNIST_CLASSES, "none (unconditional)"]
    finally:
        server.stop()
