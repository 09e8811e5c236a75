"""A listener that is no daemon, run as another user where a client is pointed: it offers HTTP/2 SETTINGS so a
gRPC client goes on, and records every byte it receives, so a test can tell whether a credential reached it."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from daemons import short_dir

# Debian's python3, so any user can run it.
LISTENER = r"""
import socket, sys
server = socket.socket(socket.AF_UNIX)
server.bind(sys.argv[1])
server.listen(16)
print("listening", flush=True)
with open(sys.argv[2], "ab", buffering=0) as out:
    while True:
        conn, _ = server.accept()
        conn.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        conn.settimeout(3)
        try:
            while data := conn.recv(65536):
                out.write(data)
        except OSError:
            pass
        conn.close()
"""


@dataclass
class Impostor:
    socket: Path
    received: Path

    def bytes(self) -> bytes:
        return self.received.read_bytes()


@contextmanager
def impostor(user: str) -> Iterator[Impostor]:
    """``user`` listening on a socket in a directory of its own, recording what it receives."""
    python = shutil.which("python3", path="/usr/bin")
    if python is None:
        raise RuntimeError("missing /usr/bin/python3; install with: apt-get install python3")
    uid = pwd.getpwnam(user).pw_uid
    top = short_dir()
    top.chmod(0o755)
    home = top / "impostor"
    home.mkdir(mode=0o755)
    os.chown(home, uid, uid)
    found = Impostor(home / "qrmid.sock", home / "received")
    process = subprocess.Popen([python, "-c", LISTENER, str(found.socket), str(found.received)], user=user, group=user,
                               extra_groups=[], stdout=subprocess.PIPE, text=True, cwd="/")
    try:
        assert process.stdout is not None and process.stdout.readline() == "listening\n"
        yield found
    finally:
        process.kill()
        process.wait()
