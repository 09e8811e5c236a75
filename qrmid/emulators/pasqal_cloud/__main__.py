"""Command line: serve the emulator and print ``listening on http://HOST:PORT`` once it accepts requests."""

from __future__ import annotations

import argparse
import asyncio

from ..serving import serve
from .app import create_app
from .config import EmulatorConfig


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m qrmid.emulators.pasqal_cloud", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--config", help="JSON settings file (see qrmid.emulators.pasqal_cloud.config)")
    args = parser.parse_args()
    asyncio.run(serve(create_app(EmulatorConfig.load(args.config)), args))


if __name__ == "__main__":
    main()
