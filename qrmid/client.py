"""Python clients of qrmid: ``AsyncClient`` for asyncio code, ``Client`` for everything else.

    with Client() as qrmid:                       # $QRMID_ADDRESS or the default socket
        task, result = qrmid.run("local-qiskit", sampler_payload(bell_input))

Calls return the API's protobuf messages (``qrmid.v1.quantum_resources_pb2``) and raise a ``QrmidError``
(``qrmid.client_errors``: a ``grpc.RpcError`` of one subclass per status code, e.g. ``InvalidArgument``) with the
daemon's status code and message when it refuses, or ``Unreachable`` naming the address tried when no daemon
answers. The address may list several members of a cluster: a call a member cannot answer moves on to the next
(``qrmid.client_members``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as wait_for
from typing import Any, Literal, Self, TypeVar

import grpc

from qrmid.client_auth import ClientAuth
from qrmid.client_errors import QrmidError
from qrmid.client_members import Address, Members
from qrmid.v1 import quantum_resources_pb2 as pb
from qrmid.v1 import quantum_resources_pb2_grpc as pb_grpc

TERMINAL = frozenset({pb.TASK_STATE_COMPLETED, pb.TASK_STATE_FAILED, pb.TASK_STATE_CANCELLED})

T = TypeVar("T")
LeaseModeName = Literal["shared", "exclusive"]

LEASE_MODES: dict[str, pb.LeaseMode] = {"shared": pb.LEASE_MODE_SHARED, "exclusive": pb.LEASE_MODE_EXCLUSIVE}
MAX_EXCLUSIVE_WAIT = 86_400  # seconds: the longest wait in line a daemon may be configured to allow

MAX_LAUNCHED = 32  # RunTask calls Client.launch keeps open at once: half the daemon's default streams per client


class TaskFailed(Exception):
    """A task ended FAILED or CANCELLED; ``task`` is its last state."""

    def __init__(self, task: pb.Task) -> None:
        super().__init__(f"task {task.id} {pb.TaskState.Name(task.state).removeprefix('TASK_STATE_').lower()}: "
                         f"{task.reason or 'no reason given'}")
        self.task = task


def sampler_payload(input: dict[str, Any] | str) -> pb.Payload:
    """A Qiskit Sampler V2 payload from its IBM-form input (a dict or JSON text)."""
    return _qiskit("sampler", input)


def estimator_payload(input: dict[str, Any] | str) -> pb.Payload:
    """A Qiskit Estimator V2 payload from its IBM-form input (a dict or JSON text)."""
    return _qiskit("estimator", input)


def pulser_payload(sequence: dict[str, Any] | str, runs: int) -> pb.Payload:
    """A Pulser payload from a sequence's abstract representation (a dict or JSON text)."""
    text = sequence if isinstance(sequence, str) else json.dumps(sequence)
    return pb.Payload(pulser_sequence=pb.PulserSequence(sequence=text, job_runs=runs))


def payload_from_task_input(doc: dict[str, Any]) -> pb.Payload:
    """A payload from QRMI's task_runner input schema: ``{"program_id", "parameters"}`` or
    ``{"sequence", "job_runs"}``; ValueError naming what is missing or not part of the schema otherwise."""
    if "program_id" in doc:
        _only_keys(doc, "a Qiskit", ("program_id", "parameters"))
        if "parameters" not in doc:
            raise ValueError('a Qiskit task input needs "parameters" next to "program_id"')
        return _qiskit(str(doc["program_id"]), doc["parameters"])
    if "sequence" in doc:
        _only_keys(doc, "a Pulser", ("sequence", "job_runs"))
        if not isinstance(doc.get("job_runs"), int):
            raise ValueError('a Pulser task input needs an integer "job_runs" next to "sequence"')
        return pulser_payload(doc["sequence"], doc["job_runs"])
    raise ValueError('task input must have "program_id" and "parameters", or "sequence" and "job_runs"')


def _only_keys(doc: dict[str, Any], kind: str, keys: tuple[str, str]) -> None:
    unknown = [key for key in doc if key not in keys]
    if unknown:
        raise ValueError(f"task input has unknown key {unknown[0]!r}: {kind} task input takes only {keys[0]!r} and "
                         f"{keys[1]!r} (QRMI's task_runner input schema)")


