"""A hybrid loop sends the same circuit call after call: real validation workers answer an input that passed from
memory, real parsers read a circuit (OpenQASM 3 or QPY) once per process, and a real simulator worker stays warm
from one task to the next."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy
import pytest
from daemons import config, running
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter, ParameterVector
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.sampler_pub import SamplerPub
from qiskit.quantum_info import SparsePauliOp

from qrmid.backends import circuit_cache, qiskit_jobs, qiskit_outline
from qrmid.backends.base import InvalidPayload
from qrmid.backends.checks import Check, InputBounds
from qrmid.bench import hostile as bombs
from qrmid.client import AsyncClient, estimator_payload
from qrmid.core.validation import INLINE_HASH_BYTES, Validation, ValidationLimits
from qrmid.integrations.qiskit import estimator_input, sampler_input
from qrmid.results import summarize

LIMITS = qiskit_jobs.Limits(max_qubits=8, max_shots=10_000)
SMALL = bombs.sampler([bombs.BELL, None, 8])


def check(text: str, limits: qiskit_jobs.Limits = LIMITS) -> Check:
    return Check(qiskit_jobs.check, ("sampler", text, limits))


@asynccontextmanager
async def validation(**limits: object) -> AsyncIterator[Validation]:
    pool = Validation(ValidationLimits(**limits))  # type: ignore[arg-type]
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


async def test_an_input_that_passed_is_answered_without_a_worker_until_it_is_forgotten() -> None:
    other = bombs.sampler([bombs.BELL, None, 9])
    async with validation(workers=1, running_per_user=1, remembered=2) as pool:
        assert await pool.run("alice", check(SMALL)) == 8
        assert pool.reused == 0
        slow = asyncio.create_task(pool.run("bob", check(bombs.qasm(0.15))))  # holds the only worker
        await asyncio.sleep(0.2)
        assert await pool.run("alice", check(SMALL)) == 8
        assert pool.reused == 1 and not slow.done(), "answered from memory while the only worker was busy"
        assert await slow == 1024
        assert await pool.run("alice", check(other)) == 9  # SMALL, bob's, then this: SMALL is the oldest
        assert await pool.run("alice", check(SMALL)) == 8
        assert pool.reused == 1, "forgotten past `remembered` inputs, so checked again"


async def test_refused_inputs_and_other_limits_are_checked_again() -> None:
    async with validation(workers=1, remembered=16) as pool:
        bad = bombs.sampler([bombs.BELL, None, 20_000])
        for _ in range(2):
            with pytest.raises(InvalidPayload, match="20000 shots; this resource allows at most 10000"):
                await pool.run("alice", check(bad))
        assert await pool.run("alice", check(SMALL)) == 8
        with pytest.raises(InvalidPayload, match="8 shots; this resource allows at most 4"):
            await pool.run("alice", check(SMALL, qiskit_jobs.Limits(max_qubits=8, max_shots=4)))
        assert pool.reused == 0


async def test_a_large_input_is_remembered_too() -> None:
    large = bombs.sampler([bombs.BELL + "\n" * INLINE_HASH_BYTES, None, 8])  # hashed off the event loop
    async with validation(workers=1, remembered=16) as pool:
        assert await pool.run("alice", check(large), len(large)) == 8
        assert await pool.run("alice", check(large), len(large)) == 8
        assert pool.reused == 1


async def test_another_users_identical_input_is_checked_as_usual() -> None:
    async with validation(workers=1, remembered=16) as pool:
        assert await pool.run("alice", check(SMALL)) == 8
        slow = asyncio.create_task(pool.run("carol", check(bombs.qasm(0.15))))  # holds the only worker
        await asyncio.sleep(0.2)
        bob = asyncio.create_task(pool.run("bob", check(SMALL)))
        await asyncio.sleep(0.2)
        assert not bob.done(), "bob waits for a worker like any user: alice's input tells him nothing"
        assert await slow == 1024 and await bob == 8
        assert pool.reused == 0


async def test_remembered_zero_checks_every_input() -> None:
    async with validation(workers=1, remembered=0) as pool:
        for _ in range(3):
            assert await pool.run("alice", check(SMALL)) == 8
        assert pool.reused == 0


def ansatz() -> QuantumCircuit:
    """Two parameters: RY on each of two qubits, then a CX."""
    theta = ParameterVector("theta", 2)
    circuit = QuantumCircuit(2)
    circuit.ry(theta[0], 0)
    circuit.ry(theta[1], 1)
    circuit.cx(0, 1)
    return circuit


ANSATZ = ansatz()  # one circuit, as a loop sends it (a new one would have parameters of new identities)


def estimator_check(values: object, circuit_format: str = "qpy") -> Check:
    pub = EstimatorPub.coerce((ANSATZ, SparsePauliOp("ZZ"), values), 0.1)
    text = estimator_input([pub], 0.1, {}, circuit_format)  # type: ignore[arg-type]
    return Check(qiskit_jobs.check, ("estimator", text, LIMITS), qiskit_outline.outline)


def with_values(check: Check, values: object) -> Check:
    """``check`` with its pub's parameter values replaced as they are written in the input (JSON)."""
    doc = json.loads(check.args[1])
    doc["pubs"][0][2] = values
    return dataclasses.replace(check, args=("estimator", json.dumps(doc), LIMITS))


