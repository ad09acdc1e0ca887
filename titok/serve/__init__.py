"""``titok serve``: a tokenizer and a generator in a local web page (the ``demo`` extra: Starlette and uvicorn).

- :mod:`titok.serve.worker`: the queue that runs model work one request at a time, and the error a request gets;
- :mod:`titok.serve.uploads`: uploaded bytes -> the model's input, pictures -> PNG data URLs, the shipped examples;
- :mod:`titok.serve.engine`: the models and what the page asks of them (tokenize, decode edited codes, generate);
- :mod:`titok.serve.app`: the ASGI app (a JSON API and the static page in ``static/``).

Nothing is fetched from the internet: the page's HTML, script and style are files of this package.
"""

from __future__ import annotations


def require_demo_extra() -> None:
    """Raise ``ImportError`` naming the ``demo`` extra unless Starlette and uvicorn can be imported."""
    from titok.extras import install_hint

    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"titok serve needs the 'demo' extra ({e.name} is not installed): {install_hint('demo')}"
        ) from None
