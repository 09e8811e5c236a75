"""Cluster members that serve a resource without dispatching it (``dispatch = false``): no credentials in their
config, the device description another member published taken with ``adopt_target``, and payloads validated
exactly as the dispatching member validates them, against the real emulators."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from emulators.pasqal_fixtures import (
    CLIENT_ID,
    CLIENT_SECRET,
    PROJECT,
    Emulator,
    fetch_device,
    running_emulator,
    sequence,
)
from ibm_services import Services, ibm_services
from pulser import Pulse, Register, Sequence
from pulser.devices import AnalogDevice
from qiskit import QuantumCircuit, qasm3, transpile

from qrmid.backends import registry
from qrmid.backends.base import Adapter, InvalidPayload, NotDispatching
from qrmid.backends.payloads import Payload, PulserSequence, QiskitPrimitive
from qrmid.core.validation import Validation, ValidationLimits
from qrmid.ops.config import Config, ConfigError, load

API_KEY = "qrmid-test-key"
CRN = "crn:v1:local:qrmid-tests"
BUCKET = "qrmid-jobs"
CLUSTER = {"dsn": "host=db.example.org dbname=qrmid user=qrmid", "member": "svc2"}


@pytest.fixture(scope="module")
def ibm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    path = tmp_path_factory.mktemp("ibm") / "emulator.toml"
    path.write_text(f'api_keys = ["{API_KEY}"]\nservice_crn = "{CRN}"\n[[backends]]\nname = "perth"\n'
                    'device = "perth"\nseed = 7\nnoise = false\n')
    with ibm_services(path, BUCKET) as services:
        yield services


@pytest.fixture(scope="module")
def pasqal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    with running_emulator(tmp_path_factory.mktemp("pasqal")) as process:
        yield process


@pytest.fixture
def no_vendor_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No vendor credential in the process environment either."""
    for key in list(os.environ):
        if key.startswith(("QRMI_", "PASQAL_")):
            monkeypatch.delenv(key)


@pytest.fixture
async def validation() -> AsyncIterator[Validation]:
    """The daemon's payload validation: checks run in a worker process of its own."""
    checks = Validation(ValidationLimits(workers=1))
    try:
        yield checks
    finally:
        await checks.close()


def loaded(tmp_path: Path, resource: dict[str, Any]) -> Config:
    """A cluster member's config holding ``resource``, as its daemon loads it from its file."""
    path = tmp_path / f"member-{len(list(tmp_path.iterdir()))}.toml"
    path.write_text(tomli_w.dumps({"cluster": CLUSTER, "resources": [resource]}))
    path.chmod(0o600)
    return load(path)


def built(tmp_path: Path, resource: dict[str, Any]) -> Adapter:
    return registry.build(loaded(tmp_path, resource).resources[0])


async def outcome(adapter: Adapter, payload: Payload, validation: Validation) -> int | str:
    """The task's shots as the daemon validates the payload before queueing it, or the refusal's message."""
    try:
        return await validation.run("alice", adapter.validate(payload), payload.size)
    except InvalidPayload as exc:
        return f"refused: {exc}"


async def validated_alike(dispatcher: Adapter, member: Adapter, expected: dict[Payload, int | str],
                          validation: Validation) -> None:
    """Each payload gets the same outcome from both: its shots (an int expected) or a refusal containing the text
    expected."""
    for payload, wanted in expected.items():
        theirs = await outcome(dispatcher, payload, validation)
        ours = await outcome(member, payload, validation)
        assert ours == theirs, "both members take or refuse the payload the same way"
        if isinstance(wanted, int):
            assert ours == wanted
        else:
            assert isinstance(ours, str) and ours.startswith("refused: ") and wanted in ours, ours


