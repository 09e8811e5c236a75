"""The floor of a hybrid loop's call, for ``qrmid.bench.hybrid``: the hops of a RunTask on a local simulator, and
nothing else.

A server (``python -m qrmid.bench.floor SOCKET JOURNAL``) answers qrmid's own ``RunTask`` method with its messages
over a Unix socket: it hands the call's payload to a warm simulator worker (the worker pool a ``local-qiskit``
resource uses), commits one row holding the payload and the result to SQLite as the journal does (WAL,
``synchronous = FULL``, from a thread of its own), then streams the task's end and its result. The client encodes and
decodes as ``qrmid.integrations.qiskit`` does, over one plain gRPC call. No authentication, limits, queue, scheduler,
events or task bookkeeping: what this costs beyond qiskit-aer in process is the cost of the design on the machine (a
gRPC stream, a worker process, a durable commit); what qrmid costs beyond this is its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from qiskit.primitives.containers.estimator_pub import EstimatorPub, EstimatorPubLike
from qiskit.primitives.containers.sampler_pub import SamplerPub, SamplerPubLike
from qiskit_ibm_runtime.decoders.result_decoder import ResultDecoder

from qrmid.api import convert
from qrmid.backends.local_qiskit import LocalQiskit, Settings
from qrmid.client import estimator_payload, sampler_payload
from qrmid.integrations.qiskit import EstimatorOptions, SamplerOptions, estimator_input, sampler_input
from qrmid.v1 import quantum_resources_pb2 as pb
from qrmid.v1 import quantum_resources_pb2_grpc as pb_grpc


class _Floor(pb_grpc.QuantumResourcesServicer):
    def __init__(self, adapter: LocalQiskit, journal: sqlite3.Connection) -> None:
        self.adapter = adapter
        self.journal = journal
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="floor writer")

    async def RunTask(self, request: pb.StartTaskRequest, context: Any) -> AsyncIterator[pb.RunTaskResponse]:
        task_id = uuid.uuid4().hex
        ref = await self.adapter.submit(task_id, convert.payload(request.payload))
        await self.adapter.wait(ref, 3600)
        output = await self.adapter.output(ref)
        await self.adapter.cleanup(ref)
        await asyncio.get_running_loop().run_in_executor(
            self.writer, self._commit, task_id, request.payload.SerializeToString(), output.data)
        yield pb.RunTaskResponse(task=pb.Task(id=task_id, state=pb.TASK_STATE_COMPLETED))
        yield pb.RunTaskResponse(result_chunk=pb.ResultChunk(data=output.data))

    def _commit(self, task_id: str, payload: bytes, result: bytes) -> None:
        self.journal.execute("INSERT INTO tasks VALUES (?, ?, ?, ?)", (task_id, payload, result, time.time()))


async def _serve(socket: str, journal: str) -> None:
    connection = sqlite3.connect(journal, check_same_thread=False, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("CREATE TABLE tasks (id TEXT PRIMARY KEY, payload BLOB, result BLOB, ended_at REAL)")
    adapter = LocalQiskit(Settings(type="local-qiskit", name="sim"))
    await adapter.start()
    server = grpc.aio.server()
    pb_grpc.add_QuantumResourcesServicer_to_server(_Floor(adapter, connection), server)
    server.add_insecure_port(f"unix:{socket}")
    await server.start()
    await server.wait_for_termination()


@contextlib.contextmanager
def running(socket: Path, journal: Path) -> Iterator[None]:
    """The floor server in a process of its own, from when it answers until the block ends."""
    process = subprocess.Popen([sys.executable, "-m", "qrmid.bench.floor", str(socket), str(journal)])
    try:
        with grpc.insecure_channel(f"unix:{socket}") as channel:
            grpc.channel_ready_future(channel).result(timeout=120)
        yield
    finally:
        process.terminate()
        process.wait()


class _Call:
    """One call to the floor server, made when its result is asked for."""

    def __init__(self, stub: pb_grpc.QuantumResourcesStub, payload: pb.Payload) -> None:
        self._stub = stub
        self._payload = payload

    def result(self) -> Any:
        chunks = [message.result_chunk.data for message in self._stub.RunTask(pb.StartTaskRequest(
            resource="sim", payload=self._payload)) if message.HasField("result_chunk")]
        return ResultDecoder.decode(b"".join(chunks).decode())


class Sampler:
    """Sampler V2's ``run(pubs, shots=...).result()`` over the floor server, encoded as the integration does."""

    def __init__(self, socket: Path) -> None:
        self._stub = pb_grpc.QuantumResourcesStub(grpc.insecure_channel(f"unix:{socket}"))
        self._options = SamplerOptions()

    def run(self, pubs: Iterable[SamplerPubLike], *, shots: int | None = None) -> _Call:
        shots = self._options.default_shots if shots is None else shots
        coerced = [SamplerPub.coerce(pub, shots) for pub in pubs]
        for pub in coerced:
            pub.validate()
        return _Call(self._stub, sampler_payload(sampler_input(coerced, shots, self._options.run_options)))


class Estimator:
    """Estimator V2's ``run(pubs).result()`` over the floor server, encoded as the integration does."""

    def __init__(self, socket: Path) -> None:
        self._stub = pb_grpc.QuantumResourcesStub(grpc.insecure_channel(f"unix:{socket}"))
        self._options = EstimatorOptions()

    def run(self, pubs: Iterable[EstimatorPubLike], *, precision: float | None = None) -> _Call:
        precision = self._options.default_precision if precision is None else precision
        coerced = [EstimatorPub.coerce(pub, precision) for pub in pubs]
        for pub in coerced:
            pub.validate()
        return _Call(self._stub, estimator_payload(estimator_input(coerced, precision, self._options.run_options)))


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1], sys.argv[2]))
