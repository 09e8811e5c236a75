"""Protobuf messages <-> domain objects."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from qrmid.backends.payloads import Payload, PayloadKind, PulserSequence, QiskitPrimitive
from qrmid.core.errors import InvalidArgument
from qrmid.core.leases import Lease, LeaseMode
from qrmid.core.resource import ResourceStatus, ResourceView
from qrmid.core.scheduler import Scheduler
from qrmid.core.tasks import Task, TaskState, TaskView
from qrmid.core.windows import Window
from qrmid.v1 import quantum_resources_pb2 as pb

_RESOURCE_STATUS = {
    ResourceStatus.ONLINE: pb.RESOURCE_STATUS_ONLINE,
    ResourceStatus.OFFLINE: pb.RESOURCE_STATUS_OFFLINE,
    ResourceStatus.PAUSED: pb.RESOURCE_STATUS_PAUSED,
    ResourceStatus.DRAINING: pb.RESOURCE_STATUS_DRAINING,
}
_TASK_STATE = {
    TaskState.QUEUED: pb.TASK_STATE_QUEUED,
    TaskState.RUNNING: pb.TASK_STATE_RUNNING,
    TaskState.COMPLETED: pb.TASK_STATE_COMPLETED,
    TaskState.FAILED: pb.TASK_STATE_FAILED,
    TaskState.CANCELLED: pb.TASK_STATE_CANCELLED,
}
_LEASE_MODE = {LeaseMode.SHARED: pb.LEASE_MODE_SHARED, LeaseMode.EXCLUSIVE: pb.LEASE_MODE_EXCLUSIVE}
_PAYLOAD_KIND = {
    PayloadKind.QISKIT_PRIMITIVE: pb.PAYLOAD_KIND_QISKIT_PRIMITIVE,
    PayloadKind.PULSER_SEQUENCE: pb.PAYLOAD_KIND_PULSER_SEQUENCE,
}


def timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    whole, nanos = divmod(int(seconds * 1e9), 1_000_000_000)  # as Timestamp.FromNanoseconds, without its Python
    return Timestamp(seconds=whole, nanos=nanos)


def resource(view: ResourceView, exclusive_lease: Lease | None = None, exclusive_waiting: int = 0,
             windows: tuple[Window | None, Window | None] = (None, None)) -> pb.Resource:
    """The API resource of ``view``, with the exclusive lease holding it (without its token), the exclusive
    Acquires waiting for it, and its window in force and next one."""
    return pb.Resource(
        name=view.name,
        type=view.type,
        status=_RESOURCE_STATUS[view.status],
        status_reason=view.status_reason,
        capacity=pb.Capacity(slots_total=view.slots_total, slots_free=view.slots_free),
        queue_length=view.queue_length,
        running_tasks=view.running_tasks,
        payload_kinds=sorted(_PAYLOAD_KIND[kind] for kind in view.payload_kinds),
        exclusive_lease=lease(exclusive_lease, with_token=False) if exclusive_lease is not None else None,
        exclusive_waiting=exclusive_waiting,
        active_window=window(windows[0]) if windows[0] is not None else None,
        next_window=window(windows[1]) if windows[1] is not None else None,
        members=view.members,
        pool_policy=view.pool_policy,
        fallback=view.fallback,
    )


def window(value: Window) -> pb.Window:
    return pb.Window(id=value.id, resource=value.resource, kind=value.kind, start_time=timestamp(value.start),
                     end_time=timestamp(value.end), users=value.users, accounts=value.accounts, groups=value.groups,
                     reason=value.reason, origin=value.origin)


def window_request(message: pb.Window) -> Window:
    """The domain window an admin asks for (its id and origin are qrmid's to choose); InvalidArgument without a
    start or an end."""
    for name in ("start_time", "end_time"):
        if not message.HasField(name):
            raise InvalidArgument(f"window.{name} is required")
    return Window(id="", resource=message.resource, kind=message.kind,
                  start=message.start_time.ToNanoseconds() / 1e9, end=message.end_time.ToNanoseconds() / 1e9,
                  users=tuple(message.users), accounts=tuple(message.accounts), groups=tuple(message.groups),
                  reason=message.reason)


def task(task: Task, view: TaskView, scheduler: Scheduler | None) -> pb.Task:
    """The API task of ``view``; while it is QUEUED on ``scheduler``, with its place, expected start and what holds
    it back (or, when nothing does, the warnings it was accepted with: why it waits in a low class)."""
    if view.state is not TaskState.QUEUED or scheduler is None:
        return _pooled(task, _task(view, warnings=task.warnings))
    held = scheduler.hold(task)
    return _pooled(task, _task(view, scheduler.position(task), scheduler.estimated_start(task),
                               held.reason if held else "; ".join(task.warnings), task.warnings))


def _pooled(task: Task, message: pb.Task) -> pb.Task:
    """``message`` with what a pool's ``task`` records: the member it is bound to, whether it allows the fallback."""
    message.member, message.allow_fallback = task.member, task.allow_fallback
    return message


def _task(view: TaskView, queue_position: int = 0, estimated_start: float | None = None,
          wait_reason: str = "", warnings: tuple[str, ...] = ()) -> pb.Task:
    return pb.Task(
        id=view.id,
        resource=view.resource,
        state=_TASK_STATE[view.state],
        owner=view.owner,
        lease_id=view.lease_id,
        slurm_job_id=view.slurm_job_id,
        payload_kind=_PAYLOAD_KIND[view.payload_kind],
        create_time=timestamp(view.created_at),
        start_time=timestamp(view.started_at),
        end_time=timestamp(view.ended_at),
        reason=view.reason,
        queue_position=queue_position,
        client_request_id=view.client_request_id,
        priority=view.priority,
        account=view.account,
        shots=view.shots,
        estimated_start_time=timestamp(estimated_start),
        wait_reason=wait_reason,
        warnings=warnings,
    )


def task_state(value: int) -> TaskState:
    """The domain state of API ``TaskState`` ``value``; InvalidArgument for UNSPECIFIED or an unknown value."""
    for state, number in _TASK_STATE.items():
        if number == value:
            return state
    raise InvalidArgument(f"states: {value} is not a task state (queued, running, completed, failed, cancelled)")


def lease(value: Lease, with_token: bool) -> pb.Lease:
    return pb.Lease(
        id=value.id,
        token=value.token if with_token else "",
        resource=value.resource,
        owner=value.owner,
        slurm_job_id=value.slurm_job_id,
        create_time=timestamp(value.created_at),
        expire_time=timestamp(value.expires_at),
        account=value.account,
        mode=_LEASE_MODE[value.mode],
        min_slots=value.min_slots,
    )


def lease_mode(value: int) -> LeaseMode:
    """The domain mode of API ``LeaseMode`` ``value``; InvalidArgument for an unknown value."""
    for mode, number in _LEASE_MODE.items():
        if number == value:
            return mode
    raise InvalidArgument(f"mode: {value} is not a lease mode (0: LEASE_MODE_SHARED, 1: LEASE_MODE_EXCLUSIVE)")


def payload(message: pb.Payload) -> Payload:
    """The domain payload of a request; InvalidArgument when no variant is set."""
    kind = message.WhichOneof("kind")
    if kind == "qiskit_primitive":
        return QiskitPrimitive(program_id=message.qiskit_primitive.program_id, input=message.qiskit_primitive.input)
    if kind == "pulser_sequence":
        if message.pulser_sequence.job_runs < 1:
            raise InvalidArgument(f"pulser_sequence.job_runs is {message.pulser_sequence.job_runs}; it must be at least 1")
        return PulserSequence(sequence=message.pulser_sequence.sequence, job_runs=message.pulser_sequence.job_runs)
    raise InvalidArgument("payload is empty: set qiskit_primitive or pulser_sequence")
