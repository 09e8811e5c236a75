"""Each hostile input once found to exhaust or crash validation, sent to a real ``qrmid serve`` process by one user
while another user works: the input is refused at submit with a clear limit, the daemon's memory stays flat (read
from /proc/<pid>/status), and the other user's calls are answered meanwhile."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from daemons import short_dir, subprocess_daemon, write_config

from qrmid.bench import hostile as bombs
from qrmid.v1 import quantum_resources_pb2 as pb
from qrmid.v1 import quantum_resources_pb2_grpc as pb_grpc

TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789ab"}
MIB = 1 << 20
GROWTH = 200 * MIB  # the daemon's peak memory may grow this much over all the inputs (they once took GiBs)
SMALL = bombs.sampler([bombs.BELL, None, 8])


class Daemon:
    def __init__(self, address: str, process: subprocess.Popen[bytes]) -> None:
        self.address = address
        self.process = process
        self.baseline = 0

    def memory(self) -> tuple[int, int]:
        """The daemon's resident memory now and at its peak, in bytes."""
        with open(f"/proc/{self.process.pid}/status") as status:
            fields = dict(line.split(":", 1) for line in status)
        return int(fields["VmRSS"].split()[0]) << 10, int(fields["VmHWM"].split()[0]) << 10


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    tokens = write_config(short_dir() / "tokens.toml", "".join(
        f'[[token]]\nname = "{name}"\ntoken = "{token}"\n' for name, token in TOKENS.items()))
    text = f"""auth = "token"
[auth]
tokens_file = "{tokens}"
[limits]
calls_per_second = 0

[[resources]]
type = "local-qiskit"
name = "local-qiskit"
slots = 1
max_qubits = 4

[[resources]]
type = "local-pulser"
name = "local-pulser"
slots = 1
"""
    with subprocess_daemon(text) as (address, process):
        served = Daemon(address, process)
        asyncio.run(_warm_up(served))
        served.baseline = served.memory()[1]
        yield served


