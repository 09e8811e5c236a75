"""The systemd unit is valid and hardened."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from daemons import ROOT

UNIT = ROOT / "systemd" / "qrmid.service"
INSTALLED = "/opt/qrmid/bin/qrmid"  # where the README installs qrmid for the service


def test_unit_verifies_without_complaint(tmp_path: Path) -> None:
    """``systemd-analyze verify`` prints nothing, given the unit's qrmid (here: the one under test)."""
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED} serve" in text
    qrmid = shutil.which("qrmid", path=str(Path(sys.executable).parent))
    assert qrmid, "qrmid is installed next to this Python"
    copy = tmp_path / "qrmid.service"
    copy.write_text(text.replace(INSTALLED, qrmid))
    run = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True)
    assert run.stderr == "" and run.returncode == 0


def test_unit_is_a_notify_service_with_a_runtime_directory() -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "RuntimeDirectory=qrmid", "NoNewPrivileges=yes", "ProtectSystem=strict"):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line


def test_unit_exposure_score_is_low() -> None:
    run = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNIT)], capture_output=True,
                         text=True)
    score = float(re.search(r"Overall exposure level for qrmid.service: ([0-9.]+)", run.stdout).group(1))
    assert score <= 3.0, run.stdout
