"""``python -m qrmid.emulators.ibm_quantum_system --port PORT [--host 127.0.0.1] [--config FILE]``.

Prints ``listening on http://HOST:PORT`` once it serves (``--port 0`` picks a free port and prints it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

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


async def serve(app: ASGIApp, args: argparse.Namespace) -> None:
    """Serve on a socket bound here, so that the real port is known before announcing it."""
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off only on sockets of that protocol, and accepted
    # connections inherit it; with Nagle on, each JSON answer (headers, then body) stalls ~40 ms on the
    # client's delayed ACK, a latency of this process's own, not of the service
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if server.started:
        host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
        print(f"listening on http://{host}:{port}", flush=True)
    await task


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(build_app(load_config(args.config)), args))


if __name__ == "__main__":
    main()
