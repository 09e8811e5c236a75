"""The config file: embedded default, and errors naming the file, the key and the fault."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from daemons import ROOT, short_dir
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from qrmid.backends.registry import ResourceConfig
from qrmid.ops.config import Config, ConfigError, load


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


def _numeric_keys() -> list[tuple[str, str, FieldInfo]]:
    """(section, key, field) of every int or float key of the config's sections."""
    found = []
    for section, field in Config.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            found += [(section, key, info) for key, info in model.model_fields.items()
                      if info.annotation in (int, float, "int", "float")]
    return found


@pytest.mark.parametrize(("section", "key", "field"), _numeric_keys(), ids=lambda value: str(value)[:40])
def test_every_numeric_key_is_bounded_and_says_its_range(tmp_path: Path, section: str, key: str,
                                                         field: FieldInfo) -> None:
    bounds = {name: getattr(item, name) for item in field.metadata for name in ("ge", "gt", "le", "lt")
              if hasattr(item, name)}
    assert {"ge", "gt"} & bounds.keys() and "le" in bounds, f"[{section}] {key} needs a lower and an upper bound"
    high = bounds["le"]
    too_big = high * 10 + 1 if field.annotation in (int, "int") else high * 10.0 + 1
    path = tmp_path / "qrmid.toml"
    path.write_text(f"[{section}]\n{key} = {too_big}\n")
    with pytest.raises(ConfigError) as refused:
        load(path)
    message = str(refused.value)
    assert f"key '{section}.{key}': must be " in message and f"(got {too_big!r})" in message
    assert f"at most {int(high) if float(high).is_integer() else high}" in message


@pytest.mark.parametrize(("text", "expected"), [
    ("[leases]\ndefault_ttl_seconds = 1e12\n",
     "key 'leases.default_ttl_seconds': must be at least 1 and at most 31622400 (got 1000000000000.0)"),
    ("[daemon]\nmax_message_bytes = 10000000000\n",
     "key 'daemon.max_message_bytes': must be at least 1048576 and at most 2147483647 (got 10000000000)"),
    ("[daemon]\nshutdown_grace_seconds = nan\n", "key 'daemon.shutdown_grace_seconds': must be at least 0 and at most"),
    ("[scheduling]\nusage_half_life_seconds = inf\n", "key 'scheduling.usage_half_life_seconds': must be at least 1"),
    ("[tasks]\nmax_payload_bytes = 67108864\n", "leaves no room in daemon.max_message_bytes (67108864)"),
])
def test_out_of_range_settings_are_config_errors(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "qrmid.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load(path)
    assert expected in str(refused.value)


def test_a_daemon_with_an_oversized_message_limit_refuses_to_start_clearly() -> None:
    scratch = short_dir()
    path = scratch / "qrmid.toml"
    path.write_text(f'[daemon]\nsocket = "{scratch / "s.sock"}"\nmax_message_bytes = 10000000000\n')
    run = subprocess.run([sys.executable, "-m", "qrmid", "serve", "--config", str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert f"{path}: key 'daemon.max_message_bytes': must be at least 1048576 and at most 2147483647" in run.stderr
    assert "Traceback" not in run.stderr and not (scratch / "s.sock").exists()


def test_config_check_loads_a_file_without_starting_anything(tmp_path: Path) -> None:
    path = tmp_path / "qrmid.toml"
    path.write_text('[[resources]]\ntype = "noop"\nname = "n1"\n')
    good = subprocess.run([sys.executable, "-m", "qrmid", "config", "check", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert (good.returncode, good.stdout) == (0, f"{path}: OK; resources: n1\n")
    path.write_text("[leases]\nmax_ttl_seconds = 1e12\n")
    bad = subprocess.run([sys.executable, "-m", "qrmid", "config", "check", str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert f"{path}: key 'leases.max_ttl_seconds': must be at least 1 and at most 31622400 (got 1000000000000.0)" \
        in bad.stderr


def _resource_numeric_keys() -> list[tuple[str, str, FieldInfo]]:
    """(resource type, key as written, field) of every int or float key of every resource type."""
    found = []
    for settings in get_args(get_args(ResourceConfig)[0]):
        kind = get_args(settings.model_fields["type"].annotation)[0]
        found += [(kind, info.alias or key, info) for key, info in settings.model_fields.items()
                  if info.annotation in (int, float, int | None, float | None)]
    return found


@pytest.mark.parametrize(("kind", "key", "field"), _resource_numeric_keys(), ids=lambda value: str(value)[:40])
def test_every_numeric_resource_key_is_bounded(tmp_path: Path, kind: str, key: str, field: FieldInfo) -> None:
    bounds = {name: getattr(item, name) for item in field.metadata for name in ("ge", "gt", "le")
              if hasattr(item, name)}
    assert {"ge", "gt"} & bounds.keys() and "le" in bounds, f"{kind} {key} needs a lower and an upper bound"
    too_big = bounds["le"] * 10 + 1
    path = tmp_path / "qrmid.toml"
    path.write_text(f'[[resources]]\ntype = "{kind}"\nname = "r"\n{key} = {too_big}\n')
    with pytest.raises(ConfigError) as refused:
        load(path)
    assert f"key 'resources[0].{key}': must be " in str(refused.value)
    assert f"at most {int(bounds['le']) if float(bounds['le']).is_integer() else bounds['le']}" in str(refused.value)
