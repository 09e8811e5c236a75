"""Errors a person can act on: each names the fault, where it is, and the fix; against a real daemon."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from daemons import config, running

from qrmid.client import AsyncClient, QrmidError, estimator_payload, payload_from_task_input, sampler_payload
from qrmid.client_errors import InvalidArgument, NotFound
from qrmid.daemon import Daemon

BELL = ('OPENQASM 3.0;\ninclude "stdgates.inc";\nbit[2] meas;\nqubit[2] q;\nh q[0];\ncx q[0], q[1];\n'
        'meas[0] = measure q[0];\nmeas[1] = measure q[1];\n')


@pytest.fixture
async def daemon() -> AsyncIterator[Daemon]:
    async with running(config([{"type": "local-qiskit", "name": "local-qiskit", "slots": 1, "max_qubits": 4}])) as d:
        yield d


@pytest.fixture
async def qrmid(daemon: Daemon) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(f"unix:{daemon.socket}") as client:
        yield client


async def refusal(qrmid: AsyncClient, program_id: str, doc: dict[str, Any]) -> InvalidArgument:
    """The daemon's refusal of ``doc``, checked to be INVALID_ARGUMENT with nothing queued."""
    payload = sampler_payload(doc) if program_id == "sampler" else estimator_payload(doc)
    with pytest.raises(InvalidArgument) as refused:
        await qrmid.start_task("local-qiskit", payload)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return refused.value


@pytest.mark.parametrize(("circuit", "message"), [
    (BELL.replace("h q[0];", "h q[0]"),
     ("pub 0: circuit is not valid OpenQASM 3: line 6, column 1: unexpected 'cx', expected ';' "
      "(is a ';' missing at the end of line 5?)")),
    (BELL.replace("cx q[0], q[1];", "cx q[0] q[1];"), "line 6, column 9: unexpected 'q'"),
    (BELL.replace("h q[0];", "hadamard q[0];"), "line 5, column 1: gate 'hadamard' is not defined"),
    (BELL + "@;\n", "line 9, column 1: unexpected '@'"),
    (BELL + 'meas[0] = "', "line 9, column 11: cannot read '\"'"),
    (BELL.removesuffix(";\n"), "line 8, column 23: unexpected end of the circuit, expected ';'"),
])
async def test_a_qasm_syntax_error_names_its_line_column_and_token(qrmid: AsyncClient, circuit: str,
                                                                   message: str) -> None:
    refused = await refusal(qrmid, "sampler", {"pubs": [[circuit, None, 10]], "version": 2})
    assert message in refused.details()
    assert str(refused).startswith("INVALID_ARGUMENT: invalid payload"), "printed as CODE: message, not a repr"


async def test_unknown_input_keys_are_refused_naming_the_key_and_the_accepted_ones(qrmid: AsyncClient,
                                                                                   daemon: Daemon) -> None:
    refused = await refusal(qrmid, "sampler", {"pubs": [[BELL]], "shtos": 10, "version": 2})
    assert ("unknown key 'shtos' (did you mean 'shots'?): a sampler input takes only pubs, shots, options, "
            "version, support_qiskit") in refused.details()
    refused = await refusal(qrmid, "sampler", {"pubs": [[BELL]], "options": {"default_shot": 5}, "version": 2})
    assert ("unknown key 'default_shot' (did you mean 'default_shots'?): a sampler input's 'options' takes only "
            "default_shots, dynamical_decoupling, execution, twirling, simulator, experimental") in refused.details()
    refused = await refusal(qrmid, "estimator", {"pubs": [[BELL, {"ZZ": 1}]], "shots": 10, "version": 2})
    assert ("unknown key 'shots' (a sampler key: is this a sampler task?): an estimator input takes only pubs, "
            "precision, options, version, support_qiskit, resilience_level, seed_estimator") in refused.details()
    refused = await refusal(qrmid, "sampler", {"pubs": [[BELL]], "options": {"noise": True}, "version": 2})
    assert "unknown key 'noise': a sampler input's 'options' takes only" in refused.details()
    assert daemon.broker.tasks(None) == [], "nothing refused was queued"


async def test_every_key_of_ibms_schema_is_accepted(qrmid: AsyncClient) -> None:
    """What qiskit-ibm-runtime sends (options it does not apply on a simulator included) still runs."""
    unmeasured = BELL.split("meas[0]")[0]
    sampler = {"pubs": [[BELL, None, 20]], "shots": 20, "version": 2, "support_qiskit": True,
               "options": {"default_shots": 20, "dynamical_decoupling": {"enable": False}, "execution": {},
                           "twirling": {"enable_gates": False}, "simulator": {}, "experimental": {}}}
    estimator = {"pubs": [[unmeasured, {"ZZ": 1.0}]], "precision": 0.1, "version": 2, "support_qiskit": True,
                 "resilience_level": 0, "seed_estimator": 1,
                 "options": {"default_precision": 0.1, "default_shots": 100, "seed_estimator": 1, "resilience": {},
                             "dynamical_decoupling": {}, "execution": {}, "twirling": {}, "simulator": {},
                             "experimental": {}}}
    for payload in (sampler_payload(sampler), estimator_payload(estimator)):
        _, data = await qrmid.run("local-qiskit", payload)
        assert json.loads(data)["__type__"] == "PrimitiveResult"


def test_unknown_task_runner_keys_are_refused_naming_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match=r"task input has unknown key 'shots': a Qiskit task input takes only "
                                         r"'program_id' and 'parameters' \(QRMI's task_runner input schema\)"):
        payload_from_task_input({"program_id": "sampler", "parameters": {"pubs": [[BELL]], "version": 2},
                                 "shots": 10})
    with pytest.raises(ValueError, match=r"unknown key 'runs': a Pulser task input takes only 'sequence' and "
                                         r"'job_runs'"):
        payload_from_task_input({"sequence": {}, "job_runs": 10, "runs": 5})


async def test_refusals_are_qrmid_errors_of_their_code_and_still_grpc_errors(qrmid: AsyncClient) -> None:
    with pytest.raises(NotFound) as missing:
        await qrmid.task("no-such-task")
    error = missing.value
    assert isinstance(error, QrmidError) and isinstance(error, grpc.aio.AioRpcError)
    assert error.code() == grpc.StatusCode.NOT_FOUND and "no-such-task" in error.details()
    assert str(error) == f"NOT_FOUND: {error.details()}"
    assert "debug_error_string" not in repr(error)
    with pytest.raises(NotFound):
        async for _ in qrmid.watch("no-such-task"):  # a stream's refusal too
            pass
