"""One user cannot exhaust the daemon: queued payload bytes per user and per resource, large queued payloads on
disk rather than in memory, and live leases per user. Real daemons on real sockets, users told apart by bearer
tokens."""

from __future__ import annotations

import asyncio
import json
import os
import random
import stat
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from daemons import ROOT, config, running, short_dir

from qrmid.backends.payloads import Payload, PulserSequence
from qrmid.bench.process import QrmidProcess
from qrmid.core import errors
from qrmid.core.leases import LeaseTable
from qrmid.daemon import Daemon
from qrmid.ops.config import Config, ConfigError, load
from qrmid.v1 import quantum_resources_pb2 as pb
from qrmid.v1 import quantum_resources_pb2_grpc as pb_grpc

TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789ab"}
MiB = 1 << 20


class User:
    """A user's stub: every call carries the user's bearer token."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self.stub = pb_grpc.QuantumResourcesStub(channel)
        self.metadata = (("authorization", f"Bearer {token}"),)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.stub, name)
        return lambda request: method(request, metadata=self.metadata, timeout=60)


@asynccontextmanager
async def users(cfg_sections: dict[str, dict[str, Any]], delay: float = 3600.0,
                journal: bool = True) -> AsyncIterator[tuple[Daemon, dict[str, User]]]:
    """A daemon with one noop resource of one slot whose tasks run ``delay`` seconds, and a stub per user."""
    tokens = short_dir() / "tokens.toml"
    tokens.write_text("".join(f'[[token]]\nname = "{name}"\ntoken = "{token}"\n' for name, token in TOKENS.items()))
    os.chmod(tokens, 0o600)
    sections = {**cfg_sections, "limits": {"calls_per_second": 0}}
    cfg = config([{"type": "noop", "name": "noop", "slots": 1, "delay_seconds": delay}], daemon={"auth": "token"},
                 auth={"tokens_file": str(tokens)}, **sections)
    if not journal:
        cfg = cfg.model_copy(update={"journal": cfg.journal.model_copy(update={"enabled": False})})
    async with running(cfg) as daemon:
        channels = [grpc.aio.insecure_channel(f"unix:{daemon.socket}") for _ in TOKENS]
        try:
            yield daemon, {name: User(channel, token) for (name, token), channel in zip(TOKENS.items(), channels)}
        finally:
            for channel in channels:
                await channel.close()


def sequence(size: int, mark: str = "") -> str:
    """Pulser-sequence text of exactly ``size`` bytes (the noop backend takes any text)."""
    head = json.dumps({"mark": mark, "pad": ""})
    return json.dumps({"mark": mark, "pad": "x" * (size - len(head))})


def start(resource: str, text: str) -> pb.StartTaskRequest:
    return pb.StartTaskRequest(resource=resource, payload=pb.Payload(
        pulser_sequence=pb.PulserSequence(sequence=text, job_runs=1)))


async def running_task(user: User, text: str) -> str:
    """Start a task and wait until it holds the resource's only slot, so the next ones stay queued."""
    task_id = (await user.StartTask(start("noop", text))).id
    while (await user.GetTask(pb.GetTaskRequest(task_id=task_id))).state != pb.TASK_STATE_RUNNING:
        await asyncio.sleep(0.02)
    return task_id


