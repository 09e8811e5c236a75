"""``qrmid.v1.QuantumResources``: each RPC validates its request, calls the broker, and maps the answer."""

from __future__ import annotations

import asyncio
import pwd
from collections.abc import AsyncIterator, Iterator

from qrmid.api import allocations, convert
from qrmid.api.identity import caller, user_name
from qrmid.api.requests import Context, required
from qrmid.api.status import streaming, unary
from qrmid.core.broker import Broker, listing_key
from qrmid.core.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from qrmid.core.leases import LeaseMode
from qrmid.core.tasks import Task, TaskState, TaskView
from qrmid.v1 import quantum_resources_pb2 as pb
from qrmid.v1 import quantum_resources_pb2_grpc as pb_grpc

RESULT_CHUNK_BYTES = 1 << 20
DEADLINE_MARGIN = 0.5  # seconds before the caller's deadline an exclusive Acquire gives up, to answer why in time

class QuantumResources(pb_grpc.QuantumResourcesServicer):
    """The QRMI operations over one broker."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    @unary
    async def ListResources(self, request: pb.ListResourcesRequest, context: Context) -> pb.ListResourcesResponse:
        return pb.ListResourcesResponse(
            resources=[self._resource(resource.name) for resource in self.broker.resources.values()])

    @unary
    async def GetResource(self, request: pb.GetResourceRequest, context: Context) -> pb.Resource:
        return self._resource(self.broker.resource(required(request.name, "name")).name)

    @unary
    async def GetTarget(self, request: pb.GetTargetRequest, context: Context) -> pb.Target:
        resource = self.broker.resource(required(request.resource, "resource"))
        return pb.Target(resource=resource.name, content_type="application/json", value=await resource.target())

    @unary
    async def GetMetadata(self, request: pb.GetMetadataRequest, context: Context) -> pb.Metadata:
        resource = self.broker.resource(required(request.resource, "resource"))
        return pb.Metadata(resource=resource.name, values=resource.adapter.metadata())

    @unary
    async def Acquire(self, request: pb.AcquireRequest, context: Context) -> pb.Lease:
        owner = caller(context).name
        if request.on_behalf_of:
            if not caller(context).admin:
                raise PermissionDenied(f"only admins may acquire on behalf of another user; {owner} is not one")
            owner = await asyncio.to_thread(user_name, request.on_behalf_of)
        who = caller(context)
        uid = who.uid if owner == who.name or not request.slurm_job_id else \
            await asyncio.to_thread(lambda: pwd.getpwnam(owner).pw_uid)
        name, mode = required(request.resource, "resource"), convert.lease_mode(request.mode)
        if mode is LeaseMode.EXCLUSIVE and request.min_slots:
            raise InvalidArgument("min_slots is for shared leases: an exclusive lease has every slot of the resource; "
                                  "leave min_slots at 0")
        account = await self.broker.check_job(request.slurm_job_id, uid, who.admin)
        if mode is LeaseMode.SHARED:
            lease = self.broker.acquire(name, owner, request.slurm_job_id, request.ttl_seconds, account=account,
                                        min_slots=request.min_slots)
        else:
            lease = await self.broker.acquire_exclusive(name, owner, request.slurm_job_id, request.ttl_seconds,
                                                        account=account, wait=request.wait_seconds,
                                                        within=_within(context))
        return convert.lease(await self.broker.recorded(lease), with_token=True)

    @unary
    async def Release(self, request: pb.ReleaseRequest, context: Context) -> pb.ReleaseResponse:
        identity = caller(context)
        lease, cancelled = await self.broker.release(required(request.token, "token"), identity.name,
                                                     identity.admin)
        return pb.ReleaseResponse(lease=convert.lease(lease, with_token=False), cancelled_tasks=cancelled)

    @unary
    async def ListLeases(self, request: pb.ListLeasesRequest, context: Context) -> pb.ListLeasesResponse:
        owner = caller(context).name
        leases = self.broker.leases.matching(request.resource, owner, request.slurm_job_id)
        return pb.ListLeasesResponse(leases=[convert.lease(lease, with_token=False) for lease in leases])

    @unary
    async def StartTask(self, request: pb.StartTaskRequest, context: Context) -> pb.Task:
        task = await self._start(request, context)
        return self._task(task, task.shown)

    @streaming
    async def RunTask(self, request: pb.StartTaskRequest, context: Context) -> AsyncIterator[pb.RunTaskResponse]:
        task = await self._start(request, context, eager=True)
        last = task.shown  # as it is when durable: an eager task may be done by then
        yield pb.RunTaskResponse(task=self._task(task, last))
        if not last.state.terminal:
            sent = last
            async for view in task.watch():  # states passed between two messages are skipped: only the latest goes
                if view is task.shown and view is not sent:
                    yield pb.RunTaskResponse(task=self._task(task, view))
                    sent = view
            last = sent
        if last.state is TaskState.COMPLETED:
            for chunk in _result_chunks(task):
                yield pb.RunTaskResponse(result_chunk=chunk)

    @unary
    async def StopTask(self, request: pb.StopTaskRequest, context: Context) -> pb.Task:
        who = caller(context)
        task = await self.broker.task_for(required(request.task_id, "task_id"), who.name, who.admin)
        reason = "stopped by its owner" if task.owner == who.name else f"stopped by {who.name}, an admin"
        task, view = await self.broker.cancel(task.id, reason)
        return self._task(task, view)

    @unary
    async def GetTask(self, request: pb.GetTaskRequest, context: Context) -> pb.Task:
        task = await self._visible(request.task_id, context)
        return self._task(task, task.shown)

    @streaming
    async def WatchTask(self, request: pb.WatchTaskRequest, context: Context) -> AsyncIterator[pb.Task]:
        task = await self._visible(request.task_id, context)
        async for view in task.watch():
            yield self._task(task, view)

    @streaming
    async def GetTaskResult(self, request: pb.GetTaskResultRequest, context: Context) -> AsyncIterator[pb.ResultChunk]:
        for chunk in _result_chunks(await self._visible(request.task_id, context)):
            yield chunk

    @unary
    async def GetTaskLogs(self, request: pb.GetTaskLogsRequest, context: Context) -> pb.TaskLogs:
        task = await self._visible(request.task_id, context)
        return pb.TaskLogs(task_id=task.id, text=task.logs)

    @unary
    async def ListTasks(self, request: pb.ListTasksRequest, context: Context) -> pb.ListTasksResponse:
        who = caller(context)
        if request.all_users and request.owner:
            raise InvalidArgument("give either owner or all_users, not both")
        if (request.all_users or request.owner not in ("", who.name)) and not who.admin:
            asked = "every user's tasks" if request.all_users else f"the tasks of {request.owner}"
            raise PermissionDenied(f"only admins may list {asked}; {who.name} is not one (your own: leave owner "
                                   "empty)")
        states = frozenset(convert.task_state(state) for state in request.states)
        owner = None if request.all_users else request.owner or who.name
        tasks, more = self.broker.tasks(owner, request.resource, states, request.limit,
                                        _after(request.page_token), request.page_size)
        return pb.ListTasksResponse(tasks=[self._task(task, task.shown) for task in tasks],
                                    next_page_token=_page_token(listing_key(tasks[-1])) if more else "")

    @unary
    async def ListMyAllocations(self, request: pb.ListMyAllocationsRequest, context: Context
                                ) -> pb.ListAllocationsResponse:
        return allocations.my_allocations(self.broker, caller(context).name)

    async def _start(self, request: pb.StartTaskRequest, context: Context, eager: bool = False) -> Task:
        """The task ``request`` starts (or the one its request id started before), once it is durable; ``eager``:
        see ``Broker.start_task``."""
        identity = caller(context)
        return await self.broker.start_task(
            required(request.resource, "resource"), convert.payload(request.payload), identity.name,
            lease_token=request.lease_token, request_id=request.client_request_id, priority=request.priority,
            admin=identity.admin, eager=eager, allow_fallback=request.allow_fallback)

    async def _visible(self, task_id: str, context: Context) -> Task:
        """The task when the caller owns it or is an admin; PermissionDenied otherwise."""
        who = caller(context)
        return await self.broker.task_for(required(task_id, "task_id"), who.name, who.admin)

    def _resource(self, name: str) -> pb.Resource:
        return convert.resource(self.broker.resources[name].view(), *self.broker.exclusive_state(name),
                                windows=self.broker.windows.around(name))

    def _task(self, task: Task, view: TaskView) -> pb.Task:
        resource = self.broker.resources.get(task.resource)
        return convert.task(task, view, resource.scheduler if resource else None)


def _result_chunks(task: Task) -> Iterator[pb.ResultChunk]:
    """A completed task's result in chunks of at most RESULT_CHUNK_BYTES; FailedPrecondition for any other
    task."""
    shown = task.shown
    if shown.state is not TaskState.COMPLETED or task.result is None:
        detail = f": {shown.reason}" if shown.reason else ""
        raise FailedPrecondition(f"task {task.id} is {shown.state.value}{detail}; only completed tasks have results")
    data = task.result.data
    yield pb.ResultChunk(content_type=task.result.content_type, total_size=len(data), data=data[:RESULT_CHUNK_BYTES])
    for start in range(RESULT_CHUNK_BYTES, len(data), RESULT_CHUNK_BYTES):
        yield pb.ResultChunk(data=data[start:start + RESULT_CHUNK_BYTES])


def _within(context: Context) -> float | None:
    """How long a call may wait before the caller's deadline, less a margin for the answer to reach it in time; None
    without a deadline."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return max(remaining - min(DEADLINE_MARGIN, remaining / 10), 0.0)


def _page_token(key: tuple[float, str]) -> str:
    """The page token of a listing that goes on after the task of ``key``."""
    return f"{key[0]!r}/{key[1]}"


def _after(token: str) -> tuple[float, str] | None:
    """The listing key a page token goes on after; None for the first page."""
    if not token:
        return None
    created, _, task_id = token.partition("/")
    try:
        return float(created), task_id
    except ValueError:
        raise InvalidArgument(f"page_token {token!r} is not one a ListTasks answer gave") from None
