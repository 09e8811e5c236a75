"""The local Pulser resource's target states the resource's own limits, not the hardware device's."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest
from daemons import subprocess_daemon
from pulser import Pulse, Register, Sequence
from pulser.json.abstract_repr.deserializer import deserialize_device

from qrmid.client import Client, pulser_payload

SITE = '[[resources]]\ntype = "local-pulser"\nname = "small-pulser"\nmax_atoms = 3\nmax_runs = 50\n'


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with subprocess_daemon(SITE) as (address, _):
        yield address


def sequence_on(specs: str, atoms: int) -> str:
    """A sequence of ``atoms`` atoms in a row, built on the device the target describes."""
    device = deserialize_device(specs)
    register = Register.from_coordinates([(8.0 * i, 0.0) for i in range(atoms)], prefix="q")
    sequence = Sequence(register, device)
    sequence.declare_channel("rydberg", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(100, 1.0, 0.0, 0.0), "rydberg")
    return sequence.to_abstract_repr()


def test_the_target_states_the_resources_limits(address: str) -> None:
    with Client(address) as qrmid:
        [device] = json.loads(qrmid.target("small-pulser"))
        specs = json.loads(device["specs"])
        assert (device["device_type"], specs["name"]) == ("AnalogDevice", "AnalogDevice")
        assert (specs["max_atom_num"], specs["max_runs"]) == (3, 50), "the resource's caps, not the device's 80"
        _, data = qrmid.run("small-pulser", pulser_payload(sequence_on(device["specs"], 3), 50))
        assert sum(json.loads(data)["counter"].values()) == 50, "a sequence at the stated limits runs"
        with pytest.raises(grpc.RpcError) as refused:
            qrmid.start_task("small-pulser", pulser_payload(sequence_on(device["specs"], 3), 51))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "job_runs must be between 1 and 50" in refused.value.details()


def test_pulser_itself_refuses_more_atoms_than_the_target_states(address: str) -> None:
    with Client(address) as qrmid:
        [device] = json.loads(qrmid.target("small-pulser"))
    with pytest.raises(ValueError, match="3"):
        sequence_on(device["specs"], 4)