@pytest.mark.parametrize("circuit_format", ["qpy", "qasm3"])
async def test_one_circuit_with_new_parameter_values_is_answered_without_a_worker(circuit_format: str) -> None:
    async with validation(workers=1, running_per_user=1, remembered=16) as pool:
        assert await pool.run("alice", estimator_check([0.1, 0.2], circuit_format)) == 100
        slow = asyncio.create_task(pool.run("bob", check(bombs.qasm(0.15))))  # holds the only worker
        await asyncio.sleep(0.2)
        for n in range(3):
            assert await pool.run("alice", estimator_check([0.3 * n, -1.5], circuit_format)) == 100
        assert pool.reused == 3 and not slow.done(), "answered from memory while the only worker was busy"
        assert await slow == 1024
        assert await pool.run("alice", estimator_check([[0.1, 0.2], [0.3, 0.4]], circuit_format)) == 200
        assert pool.reused == 3, "values of another shape: checked in full"


async def outcome(pool: Validation, checked: Check) -> int | str:
    """The shots of a check that passes, or the message of its refusal."""
    try:
        return await pool.run("alice", checked)
    except InvalidPayload as exc:
        return str(exc)


async def test_other_parameter_values_get_the_full_checks_answer() -> None:
    good = estimator_check([0.1, 0.2])
    others = {"one value short": with_values(good, [0.1]), "not finite": with_values(good, [0.1, float("nan")]),
              "text": with_values(good, ["a", "b"]), "booleans": with_values(good, [True, False]),
              "by name": with_values(good, {"theta[0]": 0.1})}
    async with validation(workers=1, remembered=0) as fresh, validation(workers=1, remembered=16) as pool:
        assert await pool.run("alice", good) == 100
        answers = {what: await outcome(pool, checked) for what, checked in others.items()}
        assert answers == {what: await outcome(fresh, checked) for what, checked in others.items()}
        assert pool.reused == 0, f"each was checked in full: {answers}"
        assert "inconsistent with last dimension" in str(answers["one value short"]), answers


async def test_another_users_parameter_values_are_checked_as_usual() -> None:
    async with validation(workers=1, remembered=16) as pool:
        assert await pool.run("alice", estimator_check([0.1, 0.2])) == 100
        assert await pool.run("bob", estimator_check([0.5, 0.6])) == 100
        assert pool.reused == 0


