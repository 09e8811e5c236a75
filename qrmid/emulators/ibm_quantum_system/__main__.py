"""``python -m qrmid.emulators.ibm_quantum_system --port PORT [--host 127.0.0.1] [--config FILE]``.

Prints ``listening on http://HOST:PORT`` once it serves (``--port 0`` picks a free port and prints it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from ..serving import serve
from .app import build_app
from .config import load_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m qrmid.emulators.ibm_quantum_system", description="Emulator of the IBM Quantum System API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--config", type=Path, help="TOML or JSON file; defaults serve one fake_perth backend")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(build_app(load_config(args.config)), args))


if __name__ == "__main__":
    main()
