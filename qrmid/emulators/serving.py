"""Serving an emulator: bind its socket here, so that the real port is known, and announce
``listening on http://HOST:PORT`` once it accepts requests."""

from __future__ import annotations

import argparse
import asyncio
import socket

import uvicorn
from starlette.types import ASGIApp


async def serve(app: ASGIApp, args: argparse.Namespace) -> None:
    """Serve ``app`` on ``args.host``:``args.port`` (0 picks a free port) at ``args.log_level``, until stopped."""
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off only on sockets of that protocol, and accepted
    # connections inherit it; with Nagle on, each JSON answer (headers, then body) stalls ~40 ms on the
    # client's delayed ACK, a latency of this process's own, not of the service
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level=getattr(args, "log_level", "warning"), lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if server.started:
        host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
        print(f"listening on http://{host}:{port}", flush=True)
    await task