def test_an_outline_leaves_out_only_parameter_values_that_are_finite_numbers() -> None:
    first, second = estimator_check([0.1, 0.2]), estimator_check([0.7, 0.8])
    assert qiskit_outline.outline(*first.args) == qiskit_outline.outline(*second.args)
    listed = with_values(first, [0.1, 0.2])
    assert qiskit_outline.outline(*listed.args) == qiskit_outline.outline(*with_values(first, [3, 4]).args)[:1] + \
        qiskit_outline.outline(*listed.args)[1:], "same program"
    assert qiskit_outline.outline(*listed.args) != qiskit_outline.outline(*first.args), "encoded otherwise"
    other_observable = json.loads(first.args[1])
    other_observable["pubs"][0][1] = {"IZ": 1.0}
    assert qiskit_outline.outline("estimator", json.dumps(other_observable), LIMITS) != \
        qiskit_outline.outline(*first.args)
    for values in ([0.1, float("inf")], [[0.1, 0.2], [0.3]], [True, False], {"theta": [0.1]}, 0.5,
                   {"__type__": "ndarray", "__value__": "not base64!"}):
        assert qiskit_outline.outline(*with_values(first, values).args) is None, values
    zipped = io.BytesIO()
    numpy.savez(zipped, values=numpy.array([0.1, 0.2]))
    archive = base64.b64encode(zlib.compress(zipped.getvalue())).decode()
    assert qiskit_outline.outline(*with_values(first, {"__type__": "ndarray", "__value__": archive}).args) is None
    bomb = base64.b64encode(zlib.compress(b"\0" * (qiskit_outline.MAX_VALUES_BYTES + 1))).decode()
    assert qiskit_outline.outline(*with_values(first, {"__type__": "ndarray", "__value__": bomb}).args) is None
    assert qiskit_outline.outline("estimator", " " * (qiskit_outline.MAX_TEXT + 1), LIMITS) is None


def bell() -> QuantumCircuit:
    circuit = QuantumCircuit(2)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.measure_all()
    return circuit


def test_a_qpy_circuit_is_decoded_once_and_still_counts_against_the_decoded_bytes_on_every_use() -> None:
    circuit = bell()
    text = sampler_input([SamplerPub.coerce((circuit,), 8), SamplerPub.coerce((circuit,), 8)], 8, {})
    typed = [value["__value__"] for pub in json.loads(text)["pubs"] for value in pub if isinstance(value, dict)]
    decoded = sum(len(zlib.decompress(base64.b64decode(blob))) for blob in typed)  # two circuits, two arrays
    before = dataclasses.replace(circuit_cache.counts)
    assert qiskit_jobs.check(InputBounds(max_decoded_bytes=decoded), "sampler", text, LIMITS) == 16
    assert circuit_cache.counts.reused - before.reused >= 1, "the second pub's circuit came from the cache"
    parsed = circuit_cache.counts.parsed
    with pytest.raises(InvalidPayload, match=r"inflates past the \d+ bytes one input may decode to in all"):
        qiskit_jobs.check(InputBounds(max_decoded_bytes=decoded - 1), "sampler", text, LIMITS)
    assert circuit_cache.counts.parsed == parsed, "refused from the cache's record of the decoded size"


def test_a_text_larger_than_the_cache_is_read_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(circuit_cache, "CACHE_BYTES", 16)
    text = json.dumps({"pubs": [[bombs.BELL, None, 8]], "version": 2})
    before = dataclasses.replace(circuit_cache.counts)
    for _ in range(2):
        qiskit_jobs.parse("sampler", text, LIMITS)
    assert (circuit_cache.counts.parsed - before.parsed, circuit_cache.counts.reused - before.reused) == (2, 0)


async def test_a_loop_of_one_circuit_is_parsed_once_in_its_warm_simulator_worker() -> None:
    theta = Parameter("theta")
    circuit = QuantumCircuit(1)
    circuit.ry(theta, 0)
    cfg = config([{"type": "local-qiskit", "name": "q", "slots": 1, "max_qubits": 4}])
    async with running(cfg) as served, AsyncClient(f"unix:{served.socket}") as client:
        logs = []
        for angle, expected in ((0.0, 1.0), (3.141592653589793, -1.0), (0.0, 1.0)):
            pub = (circuit, SparsePauliOp("Z"), [angle])
            text = estimator_input([EstimatorPub.coerce(pub, 0.01)], 0.01, {})
            task, data = await client.run("q", estimator_payload(text))
            assert abs(summarize(data)["pubs"][0]["evs"] - expected) < 0.1
            logs.append(await client.logs(task.id))
    assert "0 circuit(s) already parsed" in logs[0]
    assert all("1 circuit(s) already parsed" in log for log in logs[1:]), logs