async def refusal(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_queued_payload_bytes_are_bounded_per_user_then_per_resource() -> None:
    size = MiB // 2
    tasks = {"max_payload_bytes": MiB, "max_queued_bytes_per_user": 2 * MiB, "max_queued_bytes_per_resource": 3 * MiB}
    async with users({"tasks": tasks}) as (daemon, people):
        alice, bob = people["alice"], people["bob"]
        await running_task(alice, sequence(size))  # holds the slot: it no longer counts as queued
        alices = [(await alice.StartTask(start("noop", sequence(size)))).id for _ in range(4)]  # 2 MiB queued
        refused = await refusal(alice.StartTask(start("noop", sequence(size))))
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "you have 2.0 MiB of payloads queued" in refused.details()
        assert "per-user limit of 2.0 MiB ([tasks] max_queued_bytes_per_user)" in refused.details()
        assert "wait for some of your tasks to start" in refused.details()
        refused = await refusal(alice.StartTask(start("noop", sequence(1024))))
        assert "this task's 1.0 KiB would pass the per-user limit" in refused.details()
        small = await bob.StartTask(start("noop", sequence(1024)))  # another user's room is untouched
        assert small.state == pb.TASK_STATE_QUEUED
        await bob.StopTask(pb.StopTaskRequest(task_id=small.id))

        bobs = [(await bob.StartTask(start("noop", sequence(size)))).id for _ in range(2)]  # 3 MiB on the resource
        refused = await refusal(bob.StartTask(start("noop", sequence(size))))
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "resource 'noop' has 3.0 MiB of payloads queued" in refused.details()
        assert "limit of 3.0 MiB ([tasks] max_queued_bytes_per_resource)" in refused.details()

        # nothing refused was queued or journaled; a cancelled task gives its bytes back at once
        queued = [task.id for task in daemon.broker.unfinished("noop") if task.state.value == "queued"]
        assert sorted(queued) == sorted(alices + bobs)
        await alice.StopTask(pb.StopTaskRequest(task_id=alices[0]))
        assert (await bob.StartTask(start("noop", sequence(size)))).state == pb.TASK_STATE_QUEUED
        assert daemon.broker.resource("noop").scheduler.queued_bytes == 3 * MiB


async def test_large_queued_payloads_wait_on_disk_and_reach_the_backend_intact() -> None:
    async with users({"tasks": {"spool_above_bytes": 64 * 1024}}, delay=0.2) as (daemon, people):
        alice = people["alice"]
        adapter = daemon.broker.resource("noop").adapter
        received: dict[str, Payload] = {}
        submit = adapter.submit

        async def recording(task_id: str, payload: Payload) -> str:  # the real noop backend, its inputs recorded
            received[task_id] = payload
            return await submit(task_id, payload)

        adapter.submit = recording  # type: ignore[method-assign]
        await running_task(alice, sequence(1024, "first"))
        texts = {}
        for index in range(6):
            text = sequence(200_000 if index % 2 else 2_000, f"task {index}")
            texts[(await alice.StartTask(start("noop", text))).id] = text
        spool = daemon.spool
        assert spool is not None and spool.directory.parent == daemon.config.journal.path.parent
        info = spool.directory.stat()
        assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
        waiting = {task_id for task_id, text in texts.items()
                   if daemon.broker.task(task_id).state.value == "queued" and len(text) > 64 * 1024}
        assert waiting, "the large tasks are still queued behind the first"
        for task_id in waiting:  # in memory only the kind is held; the text is in the spool
            task = daemon.broker.task(task_id)
            assert task.stored is not None and isinstance(task.payload, PulserSequence)
            assert task.payload.sequence == "" and task.size == len(texts[task_id])
        for task_id, text in texts.items():
            if len(text) <= 64 * 1024:
                assert daemon.broker.task(task_id).stored is None
        files = list(spool.directory.iterdir())
        assert len(files) >= len(waiting)
        assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in files)

        for task_id in texts:
            await daemon.broker.task(task_id).wait()
        assert {task_id: payload.sequence for task_id, payload in received.items() if task_id in texts} == texts
        assert all(daemon.broker.task(task_id).state.value == "completed" for task_id in texts)
        await _until(lambda: not any(spool.directory.iterdir()))  # each file goes with its task


async def test_a_spooled_task_cancelled_while_queued_leaves_no_file() -> None:
    async with users({"tasks": {"spool_above_bytes": 4096}}) as (daemon, people):
        alice = people["alice"]
        await running_task(alice, sequence(1024))
        task = await alice.StartTask(start("noop", sequence(100_000)))
        assert daemon.spool is not None and len(list(daemon.spool.directory.iterdir())) == 1
        await alice.StopTask(pb.StopTaskRequest(task_id=task.id))
        await _until(lambda: not any(daemon.spool.directory.iterdir()))  # type: ignore[union-attr]


async def test_kill_9_with_spooled_payloads_loses_no_task_and_leaves_no_file() -> None:
    scratch = short_dir()
    socket, cfg = scratch / "qrmid.sock", scratch / "qrmid.toml"
    spool = scratch / "journal.db.spool"
    cfg.write_text(f'[daemon]\nsocket = "{socket}"\n[journal]\npath = "{scratch / "journal.db"}"\n'
                   '[tasks]\nspool_above_bytes = 4096\n[limits]\ncalls_per_second = 0\n'
                   '[[resources]]\ntype = "noop"\nname = "noop"\nslots = 1\ndelay_seconds = 2\n')
    daemon = QrmidProcess(cfg, socket, cwd=ROOT)
    try:
        daemon.start()
        async with grpc.aio.insecure_channel(daemon.address) as channel:
            stub = pb_grpc.QuantumResourcesStub(channel)
            ids = [(await stub.StartTask(start("noop", sequence(size, str(index))), timeout=60)).id
                   for index, size in enumerate([1024, 100_000, 100_000, 100_000, 100_000])]
            before = set(spool.iterdir())
            assert len(before) >= 2, "the large tasks queued behind the first wait in the spool"
        daemon.kill()
        daemon.start()
        after = set(spool.iterdir())
        assert not before & after, "files of the killed run are removed; the journal holds the payloads"
        assert len(after) >= 2, "the queued tasks taken back from the journal wait in the spool again"
        async with grpc.aio.insecure_channel(daemon.address) as channel:
            stub = pb_grpc.QuantumResourcesStub(channel)
            for task_id in ids:
                while (task := await stub.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=60)).state in (
                        pb.TASK_STATE_QUEUED, pb.TASK_STATE_RUNNING):
                    await asyncio.sleep(0.1)
                assert task.state == pb.TASK_STATE_COMPLETED
        assert list(spool.iterdir()) == []
    finally:
        daemon.stop()


