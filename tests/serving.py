"""For the ``titok serve`` tests: tiny models to serve, the app on a free local port in a thread, and Debian's
headless Chromium driven by Selenium.

Nothing here downloads a browser or a driver: Selenium is pointed at ``/usr/bin/chromium`` and
``/usr/bin/chromedriver`` (``apt-get install chromium chromium-driver``), and its manager is kept offline.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

CHROMIUM = Path(os.environ.get("TITOK_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("TITOK_CHROMEDRIVER", "/usr/bin/chromedriver"))


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (path.is_file() and os.access(path, os.X_OK)):
            found = shutil.which(path.name)
            hint = f" (one is at {found}: set TITOK_{path.name.upper()})" if found else ""
            return f"no {path} (apt-get install {package}){hint}"
    return None


def chromium(width: int = 1280, height: int = 900):
    """A headless Chromium WebDriver (quit it when done)."""
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a browser or driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))


class Served:
    """``app`` served by uvicorn on a free port of 127.0.0.1 in a thread; ``url`` is its address. ``stop()`` ends
    it."""

    def __init__(self, app) -> None:
        import uvicorn

        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


def save_tiny_models(root: Path) -> tuple[Path, Path]:
    """A tiny ordered tokenizer (8 tokens of 32 codes, 32 px) and a generator over its codes (3 classes), saved
    under ``root``; random weights, for behaviour tests."""
    import torch
    from tiny import TINY_CONFIGS, tiny_titok

    import titok

    torch.manual_seed(0)
    tokenizer = titok.models.build_model(tiny_titok(num_tokens=8, ordered=True))
    generator = titok.models.build_model(TINY_CONFIGS["bert"].replace(codebook_size=32, num_tokens=8))
    tokenizer.save_pretrained(root / "tokenizer")
    generator.save_pretrained(root / "generator")
    return root / "tokenizer", root / "generator"
