"""Payload validation workers: real worker processes checking real inputs, their memory and time limits, and the
fair share of workers between users."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from daemons import config, running

from qrmid.backends import pulser_jobs, qiskit_jobs
from qrmid.backends.base import InvalidPayload
from qrmid.backends.checks import Check, InputBounds
from qrmid.backends.payloads import PulserSequence, QiskitPrimitive
from qrmid.bench import hostile as bombs
from qrmid.client import AsyncClient, sampler_payload
from qrmid.core.errors import ResourceExhausted
from qrmid.core.validation import Validation, ValidationLimits

LIMITS = qiskit_jobs.Limits(max_qubits=8, max_shots=10_000)
SMALL = bombs.sampler([bombs.BELL, None, 8])


def check(text: str) -> Check:
    return Check(qiskit_jobs.check, ("sampler", text, LIMITS))


@asynccontextmanager
async def validation(**limits: object) -> AsyncIterator[Validation]:
    pool = Validation(ValidationLimits(**{"remembered": 0, **limits}))  # type: ignore[arg-type]  # every run checks
    await pool.start()
    try:
        assert await pool.run("warm-up", check(SMALL)) == 8
        yield pool
    finally:
        await pool.close()


async def test_a_check_past_its_memory_limit_is_refused_and_its_worker_replaced() -> None:
    async with validation(workers=1, memory_mb=64) as pool:
        with pytest.raises(InvalidPayload, match=r"needed more than 64 MiB of memory, the limit \(\[validation\] "
                                                 r"memory_mb\)"):
            await pool.run("alice", check(bombs.qasm(0.5)))  # parsing takes ~400 MiB per MB of OpenQASM 3
        assert await pool.run("alice", check(SMALL)) == 8, "a fresh worker took the dead one's place"


async def test_a_check_past_its_time_limit_is_refused_and_its_worker_replaced() -> None:
    async with validation(workers=1, timeout_seconds=1) as pool:
        with pytest.raises(InvalidPayload, match=r"took longer than 1 s, the limit \(\[validation\] timeout_seconds\)"):
            await pool.run("alice", check(bombs.qasm(0.4)))
        assert await pool.run("bob", check(SMALL)) == 8


async def test_one_users_slow_checks_leave_a_worker_for_another_user() -> None:
    async with validation(workers=2, running_per_user=1) as pool:
        slow = [asyncio.create_task(pool.run("alice", check(bombs.qasm(0.15)))) for _ in range(3)]
        await asyncio.sleep(0)  # alice's checks queue first
        assert await pool.run("bob", check(SMALL)) == 8
        assert sum(not task.done() for task in slow) >= 2, "alice runs one check at a time; bob did not wait"
        assert await asyncio.gather(*slow) == [1024, 1024, 1024], "alice's checks all ran, one after another"


async def test_waiting_checks_are_capped_per_user_in_number_and_bytes() -> None:
    async with validation(workers=1, running_per_user=1, waiting_per_user=2, waiting_bytes_per_user=1 << 20) as pool:
        slow = check(bombs.qasm(0.15))
        first = asyncio.create_task(pool.run("alice", slow, 100))
        waiting = [asyncio.create_task(pool.run("alice", slow, 100)) for _ in range(2)]
        await asyncio.sleep(0.1)
        with pytest.raises(ResourceExhausted, match=r"2 payloads waiting .* \(\[validation\] waiting_per_user\)"):
            await pool.run("alice", slow, 100)
        waiting[1].cancel()  # a caller that leaves frees its place
        with pytest.raises(asyncio.CancelledError):
            await waiting[1]
        with pytest.raises(ResourceExhausted, match=r"per-user limit of 1048576 \(\[validation\] "
                                                    r"waiting_bytes_per_user\)"):
            await pool.run("alice", slow, 1 << 20)
        extra = asyncio.create_task(pool.run("alice", slow, 100))
        assert await asyncio.gather(first, waiting[0], extra) == [1024] * 3


async def test_a_cancelled_call_stops_its_check_and_frees_the_worker() -> None:
    async with validation(workers=1) as pool:
        slow = asyncio.create_task(pool.run("alice", check(bombs.qasm(0.4))))
        await asyncio.sleep(0.5)
        slow.cancel()
        assert await pool.run("bob", check(SMALL)) == 8


@asynccontextmanager
async def daemon(**validation_keys: object) -> AsyncIterator[AsyncClient]:
    cfg = config([{"type": "local-qiskit", "name": "q", "slots": 1, "max_qubits": 4, "max_task_shots": 100}],
                 validation=validation_keys)
    async with running(cfg) as served, AsyncClient(f"unix:{served.socket}") as client:
        yield client


async def test_the_daemon_answers_a_blown_limit_as_invalid_and_serves_on() -> None:
    async with daemon(memory_mb=64) as client:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.start_task("q", sampler_payload(bombs.qasm(0.5)))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "needed more than 64 MiB of memory, the limit ([validation] memory_mb)" in refused.value.details()
        task, _ = await client.run("q", sampler_payload(SMALL))
        assert task.shots == 8
        with pytest.raises(grpc.aio.AioRpcError) as refused:  # 64 shots for each of two parameter sets
            await client.start_task("q", sampler_payload(bombs.sampler([bombs.PARAMETRIC, [[0.1], [0.2]], 64])))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "bring the task to 128 shots; this resource takes at most 100 shots per task (max_task_shots)" in \
            refused.value.details()


def test_atoms_and_layout_traps_are_counted_in_the_json_before_a_register_is_built() -> None:
    limits = pulser_jobs.Limits(max_atoms=10, max_runs=100, max_duration_ns=None)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidPayload, match="sequence has 20000 atoms; this resource emulates at most 10"):
            pulser_jobs.parse(bombs.pulser_atoms(20_000), 10, limits, InputBounds())
        doc = json.loads(bombs.pulser_atoms(2))
        doc["layout"] = {"coordinates": [[5.0 * i, 0.0] for i in range(5000)]}
        with pytest.raises(InvalidPayload, match=r"layout of 5000 traps; the limit is 1000 \(\[validation\] "
                                                 r"max_layout_traps\)"):
            pulser_jobs.parse(json.dumps(doc), 10, limits, InputBounds())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"{peak >> 20} MiB: a register of 20,000 atoms checks 200 million distances in 3 GiB"


def test_payload_size_counts_utf8_bytes() -> None:
    assert PulserSequence("\U0001d4b3" * 1000, 1).size == 4000
    assert QiskitPrimitive("sampler", "é" * 3_000_000).size == 6_000_007
    assert QiskitPrimitive("sampler", "{}").size == 9
