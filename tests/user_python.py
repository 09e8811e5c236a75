"""A Python every user can run qrmid with, for tests that run the daemon or a client as another user: Debian's
python3 (the tests' minor version, so compiled packages load) on a copy of the project's package and the test
environment's packages in a directory every user may enter. The tests' own interpreter, the checkout and its
environment may all sit where only their owner may go."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from daemons import ROOT

SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class UserPython:
    executable: str
    path: str  # PYTHONPATH

    def env(self, base: dict[str, str]) -> dict[str, str]:
        return {**base, "PYTHONPATH": self.path}


def _readable_copy(source: str, destination: str) -> None:
    """A hard link when ``source`` is readable by all (same file system), else a copy readable by all."""
    mode = os.stat(source).st_mode
    if mode & 0o004:
        try:
            os.link(source, destination)
            return
        except OSError:
            pass
    shutil.copy2(source, destination)
    os.chmod(destination, mode | 0o444 | (0o111 if mode & 0o100 else 0))


@contextmanager
def user_python() -> Iterator[UserPython]:
    """The interpreter and PYTHONPATH; the copy is removed at the end. Fails with the fix when python3 is missing
    or of another minor version."""
    if shutil.which(SYSTEM_PYTHON) is None:
        raise RuntimeError(f"missing {SYSTEM_PYTHON}; install with: apt-get install python3")
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                             text=True, check=True).stdout.strip()
    if version != str(sys.version_info[:2]):
        raise RuntimeError(f"{SYSTEM_PYTHON} is Python {version}, the tests run {sys.version_info[:2]}: other users "
                           "need the same minor version to load this environment's compiled packages")
    tree = Path(tempfile.mkdtemp(prefix="qp"))
    try:
        shutil.copytree(ROOT / "qrmid", tree / "qrmid", copy_function=_readable_copy,
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(sysconfig.get_paths()["purelib"], tree / "site-packages", copy_function=_readable_copy,
                        ignore=shutil.ignore_patterns("__pycache__"))
        for directory, _, _ in os.walk(tree):
            os.chmod(directory, os.stat(directory).st_mode | 0o555)
        yield UserPython(SYSTEM_PYTHON, f"{tree}:{tree / 'site-packages'}")
    finally:
        shutil.rmtree(tree, ignore_errors=True)
