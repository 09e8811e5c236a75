"""Command line: serve the emulator and print ``listening on http://HOST:PORT`` once it accepts requests."""

from __future__ import annotations

import argparse
import asyncio
import socket

import uvicorn

from .app import create_app
from .config import EmulatorConfig


async def serve(host: str, port: int, config: EmulatorConfig) -> None:
    """Bind (port 0 picks a free one), serve, and announce the real address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.02)
    if server.started:
        bound_host, bound_port = sock.getsockname()[:2]
        print(f"listening on http://{bound_host}:{bound_port}", flush=True)
    await serving


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m qrmid.emulators.pasqal_cloud", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--config", help="JSON settings file (see qrmid.emulators.pasqal_cloud.config)")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, EmulatorConfig.load(args.config)))


if __name__ == "__main__":
    main()