def ibm_resource(services: Services) -> dict[str, Any]:
    emulator, s3 = services
    return {"type": "ibm-quantum-system", "name": "perth",
            "QRMI_IBM_QS_ENDPOINT": emulator.url, "QRMI_IBM_QS_IAM_ENDPOINT": emulator.url,
            "QRMI_IBM_QS_IAM_APIKEY": API_KEY, "QRMI_IBM_QS_SERVICE_CRN": CRN,
            "QRMI_IBM_QS_AWS_ACCESS_KEY_ID": "k", "QRMI_IBM_QS_AWS_SECRET_ACCESS_KEY": "s",
            "QRMI_IBM_QS_S3_ENDPOINT": s3.url, "QRMI_IBM_QS_S3_BUCKET": BUCKET, "QRMI_IBM_QS_S3_REGION": "us-east-1"}


def pasqal_resource(pasqal: Emulator) -> dict[str, Any]:
    return {"type": "pasqal-cloud", "name": "fresnel8", "device_type": "FRESNEL8",
            "QRMI_PASQAL_CLOUD_PROJECT_ID": PROJECT, "QRMI_PASQAL_CLOUD_BASE_URL": pasqal.url,
            "QRMI_PASQAL_CLOUD_AUTH_ENDPOINT": f"{pasqal.url}/oauth/token",
            "QRMI_PASQAL_CLOUD_CLIENT_ID": CLIENT_ID, "QRMI_PASQAL_CLOUD_CLIENT_SECRET": CLIENT_SECRET}


def sampler(circuit: str, shots: int) -> QiskitPrimitive:
    return QiskitPrimitive("sampler", json.dumps({"pubs": [[circuit, None, shots]], "version": 2}))


def isa_bell() -> str:
    """A Bell circuit transpiled for perth, as the service requires."""
    from qiskit_ibm_runtime.fake_provider import FakePerth

    circuit = QuantumCircuit(2, 2)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.measure([0, 1], [0, 1])
    return str(qasm3.dumps(transpile(circuit, FakePerth(), optimization_level=1, seed_transpiler=1)))


async def test_an_ibm_member_without_credentials_validates_as_the_dispatcher(
        ibm: Services, tmp_path: Path, validation: Validation, no_vendor_environment: None) -> None:
    dispatcher = built(tmp_path, ibm_resource(ibm))
    member = built(tmp_path, {"type": "ibm-quantum-system", "name": "perth", "dispatch": False})
    assert loaded(tmp_path, {"type": "ibm-quantum-system", "name": "perth", "dispatch": False}).secret_keys() == []
    await dispatcher.start()
    await member.start()
    try:
        with pytest.raises(NotDispatching, match="resource perth is dispatched by another cluster member"):
            await member.target()
        with pytest.raises(NotDispatching):
            await member.status()
        published = await dispatcher.target()
        await member.adopt_target(published)
        assert await member.target() == published
        configuration = json.loads(published)["configuration"]
        assert configuration["n_qubits"] == 7

        bell = isa_bell()
        plain_bell = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nbit[2] c;\nqubit[2] q;\nh q[0];\ncx q[0], q[1];\n'
        too_wide = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nbit[1] c;\nc[0] = measure $7;\n'
        expected: dict[Payload, int | str] = {
            sampler(bell, 200): 200,
            sampler(bell, configuration["max_shots"] + 1):
                f"{configuration['max_shots'] + 1} shots; this resource allows at most {configuration['max_shots']}",
            sampler(plain_bell, 10): "instruction 'h' is not in perth's instruction set",
            sampler(too_wide, 10): "circuit has 8 qubits; this resource simulates at most 7",
            sampler('OPENQASM 3.0;\ninclude "stdgates.inc";\ncx $0, $6;\n', 10):
                "cx on qubits (0, 6) is not a coupling of perth",
        }
        await validated_alike(dispatcher, member, expected, validation)
        with pytest.raises(InvalidPayload, match="Qiskit primitive payloads only"):
            member.validate(PulserSequence("{}", 10))
    finally:
        await member.close()
        await dispatcher.close()


