"""Starting qrmid for tests: in-process on the test's event loop, or as a real subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from qrmid.client_health import wait_serving
from qrmid.daemon import Daemon
from qrmid.ops.config import Config

ROOT = Path(__file__).resolve().parents[1]


def short_dir() -> Path:
    """A fresh private directory with a short path (Unix socket paths are limited to 107 bytes)."""
    return Path(tempfile.mkdtemp(prefix="q"))


def config(resources: list[dict[str, Any]] | None = None, **sections: dict[str, Any]) -> Config:
    """A config on a fresh socket; the embedded resources unless ``resources`` is given."""
    scratch = short_dir()
    doc: dict[str, Any] = {"daemon": {"socket": str(scratch / "qrmid.sock"), "shutdown_grace_seconds": 5},
                           "journal": {"path": str(scratch / "journal.db")}}
    for name, values in sections.items():
        doc.setdefault(name, {}).update(values)
    if resources is not None:
        doc["resources"] = resources
    return Config.model_validate(doc)


@asynccontextmanager
async def running(cfg: Config) -> AsyncIterator[Daemon]:
    """A daemon serving ``cfg`` on the current event loop."""
    daemon = Daemon(cfg)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


def write_config(path: Path, text: str) -> Path:
    """``text`` in ``path``, readable only by its owner (as a config holding secrets must be)."""
    path.touch(mode=0o600)
    path.write_text(text)
    return path


@contextmanager
def serving(cfg: Path, address: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``qrmid serve --config cfg`` in its own process, yielded once it serves at ``address``; SIGTERM at exit
    (SIGKILL after a minute) unless it is gone already."""
    process = subprocess.Popen([sys.executable, "-m", "qrmid", "serve", "--config", str(cfg)],
                               env={**os.environ, **(env or {})}, cwd=ROOT)
    try:
        wait_serving(address, process=process)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def subprocess_daemon(config_text: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``qrmid serve`` in its own process on a fresh socket; yields (address, process); SIGTERM at exit."""
    scratch = short_dir()
    socket = scratch / "qrmid.sock"
    journal = "" if "[journal]" in config_text else f'[journal]\npath = "{scratch / "journal.db"}"\n'
    cfg = write_config(scratch / "qrmid.toml", f'[daemon]\nsocket = "{socket}"\n{config_text}\n{journal}')
    address = f"unix:{socket}"
    with serving(cfg, address, env) as process:
        yield address, process
