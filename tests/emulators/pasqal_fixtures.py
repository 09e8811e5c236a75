"""Fixtures for the Pasqal Cloud emulator tests: the emulator as a real process on a free 127.0.0.1 port, an
authenticated HTTP client, pulser sequences built on the devices the emulator serves, and helpers to wait."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pulser import Pulse, Register, Sequence
from pulser.abstract_repr import deserialize_device
from pulser.devices import Device, VirtualDevice

from qrmid.emulators import launch
from qrmid.emulators.launch import Proc

PROJECT = "11111111-1111-1111-1111-111111111111"
OTHER_PROJECT = "22222222-2222-2222-2222-222222222222"
USERNAME, PASSWORD = "alice@example.org", "alice-password"
CLIENT_ID, CLIENT_SECRET = "qrmid-node", "qrmid-secret"
PUBLIC_CLIENT_ID = "PeZvo7Atx7IVv3iel59asJSb4Ig7vuSB"
AUDIENCE = "https://apis.pasqal.cloud/account/api/v1"
PASSWORD_REALM = "http://auth0.com/oauth/grant-type/password-realm"

# Short timings keep every test quick; open batches time out only when a test asks for it.
CONFIG: dict[str, Any] = {
    "users": [{"username": USERNAME, "password": PASSWORD, "user_id": "alice", "projects": [PROJECT]}],
    "service_accounts": [
        {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "user_id": "qrmid", "projects": [PROJECT]}
    ],
    "token_lifetime_s": 3600,
    "batch_overhead_s": 0.1,
    "job_duration_s": 0.1,
    "open_batch_timeout_s": 600,
    "max_exact_atoms": 2,
    "workers": 1,
    "seed": 7,
}
TIMINGS = ("token_lifetime_s", "batch_overhead_s", "job_duration_s", "open_batch_timeout_s")


@dataclass
class Emulator(Proc):
    """A running emulator process, its base URL, and its test hooks."""

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """Call a ``/_emulator`` hook and return its JSON."""
        response = httpx.request(method, f"{self.url}/_emulator/{path}", json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def record(self) -> dict[str, Any]:
        return self.control("GET", "record")

    def settings(self, **changes: float) -> dict[str, float]:
        return self.control("POST", "settings", changes)


def start_emulator(config_path: Path) -> Emulator:
    """``python -m qrmid.emulators.pasqal_cloud`` on a free port, once it announces its address."""
    proc = launch.start_emulator(config_path, module="qrmid.emulators.pasqal_cloud")
    return Emulator(proc.popen, proc.url)


@contextmanager
def running_emulator(directory: Path, **config: Any) -> Iterator[Emulator]:
    """An emulator on ``CONFIG`` updated with ``config`` (its file in ``directory``), stopped on leaving."""
    path = directory / "config.json"
    path.write_text(json.dumps({**CONFIG, **config}))
    process = start_emulator(path)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """One emulator process per test module."""
    with running_emulator(tmp_path_factory.mktemp("pasqal")) as process:
        yield process


def password_grant(url: str, **overrides: str) -> httpx.Response:
    form = {
        "grant_type": PASSWORD_REALM,
        "realm": "pcs-users",
        "client_id": PUBLIC_CLIENT_ID,
        "audience": AUDIENCE,
        "username": USERNAME,
        "password": PASSWORD,
    }
    return httpx.post(f"{url}/oauth/token", data=form | overrides, timeout=10)


@pytest.fixture
def api(emulator: Emulator) -> Iterator[httpx.Client]:
    """An HTTP client with a fresh bearer token, based at ``/core-fast``. Unfinished batches are cancelled after."""
    token = password_grant(emulator.url).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=f"{emulator.url}/core-fast", headers=headers, timeout=10) as client:
        yield client
        emulator.settings(**{key: CONFIG[key] for key in TIMINGS})
        fresh = password_grant(emulator.url).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {fresh}"
        cancel_unfinished(client)


def cancel_unfinished(client: httpx.Client) -> None:
    """Cancel every batch still pending or running, so no test inherits a held device."""
    listing = client.get("/api/v1/batches", params={"status": ["PENDING", "RUNNING"]}).json()["data"]
    if listing:
        client.patch("/api/v1/batches/cancel", json={"batch_ids": [batch["id"] for batch in listing]})


def data(response: httpx.Response) -> Any:
    """The ``data`` of a successful envelope."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success" and body["code"] == "200"
    return body["data"]


def fetch_device(url: str, device_type: str) -> Device | VirtualDevice:
    """The pulser device the emulator publishes for ``device_type`` (public, unauthenticated route)."""
    listing = httpx.get(f"{url}/core-fast/api/v1/devices/public-specs", timeout=10).json()["data"]
    specs = next(entry["specs"] for entry in listing if entry["device_type"] == device_type)
    return deserialize_device(specs)


def sequence(
    device: Device | VirtualDevice, atoms: int = 2, parametrized: bool = True, from_layout: bool = False
) -> Sequence[Any]:
    """A short one-pulse sequence; with ``parametrized`` its amplitude is the variable ``omega``."""
    if from_layout:
        assert isinstance(device, Device), "only physical devices have pre-calibrated layouts"
        register = device.pre_calibrated_layouts[0].define_register(*range(atoms))
    else:
        register = Register.from_coordinates([(6.0 * i, 0.0) for i in range(atoms)], prefix="q")
    seq = Sequence(register, device)
    seq.declare_channel("ryd", "rydberg_global")
    amplitude = seq.declare_variable("omega") if parametrized else 2.0
    seq.add(Pulse.ConstantPulse(100, amplitude, 0.0, 0.0), "ryd")
    seq.measure("ground-rydberg")
    return seq


def wait_for(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def batch_status(client: httpx.Client, batch_id: str) -> str:
    return data(client.get(f"/api/v2/batches/{batch_id}"))["status"]


def wait_batch(client: httpx.Client, batch_id: str, statuses: tuple[str, ...] = ("DONE",)) -> dict[str, Any]:
    """Wait for the batch to reach one of ``statuses`` and return it."""

    def reached() -> dict[str, Any] | None:
        batch = data(client.get(f"/api/v2/batches/{batch_id}"))
        return batch if batch["status"] in statuses else None

    return wait_for(reached)