def crowded_sequence(pasqal: Emulator) -> str:
    """81 atoms, on a copy of FRESNEL8 that allows them: the resource's FRESNEL8 takes 80."""
    device = fetch_device(pasqal.url, "FRESNEL8")
    crowded = Sequence(Register.square(9, spacing=5, prefix="q"), dataclasses.replace(device, max_atom_num=200))
    crowded.declare_channel("ryd", "rydberg_global")
    crowded.add(Pulse.ConstantPulse(100, 2.0, 0.0, 0.0), "ryd")
    return str(crowded.to_abstract_repr())


async def test_a_pasqal_member_without_credentials_validates_as_the_dispatcher(
        pasqal: Emulator, tmp_path: Path, validation: Validation, no_vendor_environment: None) -> None:
    dispatcher = built(tmp_path, pasqal_resource(pasqal))
    member = built(tmp_path, {"type": "pasqal-cloud", "name": "fresnel8", "device_type": "FRESNEL8",
                              "dispatch": False})
    await dispatcher.start()
    await member.start()
    try:
        with pytest.raises(NotDispatching, match="resource fresnel8 is dispatched by another cluster member"):
            await member.target()
        published = await dispatcher.target()
        await member.adopt_target(published)
        assert await member.target() == published

        fits = str(sequence(fetch_device(pasqal.url, "FRESNEL8"), atoms=3, parametrized=False).to_abstract_repr())
        elsewhere = str(sequence(AnalogDevice, atoms=2, parametrized=False).to_abstract_repr())
        expected: dict[Payload, int | str] = {
            PulserSequence(fits, 25): 25,
            PulserSequence(crowded_sequence(pasqal), 10): "81 atoms; FRESNEL8 takes at most 80",
            PulserSequence(elsewhere, 10): "built for device 'AnalogDevice'",
            PulserSequence(fits, 2001): "job_runs must be between 1 and 2000, not 2001",
        }
        await validated_alike(dispatcher, member, expected, validation)
    finally:
        await member.close()
        await dispatcher.close()


@pytest.mark.parametrize(("resource", "published", "message"), [
    ({"type": "ibm-quantum-system", "name": "perth"}, "{not json",
     "the target published for resource perth is not JSON"),
    ({"type": "ibm-quantum-system", "name": "perth"}, '{"configuration": {"n_qubits": 7}}',
     "is not an IBM backend description: a JSON object with a 'configuration' and a 'properties' object"),
    ({"type": "ibm-quantum-system", "name": "perth"}, '{"configuration": {"n_qubits": "many"}, "properties": {}}',
     "configuration.n_qubits must be a positive integer, not 'many'"),
    ({"type": "ibm-quantum-system", "name": "perth"},
     '{"configuration": {"n_qubits": 2, "coupling_map": [0, 1]}, "properties": {}}',
     "its configuration has no usable instruction set"),
    ({"type": "pasqal-cloud", "name": "fresnel"}, '{"device_type": "FRESNEL"}',
     "is not a Pasqal device list: a JSON array of"),
    ({"type": "pasqal-cloud", "name": "fresnel"}, json.dumps([{"device_type": "EMU_MPS", "specs": "{}"}]),
     "has no spec of device type fresnel (it lists EMU_MPS); is device_type the same on every member?"),
    ({"type": "pasqal-cloud", "name": "fresnel"}, json.dumps([{"device_type": "fresnel", "specs": '{"name": 1}'}]),
     "the spec of device type fresnel is not a Pulser device"),
])
async def test_a_malformed_published_target_is_refused_clearly(tmp_path: Path, resource: dict[str, Any],
                                                               published: str, message: str) -> None:
    member = built(tmp_path, resource | {"dispatch": False})
    with pytest.raises(ValueError, match="the target published for resource") as refused:
        await member.adopt_target(published)
    assert message in str(refused.value)
    with pytest.raises(NotDispatching):  # nothing was taken
        await member.target()


async def test_a_qrmi_member_without_credentials_serves_the_published_target(tmp_path: Path) -> None:
    member = built(tmp_path, {"type": "qrmi", "name": "felis", "resource_type": "alice-bob-felis", "dispatch": False})
    with pytest.raises(NotDispatching):
        await member.target()
    await member.adopt_target('{"name": "felis"}')
    assert await member.target() == '{"name": "felis"}'
    await member.close()


