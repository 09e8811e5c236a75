"""The config file: embedded default, and errors naming the file, the key and the fault."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from daemons import ROOT, short_dir

from qrmid.ops.config import ConfigError, load


def test_no_file_means_the_embedded_default() -> None:
    config = load(None)
    assert [(r.name, r.type) for r in config.resources] == [("local-qiskit", "local-qiskit"),
                                                             ("local-pulser", "local-pulser")]
    assert config.daemon.socket.name == "qrmid.sock"


def test_a_file_without_resources_serves_the_embedded_ones(tmp_path: Path) -> None:
    path = tmp_path / "qrmid.toml"
    path.write_text('[daemon]\nsocket = "/tmp/x.sock"\n')
    config = load(path)
    assert str(config.daemon.socket) == "/tmp/x.sock"
    assert [r.name for r in config.resources] == ["local-qiskit", "local-pulser"]


@pytest.mark.parametrize(("text", "expected"), [
    ('[daemon]\nsocket_mode = "0666"\n', "key 'daemon.socket_mode': must not give other users access"),
    ('[daemon]\nsokcet = "/x"\n', "key 'daemon.sokcet': unknown key"),
    ('[[resources]]\ntype = "local-qiskit"\nname = "a"\nslots = 0\n', "key 'resources[0].slots'"),
    ('[[resources]]\ntype = "warp-drive"\nname = "a"\n', "'warp-drive'"),
    ('[[resources]]\ntype = "local-qiskit"\nname = "a"\n[[resources]]\ntype = "noop"\nname = "a"\n',
     "two resources are named 'a'"),
    ('[[resources]]\ntype = "local-pulser"\nname = "p"\ndevice = "Fresnel9"\n', "key 'resources[0].device'"),
    ("[daemon\n", "not valid TOML"),
    ("resources = []\n", "no resources"),
])
def test_bad_config_names_file_key_and_fault(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load(path)
    assert str(error.value).startswith(f"{path}: ")
    assert expected in str(error.value)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "absent.toml")


def test_daemon_refuses_to_start_half_configured() -> None:
    scratch = short_dir()
    path = scratch / "bad.toml"
    socket = scratch / "qrmid.sock"
    path.write_text(f'[daemon]\nsocket = "{socket}"\n[[resources]]\ntype = "local-qiskit"\nname = "q"\n'
                    'max_qubits = 1000\n')
    run = subprocess.run([sys.executable, "-m", "qrmid", "serve", "--config", str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert f"{path}: key 'resources[0].max_qubits'" in run.stderr
    assert not socket.exists()


def test_config_errors_never_echo_secrets(tmp_path: Path) -> None:
    path = tmp_path / "ibm.toml"
    path.write_text('[[resources]]\ntype = "ibm-quantum-system"\nname = "ibm_x"\n'
                    'QRMI_IBM_QS_IAM_APIKEY = "s3cr3t-api-key"\nQRMI_IBM_QS_AWS_SECRET_ACCESS_KEY = 987654321\n')
    with pytest.raises(ConfigError) as error:
        load(path)
    message = str(error.value)
    assert "key 'resources[0].QRMI_IBM_QS_ENDPOINT': Field required" in message
    assert "QRMI_IBM_QS_AWS_SECRET_ACCESS_KEY" in message
    assert "s3cr3t" not in message and "987654321" not in message
