"""Pulser programs through ``QrmidConnection`` and ``QPUBackend``: on local-pulser via the session daemon, and on
a pasqal-cloud resource backed by the Pasqal Cloud emulator."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator

import pytest
from daemons import subprocess_daemon
from emulators.pasqal_fixtures import CLIENT_ID, CLIENT_SECRET, PROJECT, Emulator, emulator  # noqa: F401
from pulser import Pulse, QPUBackend, Register, Sequence
from pulser.backend.remote import BatchStatus, JobStatus
from pulser.devices import Device, DigitalAnalogDevice

from qrmid.integrations.pulser import QrmidConnection


def rabi(device: Device, atoms: int = 1, parametrized: bool = False) -> Sequence:
    """``atoms`` far-apart atoms under a global resonant pulse of area ``omega`` x 1 µs (π when not a variable)."""
    register = Register.from_coordinates([(20.0 * i, 0.0) for i in range(atoms)], prefix="q").with_automatic_layout(
        device)
    sequence = Sequence(register, device)
    sequence.declare_channel("ryd", "rydberg_global")
    omega = sequence.declare_variable("omega") if parametrized else math.pi
    sequence.add(Pulse.ConstantPulse(1000, omega, 0.0, 0.0), "ryd")
    return sequence


def test_qpu_backend_runs_jobs_end_to_end(local_daemon: str) -> None:
    connection = QrmidConnection("local-pulser", address=local_daemon)
    device = connection.fetch_available_devices()["AnalogDevice"]
    results = QPUBackend(rabi(device, atoms=2), connection).run([{"runs": 300}, {"runs": 100}], wait=True)

    assert results.get_batch_status() == BatchStatus.DONE
    assert results.job_ids == results.batch_id.split("|") and len(results.job_ids) == 2
    first, second = results.results
    assert sum(first.final_bitstrings.values()) == 300 and sum(second.final_bitstrings.values()) == 100
    assert first.final_bitstrings.get("11", 0) > 270  # a π pulse puts both (non-interacting) atoms in |r>
    assert first.atom_order == ("q0", "q1") and first.total_duration == 1000
    progress = connection._query_job_progress(results.batch_id)
    assert {status for status, _ in progress.values()} == {JobStatus.DONE}


def test_parametrized_sequence_builds_per_job(local_daemon: str) -> None:
    connection = QrmidConnection("local-pulser", address=local_daemon)
    device = connection.fetch_available_devices()["AnalogDevice"]
    jobs = [{"runs": 200, "variables": {"omega": math.pi}}, {"runs": 200, "variables": {"omega": 2 * math.pi}}]
    half, full = QPUBackend(rabi(device, parametrized=True), connection).run(jobs, wait=True).results
    assert half.final_bitstrings.get("1", 0) > 180   # π: excited
    assert full.final_bitstrings.get("0", 0) > 180   # 2π: back to the ground state


def test_open_batch_groups_jobs_until_closed(local_daemon: str) -> None:
    connection = QrmidConnection("local-pulser", address=local_daemon)
    backend = QPUBackend(rabi(connection.fetch_available_devices()["AnalogDevice"]), connection)
    with backend.open_batch():
        first = backend.run([{"runs": 50}])
        second = backend.run([{"runs": 60}, {"runs": 70}])
        batch = first.batch_id
        assert batch.startswith("open-") and second.batch_id == batch
        assert connection._get_batch_status(batch) in (BatchStatus.PENDING, BatchStatus.RUNNING)
    deadline = time.monotonic() + 120
    while connection._get_batch_status(batch) != BatchStatus.DONE:
        assert time.monotonic() < deadline, "the batch's jobs did not finish"
        time.sleep(0.1)
    assert [sum(r.final_bitstrings.values()) for r in second.results] == [60, 70]
    assert sum(first.results[0].final_bitstrings.values()) == 50
    assert len(connection._get_job_ids(batch)) == 3
    with pytest.raises(ValueError, match="not an open batch"):
        connection.submit(rabi(DigitalAnalogDevice), batch_id=batch, job_params=[{"runs": 1}])


def test_sequence_for_another_device_is_refused(local_daemon: str) -> None:
    connection = QrmidConnection("local-pulser", address=local_daemon)
    with pytest.raises(ValueError, match="does not match any of the devices"):
        QPUBackend(rabi(DigitalAnalogDevice), connection).run([{"runs": 10}])


@pytest.fixture(scope="module")
def pasqal_daemon(emulator: Emulator) -> Iterator[str]:  # noqa: F811 - the emulator fixture
    """A daemon with a pasqal-cloud resource ``fresnel`` on the emulator's FRESNEL device."""
    keys = {"QRMI_PASQAL_CLOUD_PROJECT_ID": PROJECT, "QRMI_PASQAL_CLOUD_BASE_URL": emulator.url,
            "QRMI_PASQAL_CLOUD_AUTH_ENDPOINT": f"{emulator.url}/oauth/token",
            "QRMI_PASQAL_CLOUD_CLIENT_ID": CLIENT_ID, "QRMI_PASQAL_CLOUD_CLIENT_SECRET": CLIENT_SECRET}
    lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in keys.items())
    text = f'[[resources]]\ntype = "pasqal-cloud"\nname = "fresnel"\ndevice_type = "FRESNEL"\npoll_interval = 0.1\n{lines}\n'
    with subprocess_daemon(text) as (address, _):
        yield address


def test_qpu_backend_on_pasqal_cloud(pasqal_daemon: str) -> None:
    connection = QrmidConnection("fresnel", address=pasqal_daemon)
    [device] = connection.fetch_available_devices().values()
    assert device.name == "Fresnel" or device.max_atom_num
    results = QPUBackend(rabi(device, atoms=2), connection).run([{"runs": 40}, {"runs": 30}], wait=True)
    assert results.get_batch_status() == BatchStatus.DONE
    counts = [r.final_bitstrings for r in results.results]
    assert [sum(c.values()) for c in counts] == [40, 30]
    assert all(len(bits) == 2 for c in counts for bits in c)