MEMBERS = {
    "ibm-quantum-system": {"type": "ibm-quantum-system", "name": "perth"},
    "pasqal-cloud": {"type": "pasqal-cloud", "name": "fresnel"},
    "qrmi": {"type": "qrmi", "name": "felis", "resource_type": "alice-bob-felis"},
    "local-qiskit": {"type": "local-qiskit", "name": "aer"},
}


@pytest.mark.parametrize("resource", MEMBERS.values(), ids=MEMBERS.keys())
def test_dispatch_false_needs_a_cluster_and_no_credentials(tmp_path: Path, resource: dict[str, Any]) -> None:
    config = loaded(tmp_path, resource | {"dispatch": False})
    assert config.resources[0].dispatch is False and config.secret_keys() == []
    path = tmp_path / "single.toml"
    path.write_text(tomli_w.dumps({"resources": [resource | {"dispatch": False}]}))
    with pytest.raises(ConfigError) as refused:
        load(path)
    assert str(refused.value) == (
        f"{path}: top level: resource {resource['name']!r} has dispatch = false, but only a cluster member can serve "
        "a resource that another member dispatches: add a [cluster] section (docs/cluster.md), or remove "
        "dispatch = false")


@pytest.mark.parametrize(("resource", "missing"), [
    (MEMBERS["ibm-quantum-system"], ["QRMI_IBM_QS_ENDPOINT", "QRMI_IBM_QS_IAM_APIKEY", "QRMI_IBM_QS_S3_REGION"]),
    (MEMBERS["pasqal-cloud"], ["QRMI_PASQAL_CLOUD_PROJECT_ID"]),
])
@pytest.mark.parametrize("dispatch", [{}, {"dispatch": True}], ids=["default", "true"])
def test_a_dispatching_resource_still_needs_its_credentials(tmp_path: Path, resource: dict[str, Any],
                                                            missing: list[str], dispatch: dict[str, bool]) -> None:
    with pytest.raises(ConfigError) as refused:
        loaded(tmp_path, resource | dispatch)
    for key in missing:
        assert f"key 'resources[0].{key}': Field required" in str(refused.value)


def test_a_dispatching_pasqal_resource_still_needs_a_grant(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="credentials are missing: set QRMI_PASQAL_CLOUD_CLIENT_ID"):
        loaded(tmp_path, MEMBERS["pasqal-cloud"] | {"QRMI_PASQAL_CLOUD_PROJECT_ID": PROJECT})


@pytest.mark.parametrize(("resource", "secrets"), [
    (MEMBERS["ibm-quantum-system"] | {"QRMI_IBM_QS_IAM_APIKEY": "k3y-never-shown", "QRMI_IBM_QS_SERVICE_CRN": CRN},
     "QRMI_IBM_QS_IAM_APIKEY"),
    (MEMBERS["pasqal-cloud"] | {"QRMI_PASQAL_CLOUD_CLIENT_ID": CLIENT_ID, "QRMI_PASQAL_CLOUD_CLIENT_SECRET":
                                "k3y-never-shown", "PASQAL_PASSWORD": "k3y-never-shown"},
     "QRMI_PASQAL_CLOUD_CLIENT_SECRET, PASQAL_PASSWORD"),
    (MEMBERS["qrmi"] | {"environment": {"QRMI_ALICE_BOB_FELIS_API_KEY": "k3y-never-shown"}}, "environment"),
])
def test_a_member_that_does_not_dispatch_holds_no_credentials(tmp_path: Path, resource: dict[str, Any],
                                                              secrets: str) -> None:
    with pytest.raises(ConfigError) as refused:
        loaded(tmp_path, resource | {"dispatch": False})
    message = str(refused.value)
    assert f"key 'resources[0]': resource {resource['name']!r} has dispatch = false but sets {secrets}: " in message
    assert "remove them, or set dispatch = true if this member may dispatch the resource" in message
    assert "k3y-never-shown" not in message