def _qiskit(program_id: str, input: dict[str, Any] | str) -> pb.Payload:
    text = input if isinstance(input, str) else json.dumps(input)
    return pb.Payload(qiskit_primitive=pb.QiskitPrimitive(program_id=program_id, input=text))


class AsyncClient:
    """An asyncio client of a qrmid daemon, or of the members of a cluster."""

    def __init__(self, address: str | Address | None = None, *, timeout: float = 60.0,
                 auth: ClientAuth | None = None) -> None:
        """``address``: one member or a comma-separated list (``qrmid.client_members.split_address``);
        ``auth``: how calls authenticate and whether over TLS; ``ClientAuth.resolve()`` (the QRMID_AUTH,
        QRMID_TOKEN_FILE and QRMID_TLS_* environment) when None."""
        self._members = Members(address, auth or ClientAuth.resolve(), options=[
            ("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)])
        self.address = self._members.address
        self.timeout = timeout
        self._stubs = {channel: pb_grpc.QuantumResourcesStub(channel) for channel in self._members.channels}

    async def _unary(self, method: str, request: Any) -> Any:
        """``method`` on the first member that can answer it."""
        return await self._members.call(
            lambda channel, timeout: getattr(self._stubs[channel], method)(request, timeout=timeout), self.timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._members.close()

    async def list_resources(self) -> list[pb.Resource]:
        response = await self._unary("ListResources", pb.ListResourcesRequest())
        return list(response.resources)

    async def my_allocations(self) -> list[pb.Allocation]:
        """The allocations charging the caller's tasks, with what is used."""
        response = await self._unary("ListMyAllocations", pb.ListMyAllocationsRequest())
        return list(response.allocations)

    async def resource(self, name: str) -> pb.Resource:
        return await self._unary("GetResource", pb.GetResourceRequest(name=name))

    async def target(self, resource: str) -> str:
        """The resource's device description, as JSON text."""
        response = await self._unary("GetTarget", pb.GetTargetRequest(resource=resource))
        return response.value

    async def metadata(self, resource: str) -> dict[str, str]:
        response = await self._unary("GetMetadata", pb.GetMetadataRequest(resource=resource))
        return dict(response.values)

    async def acquire(self, resource: str, slurm_job_id: str = "", ttl_seconds: int = 0,
                      on_behalf_of: str = "", *, mode: LeaseModeName = "shared", min_slots: int = 0,
                      wait: int = 0) -> pb.Lease:
        """A lease on ``resource``; admins may name another user (or uid) to hold it in ``on_behalf_of``. A shared
        lease may keep ``min_slots`` slots free for its tasks; an exclusive one waits in line for its grant up to
        ``wait`` seconds (0: the daemon's default), raising DeadlineExceeded with its place in line after that."""
        request = pb.AcquireRequest(resource=resource, slurm_job_id=slurm_job_id, ttl_seconds=ttl_seconds,
                                    on_behalf_of=on_behalf_of, mode=LEASE_MODES[mode], min_slots=min_slots,
                                    wait_seconds=wait)
        if mode == "shared":
            return await self._unary("Acquire", request)
        return await self._members.call(  # the daemon bounds the wait: it answers why it gave up in time
            lambda channel, timeout: self._stubs[channel].Acquire(request, timeout=timeout),
            self.timeout + (wait or MAX_EXCLUSIVE_WAIT))

    async def release(self, token: str) -> pb.ReleaseResponse:
        return await self._unary("Release", pb.ReleaseRequest(token=token))

    async def list_leases(self, resource: str = "", slurm_job_id: str = "") -> list[pb.Lease]:
        """The caller's live leases (without tokens), optionally only one resource's or one Slurm job's."""
        request = pb.ListLeasesRequest(resource=resource, slurm_job_id=slurm_job_id)
        response = await self._unary("ListLeases", request)
        return list(response.leases)

    async def start_task(self, resource: str, payload: pb.Payload, *, lease_token: str = "",
                         request_id: str = "", priority: str = "", allow_fallback: bool = False) -> pb.Task:
        """Queue a task; ``priority`` names its priority class (empty: the resource's default); ``allow_fallback``
        lets a pool run it on its fallback member. Without a ``request_id`` the client makes one, so that a retry on
        another member cannot start a second task."""
        request = pb.StartTaskRequest(resource=resource, payload=payload, lease_token=lease_token,
                                      client_request_id=request_id or uuid.uuid4().hex, priority=priority,
                                      allow_fallback=allow_fallback)
        return await self._unary("StartTask", request)

    async def stop_task(self, task_id: str) -> pb.Task:
        return await self._unary("StopTask", pb.StopTaskRequest(task_id=task_id))

    async def task(self, task_id: str) -> pb.Task:
        return await self._unary("GetTask", pb.GetTaskRequest(task_id=task_id))

    async def watch(self, task_id: str) -> AsyncIterator[pb.Task]:
        """The task now, then each state change until a terminal one. When its member goes away the watch
        goes on at another member, without repeating a state already given."""
        request = pb.WatchTaskRequest(task_id=task_id)
        last: pb.Task | None = None
        resumed = False

        def resume() -> None:
            nonlocal resumed
            resumed = True

        async for task in self._members.stream(lambda channel: self._stubs[channel].WatchTask(request), resume):
            if last is not None and (task.state < last.state or (resumed and task.state == last.state)):
                continue  # the new member's stream starts over: skip what was given already
            last, resumed = task, False
            yield task

    async def result(self, task_id: str) -> bytes:
        """A completed task's whole result (fetched again from the start when its member goes away)."""
        request = pb.GetTaskResultRequest(task_id=task_id)
        deadline = time.monotonic() + self.timeout
        chunks: list[bytes] = []
        async for chunk in self._members.stream(lambda channel: self._stubs[channel].GetTaskResult(
                request, timeout=max(deadline - time.monotonic(), 0.001)), chunks.clear):
            chunks.append(chunk.data)
        return b"".join(chunks)

    async def logs(self, task_id: str) -> str:
        response = await self._unary("GetTaskLogs", pb.GetTaskLogsRequest(task_id=task_id))
        return response.text

    async def list_tasks(self, resource: str = "", states: Iterable[pb.TaskState] = (), owner: str = "",
                         all_users: bool = False, limit: int = 0) -> list[pb.Task]:
        """The tasks the daemon keeps of the caller (of ``owner``, or of every user, for admins), oldest first;
        only ``resource``'s and in ``states`` (``pb.TASK_STATE_*``) when given; the ``limit`` newest when not 0.
        Every page of the listing, asked for one after the other."""
        request = pb.ListTasksRequest(resource=resource, states=list(states), owner=owner, all_users=all_users,
                                      limit=limit)
        tasks: list[pb.Task] = []
        while True:
            response = await self._unary("ListTasks", request)
            tasks.extend(response.tasks)
            if not response.next_page_token:
                return tasks
            request.page_token = response.next_page_token

    async def wait(self, task_id: str, timeout: float | None = None) -> pb.Task:
        """The task's terminal state, once it has one; TimeoutError when it has none after ``timeout`` s."""
        last = None
        try:
            async with asyncio.timeout(timeout):
                async for last in self.watch(task_id):
                    pass
        except TimeoutError:
            raise TimeoutError(f"task {task_id} has not finished after {timeout} s") from None
        assert last is not None and last.state in TERMINAL, "WatchTask ends on a terminal state"
        return last

    async def run(self, resource: str, payload: pb.Payload, *, lease_token: str = "", priority: str = "",
                  request_id: str = "", on_state: Callable[[pb.Task], None] | None = None,
                  allow_fallback: bool = False) -> tuple[pb.Task, bytes]:
        """Start a task, wait for it, and return its final state and result; TaskFailed unless it completed.
        ``allow_fallback`` lets a pool run it on its fallback member.

        One RunTask call: ``on_state(task)`` is called with the task as it is once accepted for good (a short task
        may have ended by then), then with its latest state at each change (a state passed between two messages is
        skipped). When its member goes away mid-way, the call is made again on the next member with the same request
        id (made here when not given), which finds the same task: no state is given twice. Giving up (cancelling
        this coroutine) leaves the task running."""
        request = pb.StartTaskRequest(resource=resource, payload=payload, lease_token=lease_token,
                                      client_request_id=request_id or uuid.uuid4().hex, priority=priority,
                                      allow_fallback=allow_fallback)
        last: pb.Task | None = None
        chunks: list[bytes] = []
        resumed = False

        def resume() -> None:
            nonlocal resumed
            resumed = True
            chunks.clear()  # the new member's stream starts over, result included

        async for message in self._members.stream(lambda channel: self._stubs[channel].RunTask(request), resume):
            if message.HasField("result_chunk"):
                chunks.append(message.result_chunk.data)
                continue
            task = message.task
            if last is not None and (task.state < last.state or (resumed and task.state == last.state)):
                continue
            last, resumed = task, False
            if on_state is not None:
                on_state(task)
        if last is None or last.state not in TERMINAL:
            where = f"task {last.id}'s" if last is not None else "the"
            raise QrmidError.make(grpc.StatusCode.UNAVAILABLE, f"{where} RunTask stream ended before the task did; "
                                  "call run() again with the same request_id to follow it on")
        if last.state != pb.TASK_STATE_COMPLETED:
            raise TaskFailed(last)
        return last, b"".join(chunks)


class Client:
    """A blocking client: the same calls as ``AsyncClient``, run on a private event-loop thread.

    The thread is a daemon thread, so a script that never closes its client still exits.
    """

    def __init__(self, address: str | Address | None = None, *, timeout: float = 60.0,
                 auth: ClientAuth | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="qrmid client", daemon=True).start()
        self._async = self._call(_make_async, address, timeout, auth)
        self.address = self._async.address
        self._launch_lock = threading.Lock()
        self._launched = 0  # RunTask calls of launch() going on

    def _call(self, call: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await ``call(*args)`` on the client's loop and return its value (or raise its error) here."""
        async def on_loop() -> T:
            return await call(*args)

        future = asyncio.run_coroutine_threadsafe(on_loop(), self._loop)
        try:
            return future.result()
        except BaseException:  # Ctrl-C here: the call stops too (a task it started runs on)
            future.cancel()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_running():
            self._call(self._async.close)
            self._loop.call_soon_threadsafe(self._loop.stop)

    def list_resources(self) -> list[pb.Resource]:
        return self._call(self._async.list_resources)

    def my_allocations(self) -> list[pb.Allocation]:
        return self._call(self._async.my_allocations)

    def resource(self, name: str) -> pb.Resource:
        return self._call(self._async.resource, name)

    def target(self, resource: str) -> str:
        return self._call(self._async.target, resource)

    def metadata(self, resource: str) -> dict[str, str]:
        return self._call(self._async.metadata, resource)

    def acquire(self, resource: str, slurm_job_id: str = "", ttl_seconds: int = 0, on_behalf_of: str = "", *,
                mode: LeaseModeName = "shared", min_slots: int = 0, wait: int = 0) -> pb.Lease:
        return self._call(lambda: self._async.acquire(resource, slurm_job_id, ttl_seconds, on_behalf_of, mode=mode,
                                                      min_slots=min_slots, wait=wait))

    def release(self, token: str) -> pb.ReleaseResponse:
        return self._call(self._async.release, token)

    def list_leases(self, resource: str = "", slurm_job_id: str = "") -> list[pb.Lease]:
        return self._call(self._async.list_leases, resource, slurm_job_id)

    def start_task(self, resource: str, payload: pb.Payload, *, lease_token: str = "",
                   request_id: str = "", priority: str = "", allow_fallback: bool = False) -> pb.Task:
        return self._call(lambda: self._async.start_task(resource, payload, lease_token=lease_token,
                                                         request_id=request_id, priority=priority,
                                                         allow_fallback=allow_fallback))

    def stop_task(self, task_id: str) -> pb.Task:
        return self._call(self._async.stop_task, task_id)

    def task(self, task_id: str) -> pb.Task:
        return self._call(self._async.task, task_id)

    def watch(self, task_id: str) -> Iterator[pb.Task]:
        stream = self._async.watch(task_id)
        while True:
            try:
                yield self._call(stream.__anext__)
            except StopAsyncIteration:
                return

    def result(self, task_id: str) -> bytes:
        return self._call(self._async.result, task_id)

    def logs(self, task_id: str) -> str:
        return self._call(self._async.logs, task_id)

    def list_tasks(self, resource: str = "", states: Iterable[pb.TaskState] = (), owner: str = "",
                   all_users: bool = False, limit: int = 0) -> list[pb.Task]:
        return self._call(lambda: self._async.list_tasks(resource, states, owner, all_users, limit))

    def wait(self, task_id: str, timeout: float | None = None) -> pb.Task:
        return self._call(self._async.wait, task_id, timeout)

    def run(self, resource: str, payload: pb.Payload, *, lease_token: str = "", priority: str = "",
            request_id: str = "", on_state: Callable[[pb.Task], None] | None = None,
            allow_fallback: bool = False) -> tuple[pb.Task, bytes]:
        """As ``AsyncClient.run``; ``on_state`` is called on the client's thread."""
        return self._call(lambda: self._async.run(resource, payload, lease_token=lease_token, priority=priority,
                                                  request_id=request_id, on_state=on_state,
                                                  allow_fallback=allow_fallback))

    def launch(self, resource: str, payload: pb.Payload, *, lease_token: str = "", priority: str = "") -> Run:
        """Start a task and return at once, as soon as it is accepted (queued or further along), with a ``Run``
        that follows it.

        The task is run by one RunTask call going on in the client's thread, which keeps its latest state and
        its result; at most ``MAX_LAUNCHED`` such calls at once (the daemon caps each client's open streams), so
        beyond them the task is started with StartTask and followed when its outcome is asked for. Refusals
        (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...) are raised here."""
        with self._launch_lock:
            streamed = self._launched < MAX_LAUNCHED
            self._launched += streamed
        if not streamed:
            return Run(self, self.start_task(resource, payload, lease_token=lease_token, priority=priority))
        run = Run(self)
        queued: Future[None] = Future()

        def on_state(task: pb.Task) -> None:
            run.task = task
            if not queued.done():
                queued.set_result(None)

        run._outcome = outcome = asyncio.run_coroutine_threadsafe(self._async.run(
            resource, payload, lease_token=lease_token, priority=priority, on_state=on_state), self._loop)
        outcome.add_done_callback(self._landed)
        try:
            first: list[Future[Any]] = [queued, outcome]
            wait_for(first, return_when=FIRST_COMPLETED)
        except BaseException:
            outcome.cancel()
            raise
        if not queued.done():
            outcome.result()  # refused: raises why
        return run

    def _landed(self, outcome: Future[tuple[pb.Task, bytes]]) -> None:
        with self._launch_lock:
            self._launched -= 1


class Run:
    """A task started by ``Client.launch``: its latest known state, and its outcome once it ends."""

    def __init__(self, client: Client, task: pb.Task | None = None) -> None:
        self._client = client
        self._outcome: Future[tuple[pb.Task, bytes]] | None = None  # the RunTask call following the task, if any
        self.task = task if task is not None else pb.Task()
        """The task's latest state known here (its RunTask call updates it as it goes)."""

    @property
    def id(self) -> str:
        return self.task.id

    def state(self) -> pb.TaskState:
        """The task's state now: as its RunTask call last told, or asked with GetTask when it has none."""
        outcome = self._outcome
        followed = outcome is not None and not (outcome.done() and (outcome.cancelled() or outcome.exception()))
        if not followed and self.task.state not in TERMINAL:
            self.task = self._client.task(self.id)
        return self.task.state

    def outcome(self, timeout: float | None = None) -> tuple[pb.Task, bytes]:
        """The task's final state and result once it has ended; TaskFailed unless it completed, TimeoutError when
        it has not ended after ``timeout`` s."""
        if self._outcome is not None:
            try:
                task, result = self._outcome.result(timeout)
            except FutureTimeout:
                raise TimeoutError(f"task {self.id} has not finished after {timeout} s") from None
            except TaskFailed as exc:
                self.task = exc.task
                raise
            self.task = task
            return task, result
        self.task = self._client.wait(self.id, timeout)
        if self.task.state != pb.TASK_STATE_COMPLETED:
            raise TaskFailed(self.task)
        return self.task, self._client.result(self.id)


async def _make_async(address: str | Address | None, timeout: float, auth: ClientAuth | None) -> AsyncClient:
    """Create the async client on the portal's loop, which its channel belongs to."""
    return AsyncClient(address, timeout=timeout, auth=auth)
