"""``titok serve``: the tokenizer and the generator in a local web page (the ``demo`` extra)."""

from __future__ import annotations

import argparse
import ipaddress
import socket
from pathlib import Path

from titok.cli.common import CommandError, add_common, load_model
from titok.cli.precision import add_precision_argument


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="the tokenizer and generator in a local web page (pip install 'titok-tokenizer[demo]')",
        description="Serve a web page that tokenizes uploaded images (codes, reconstruction, PSNR; edit a token and "
        "see the image change) and generates samples (and shows the decoding's steps). Without --tokenizer and "
        "--generator: the shipped Fashion-MNIST models; with --tokenizer alone: no generator. Requests run one at a "
        "time; nothing is fetched from the internet.",
    )
    p.add_argument("--tokenizer", help="a tokenizer with discrete codes (default: the shipped Fashion-MNIST one)")
    p.add_argument(
        "--generator",
        help="a generator over the tokenizer's codes (default: the shipped one, unless --tokenizer is given)",
    )
    p.add_argument("--class-names", metavar="FILE", help="the generator's class names, one per line")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0: every network)")
    p.add_argument("--port", type=int, default=7860, help="the port to listen on (0: any free one)")
    add_common(p)
    add_precision_argument(p)
    p.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from titok.serve import require_demo_extra

    try:
        require_demo_extra()
    except ImportError as e:
        raise CommandError(str(e)) from None
    import uvicorn

    from titok.serve.app import create_app

    engine = _engine(args)
    server = uvicorn.Server(
        uvicorn.Config(create_app(engine), log_level="info" if args.verbose else "warning", access_log=args.verbose)
    )
    sock = _listen(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"tokenizer: {engine.names[0]}; generator: {engine.names[1] or 'none'}; precision: {engine.precision}")
    print(f"listening on http://{shown}:{port}/ (Ctrl-C to stop)", flush=True)
    if not _is_loopback(host):
        print(f"warning: {host} is reachable from other machines; use --host 127.0.0.1 to keep it local")
    server.run(sockets=[sock])
    return 0


def _engine(args: argparse.Namespace):
    from titok.demo import GENERATOR, TOKENIZER
    from titok.precision import resolve
    from titok.serve.engine import Engine

    tokenizer_spec = args.tokenizer or str(TOKENIZER)
    generator_spec = args.generator or (None if args.tokenizer else str(GENERATOR))
    tokenizer = load_model(tokenizer_spec, None, args.device)
    generator = load_model(generator_spec, None, args.device) if generator_spec else None
    shipped = "the shipped Fashion-MNIST model"
    names = (args.tokenizer or shipped, args.generator or ("" if args.tokenizer else shipped))
    try:
        return Engine(
            tokenizer,
            generator,
            precision=resolve(args.precision, args.device),
            class_names=_class_names(args.class_names, generator_spec, GENERATOR),
            names=names,
        )
    except ValueError as e:
        raise CommandError(str(e)) from None


def _class_names(path: str | None, generator: str | None, shipped: Path) -> list[str] | None:
    """``--class-names`` read, or Fashion-MNIST's for the shipped generator, or None (the page numbers them)."""
    from titok.data.datasets import FASHION_MNIST_CLASSES

    if path is not None:
        try:
            names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise CommandError(f"--class-names {path}: {e}") from None
        if not names:
            raise CommandError(f"--class-names {path}: the file names no class (one name a line)")
        return names
    if generator is not None and Path(generator).resolve() == shipped.resolve():
        return list(FASHION_MNIST_CLASSES)
    return None


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host``:``port``, or a :class:`CommandError` saying why not."""
    if not 0 <= port <= 65535:
        raise CommandError(f"--port must be in [0, 65535], got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as e:
        raise CommandError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