class User:
    """One user's stub: every call carries the user's bearer token."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self.stub = pb_grpc.QuantumResourcesStub(channel)
        self.metadata = (("authorization", f"Bearer {token}"),)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.stub, name)
        return lambda request, **kw: method(request, metadata=self.metadata, timeout=180, **kw)


@asynccontextmanager
async def users(daemon: Daemon) -> AsyncIterator[tuple[User, User]]:
    options = [("grpc.max_send_message_length", 64 * MIB)]
    channels = [grpc.aio.insecure_channel(daemon.address, options=options) for _ in TOKENS]
    try:
        alice, bob = (User(channel, token) for channel, token in zip(channels, TOKENS.values(), strict=True))
        yield alice, bob
    finally:
        for channel in channels:
            await channel.close()


def qiskit(program: str, text: str) -> pb.StartTaskRequest:
    return pb.StartTaskRequest(resource="local-qiskit", payload=pb.Payload(
        qiskit_primitive=pb.QiskitPrimitive(program_id=program, input=text)))


def pulser(text: str, runs: int = 10) -> pb.StartTaskRequest:
    return pb.StartTaskRequest(resource="local-pulser", payload=pb.Payload(
        pulser_sequence=pb.PulserSequence(sequence=text, job_runs=runs)))


async def _warm_up(daemon: Daemon) -> None:
    async with users(daemon) as (alice, _):
        await alice.StartTask(qiskit("sampler", SMALL))
        await alice.StartTask(pulser(json.dumps(bombs.examples.load("pulser")["sequence"])))


HOSTILE = {  # name: (request, what the refusal says)
    "estimator precision 1e-10 (10**20 shots)": (
        lambda: qiskit("estimator", bombs.estimator(precision=1e-10)), "(max_task_shots)"),
    "sampler parameter values of shape (10**16, 0)": (
        lambda: qiskit("sampler", bombs.huge_shape()), "bring the task to 10240000000000000000 shots"),
    "1.9 MB sampler input inflating to 1.5 GiB": (
        lambda: qiskit("sampler", bombs.inflating_array(1.5)), "[validation] max_decoded_bytes"),
    "Pulser sequence of 20,000 atoms on its own device": (
        lambda: pulser(bombs.pulser_atoms(20_000)), "sequence has 20000 atoms; this resource emulates at most"),
    "2 MB of OpenQASM 3": (lambda: qiskit("sampler", bombs.qasm(2.0)), "([validation] max_circuit_bytes)"),
    "8.4 M four-byte characters (32 MiB) against the 8 MiB limit": (
        lambda: pulser("\U0001d4b3" * 8_400_000), "payload is 33600000 bytes; the limit is 8388608"),
    "ndarray without a value": (
        lambda: qiskit("sampler", bombs.sampler([bombs.BELL, {"__type__": "ndarray"}])), "has no '__value__'"),
    "bad zlib blob": (lambda: qiskit("sampler", bombs.sampler([bombs.BELL, {
        "__type__": "ndarray", "__value__": "bm90IHpsaWI="}])), "not a valid zlib blob"),
    "BitArray with unknown keys": (lambda: qiskit("sampler", bombs.sampler([bombs.BELL, {
        "__type__": "BitArray", "__value__": {"array": [], "num_bits": 1, "colour": "red"}}])),
        "cannot decode an encoded BitArray value"),
    "estimator precision 0": (lambda: qiskit("estimator", bombs.estimator(precision=0)), "positive finite number"),
    "estimator precision 1e-200": (lambda: qiskit("estimator", bombs.estimator(precision=1e-200)),
                                   "precision 1e-200 needs more than 1000000000 shots"),
    "200,000-deep JSON for Qiskit": (lambda: qiskit("sampler", bombs.deep()), "nests arrays or objects too deeply"),
    "200,000-deep JSON in a Pulser sequence": (lambda: pulser(bombs.pulser_deep()), "too deeply"),
}


@pytest.mark.parametrize("name", HOSTILE)
async def test_a_hostile_input_is_refused_with_its_limit_while_others_are_served(daemon: Daemon, name: str) -> None:
    build, reason = HOSTILE[name]
    async with users(daemon) as (alice, bob):
        hostile = asyncio.ensure_future(alice.StartTask(build()))
        listing, small = await asyncio.gather(bob.ListResources(pb.ListResourcesRequest()),
                                              bob.StartTask(qiskit("sampler", SMALL)))
        assert len(listing.resources) == 2 and small.shots == 8, "the other user was served"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await hostile
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert reason in (refused.value.details() or "")
    now, peak = daemon.memory()
    print(f"{name}: daemon RSS {daemon.baseline / MIB:.0f} MiB at start, peak {peak / MIB:.0f}, now {now / MIB:.0f}")
    assert peak - daemon.baseline < GROWTH, f"the daemon's memory grew {(peak - daemon.baseline) / MIB:.0f} MiB"


async def test_six_big_validations_leave_another_users_calls_unhindered(daemon: Daemon) -> None:
    """Six circuits of 300 kB take seconds each to read; one user's six never hold up another user's calls."""
    async with users(daemon) as (alice, bob):
        big = [asyncio.ensure_future(alice.StartTask(qiskit("sampler", bombs.qasm(0.3)))) for _ in range(6)]
        await asyncio.sleep(0.5)  # all six are in the daemon
        listing = await bob.ListResources(pb.ListResourcesRequest())
        small = await bob.StartTask(qiskit("sampler", SMALL))
        pending = sum(not call.done() for call in big)
        assert len(listing.resources) == 2 and small.shots == 8
        assert pending >= 5, "alice's checks run one at a time, and bob did not wait for them"
        for call in big:
            call.cancel()  # the daemon stops their checks
        await asyncio.gather(*big, return_exceptions=True)
        again = await bob.StartTask(qiskit("sampler", SMALL))
        assert again.shots == 8, "the daemon serves on after the checks of the calls that left were stopped"
