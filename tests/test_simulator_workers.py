"""The local simulators' warm worker processes, through a real daemon: a sequential loop stays on the warmest worker,
a worker killed with SIGKILL mid-task fails only that task and is replaced, a task running past max_run_seconds
is stopped, and the pool keeps serving after each."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from daemons import config, running

from qrmid.client import AsyncClient, sampler_payload
from qrmid.results import summarize
from qrmid.v1 import quantum_resources_pb2 as pb

BELL = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nbit[2] c;\nqubit[2] q;\nh q[0];\ncx q[0], q[1];\nc = measure q;\n'


def heavy(qubits: int = 24, layers: int = 60) -> str:
    """A circuit that takes qiskit-aer many seconds to simulate."""
    lines = ["OPENQASM 3.0;", 'include "stdgates.inc";', f"qubit[{qubits}] q;", f"bit[{qubits}] c;"]
    for layer in range(layers):
        lines += [f"rx({0.1 + layer * 0.01}) q[{i}];" for i in range(qubits)]
        lines += [f"cx q[{i}], q[{(i + 1) % qubits}];" for i in range(qubits)]
    return "\n".join([*lines, "c = measure q;"]) + "\n"


def sampler(circuit: str, shots: int = 16) -> pb.Payload:
    return sampler_payload(json.dumps({"pubs": [[circuit, None, shots]], "version": 2}))


@asynccontextmanager
async def simulator(**settings: object) -> AsyncIterator[AsyncClient]:
    cfg = config([{"type": "local-qiskit", "name": "q", "max_qubits": 26, **settings}], validation={"remembered": 0})
    async with running(cfg) as served, AsyncClient(f"unix:{served.socket}") as client:
        yield client


def workers() -> list[multiprocessing.process.BaseProcess]:
    return [child for child in multiprocessing.active_children() if child.name == "qrmid LocalQiskit worker"]


async def running_state(client: AsyncClient, task_id: str) -> None:
    async for update in client.watch(task_id):
        if update.state != pb.TASK_STATE_QUEUED:
            assert update.state == pb.TASK_STATE_RUNNING
            return


async def test_a_sequential_loop_stays_on_the_warmest_of_two_workers() -> None:
    async with simulator(slots=2) as client:
        logs = []
        for _ in range(4):
            task, data = await client.run("q", sampler(BELL))
            assert sum(summarize(data)["pubs"][0]["c"].values()) == 16
            logs.append(await client.logs(task.id))
    assert "0 circuit(s) already parsed" in logs[0]
    assert all("1 circuit(s) already parsed" in log for log in logs[1:]), "each call went to the worker of the last"


async def test_a_worker_killed_mid_task_fails_only_that_task_and_is_replaced() -> None:
    async with simulator(slots=1) as client:
        await client.run("q", sampler(BELL))
        (worker,) = workers()
        task = await client.start_task("q", sampler(heavy(), shots=1))
        await running_state(client, task.id)
        os.kill(worker.pid, signal.SIGKILL)
        ended = await client.wait(task.id, timeout=60)
        assert ended.state == pb.TASK_STATE_FAILED
        assert ended.reason == "simulation failed: WorkerEnded: the worker process ended (exit status -9)"
        _, data = await client.run("q", sampler(BELL))  # waits for the new worker to be ready
        assert sum(summarize(data)["pubs"][0]["c"].values()) == 16
        (replacement,) = workers()
        assert replacement.pid != worker.pid


async def test_a_task_past_max_run_seconds_is_stopped_and_its_worker_replaced() -> None:
    async with simulator(slots=1, max_run_seconds=2) as client:
        task = await client.start_task("q", sampler(heavy(), shots=1))
        ended = await client.wait(task.id, timeout=60)
        assert ended.state == pb.TASK_STATE_FAILED
        assert ended.reason == "simulation ran past max_run_seconds (2 s)"
        _, data = await client.run("q", sampler(BELL))
        assert sum(summarize(data)["pubs"][0]["c"].values()) == 16


async def test_a_task_waiting_for_a_replacement_worker_can_be_cancelled() -> None:
    async with simulator(slots=1) as client:
        await client.run("q", sampler(BELL))
        (worker,) = workers()
        os.kill(worker.pid, signal.SIGKILL)  # idle: its replacement takes seconds to start
        await asyncio.to_thread(worker.join)
        waiting = await client.start_task("q", sampler(BELL))
        assert (await client.stop_task(waiting.id)).state == pb.TASK_STATE_CANCELLED
        task, data = await client.run("q", sampler(BELL))
        assert sum(summarize(data)["pubs"][0]["c"].values()) == 16
        assert "0 circuit(s) already parsed" in await client.logs(task.id), "a new worker, and the cancelled task " \
            "never ran there"