async def test_without_a_journal_large_payloads_stay_in_memory_within_the_limits() -> None:
    tasks = {"spool_above_bytes": 4096, "max_payload_bytes": MiB, "max_queued_bytes_per_user": MiB}
    async with users({"tasks": tasks}, delay=0.1, journal=False) as (daemon, people):
        alice = people["alice"]
        assert daemon.spool is None
        await running_task(alice, sequence(1024))
        ids = [(await alice.StartTask(start("noop", sequence(300_000)))).id for _ in range(3)]
        assert all(daemon.broker.task(task_id).stored is None for task_id in ids)
        refused = await refusal(alice.StartTask(start("noop", sequence(300_000))))
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for task_id in ids:
            assert (await daemon.broker.task(task_id).wait()).state.value == "completed"


async def test_a_spool_directory_others_may_write_is_refused_at_start() -> None:
    cfg = config([{"type": "noop", "name": "noop"}])
    spool = cfg.journal.path.with_name(cfg.journal.path.name + ".spool")
    spool.mkdir(mode=0o777)
    spool.chmod(0o777)
    daemon = Daemon(cfg)
    with pytest.raises(Exception, match=r"must be a directory owned by uid \d+ with mode 0700.*mode 0777"):
        await daemon.start()
    await daemon.stop()


async def test_live_leases_are_capped_per_user() -> None:
    async with users({"leases": {"max_per_user": 3}}) as (_, people):
        alice, bob = people["alice"], people["bob"]
        leases = [await alice.Acquire(pb.AcquireRequest(resource="noop")) for _ in range(3)]
        refused = await refusal(alice.Acquire(pb.AcquireRequest(resource="noop")))
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "you hold 3 live leases, the per-user limit ([leases] max_per_user = 3)" in refused.details()
        assert "qrmid release TOKEN" in refused.details()
        bobs = await bob.Acquire(pb.AcquireRequest(resource="noop"))  # others are not held back
        listed = await alice.ListLeases(pb.ListLeasesRequest())
        assert sorted(lease.id for lease in listed.leases) == sorted(lease.id for lease in leases)
        assert [lease.id for lease in (await bob.ListLeases(pb.ListLeasesRequest())).leases] == [bobs.id]
        await alice.Release(pb.ReleaseRequest(token=leases[0].token))
        assert (await alice.Acquire(pb.AcquireRequest(resource="noop"))).id


def test_lease_lookups_by_owner_and_resource_match_a_full_scan() -> None:
    table = LeaseTable(default_ttl=60, max_ttl=600)
    rng = random.Random(7)
    owners, resources = ["a", "b", "c"], ["r1", "r2"]
    for step in range(2_000):
        action = rng.random()
        live = table.live()
        if action < 0.6 or not live:
            table.grant(rng.choice(resources), rng.choice(owners), slurm_job_id=str(rng.randrange(3)),
                        ttl=0.001 if rng.random() < 0.1 else 60)
        elif action < 0.8:
            lease = rng.choice(live)
            table.pop(lease.token, lease.owner)
        elif action < 0.9:
            table.pop_id(rng.choice(live).id)
        else:
            table.pop_expired()
        if step % 50 == 0:
            time.sleep(0.01)  # the short leases have all expired: none expires while compared
            everyone = table.live()
            for owner in [*owners, None]:
                for resource in ["", *resources]:
                    expected = sorted((lease for lease in everyone if (owner is None or lease.owner == owner)
                                       and (not resource or lease.resource == resource)),
                                      key=lambda lease: lease.created_at)
                    assert table.matching(resource, owner) == expected
    with pytest.raises(errors.ResourceExhausted, match="max_per_user = 1"):
        fresh = LeaseTable(default_ttl=60, max_ttl=600)
        fresh.grant("r1", "a", owner_limit=1)
        fresh.grant("r2", "a", owner_limit=1)


def test_queue_byte_limits_are_bounded_config_values(tmp_path: Path) -> None:
    defaults = Config().tasks
    assert (defaults.max_queued_bytes_per_user, defaults.max_queued_bytes_per_resource) == (256 * MiB, 1024 * MiB)
    assert Config().leases.max_per_user == 1000
    path = tmp_path / "qrmid.toml"
    for text, message in [
        ("[tasks]\nmax_queued_bytes_per_user = 4194304\n",
         r"max_queued_bytes_per_user \(4194304\) is below max_payload_bytes \(8388608\)"),
        ("[tasks]\nmax_queued_bytes_per_resource = 10000000000000000\n", "max_queued_bytes_per_resource"),
        ("[tasks]\nspool_above_bytes = 0\n", "spool_above_bytes"),
        ("[leases]\nmax_per_user = 0\n", "leases.max_per_user"),
        ("[auth]\nmunge_threads = 1000\n", "auth.munge_threads"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load(path)


async def _until(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)
