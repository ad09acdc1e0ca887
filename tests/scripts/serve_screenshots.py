"""Screenshots of ``titok serve``'s two tabs with the shipped models, for the docs (docs/images/serve-*.png).

    python tests/scripts/serve_screenshots.py [--out docs/images]

Drives Debian's headless Chromium (apt-get install chromium chromium-driver) with Selenium, like the browser tests.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the serving helpers

from serving import Served, browser_missing, chromium
from test_serve_browser import by, open_page, settle

import titok
from titok.data.datasets import FASHION_MNIST_CLASSES
from titok.demo import GENERATOR, TOKENIZER
from titok.serve.app import create_app
from titok.serve.engine import Engine


def tokenize_tab(driver, url: str, out: Path) -> None:
    open_page(driver, url)
    by(driver, ".example")[FASHION_MNIST_CLASSES.index("Ankle boot")].click()
    settle(driver, lambda d: len(by(d, "#codes .code")) == 32)
    by(driver, "#codes .code")[5].click()
    settle(driver)
    driver.save_screenshot(str(out / "serve-tokenize.png"))


def generate_tab(driver, url: str, out: Path) -> None:
    from selenium.webdriver.support.ui import Select

    open_page(driver, url)
    by(driver, "#tab-generate")[0].click()
    Select(by(driver, "#label")[0]).select_by_visible_text("Sneaker")
    by(driver, "#show-steps")[0].click()
    by(driver, "#generate")[0].click()
    settle(driver, lambda d: len(by(d, "#samples img")) == 8)
    driver.save_screenshot(str(out / "serve-generate.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images", help="folder for the PNGs")
    args = parser.parse_args()
    if browser_missing():
        sys.exit(f"no browser: {browser_missing()}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = ("the shipped Fashion-MNIST model",) * 2
    engine = Engine(titok.load(TOKENIZER), titok.load(GENERATOR), class_names=FASHION_MNIST_CLASSES, names=names)
    server, driver = Served(create_app(engine)), chromium(1100, 860)
    try:
        tokenize_tab(driver, server.url, out)
        generate_tab(driver, server.url, out)
    finally:
        driver.quit()
        server.stop()
    print(f"wrote {out / 'serve-tokenize.png'} and {out / 'serve-generate.png'}")


if __name__ == "__main__":
    main()
