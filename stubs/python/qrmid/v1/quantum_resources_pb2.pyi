import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResourceStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESOURCE_STATUS_UNSPECIFIED: _ClassVar[ResourceStatus]
    RESOURCE_STATUS_ONLINE: _ClassVar[ResourceStatus]
    RESOURCE_STATUS_OFFLINE: _ClassVar[ResourceStatus]
    RESOURCE_STATUS_PAUSED: _ClassVar[ResourceStatus]
    RESOURCE_STATUS_DRAINING: _ClassVar[ResourceStatus]

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_QUEUED: _ClassVar[TaskState]
    TASK_STATE_RUNNING: _ClassVar[TaskState]
    TASK_STATE_COMPLETED: _ClassVar[TaskState]
    TASK_STATE_FAILED: _ClassVar[TaskState]
    TASK_STATE_CANCELLED: _ClassVar[TaskState]

class PayloadKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYLOAD_KIND_UNSPECIFIED: _ClassVar[PayloadKind]
    PAYLOAD_KIND_QISKIT_PRIMITIVE: _ClassVar[PayloadKind]
    PAYLOAD_KIND_PULSER_SEQUENCE: _ClassVar[PayloadKind]

class LeaseMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEASE_MODE_SHARED: _ClassVar[LeaseMode]
    LEASE_MODE_EXCLUSIVE: _ClassVar[LeaseMode]
RESOURCE_STATUS_UNSPECIFIED: ResourceStatus
RESOURCE_STATUS_ONLINE: ResourceStatus
RESOURCE_STATUS_OFFLINE: ResourceStatus
RESOURCE_STATUS_PAUSED: ResourceStatus
RESOURCE_STATUS_DRAINING: ResourceStatus
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_QUEUED: TaskState
TASK_STATE_RUNNING: TaskState
TASK_STATE_COMPLETED: TaskState
TASK_STATE_FAILED: TaskState
TASK_STATE_CANCELLED: TaskState
PAYLOAD_KIND_UNSPECIFIED: PayloadKind
PAYLOAD_KIND_QISKIT_PRIMITIVE: PayloadKind
PAYLOAD_KIND_PULSER_SEQUENCE: PayloadKind
LEASE_MODE_SHARED: LeaseMode
LEASE_MODE_EXCLUSIVE: LeaseMode

class Window(_message.Message):
    __slots__ = ("id", "resource", "kind", "start_time", "end_time", "users", "accounts", "groups", "reason", "origin")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    id: str
    resource: str
    kind: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    users: _containers.RepeatedScalarFieldContainer[str]
    accounts: _containers.RepeatedScalarFieldContainer[str]
    groups: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    origin: str
    def __init__(self, id: _Optional[str] = ..., resource: _Optional[str] = ..., kind: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., users: _Optional[_Iterable[str]] = ..., accounts: _Optional[_Iterable[str]] = ..., groups: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ..., origin: _Optional[str] = ...) -> None: ...

class Capacity(_message.Message):
    __slots__ = ("slots_total", "slots_free")
    SLOTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FREE_FIELD_NUMBER: _ClassVar[int]
    slots_total: int
    slots_free: int
    def __init__(self, slots_total: _Optional[int] = ..., slots_free: _Optional[int] = ...) -> None: ...

class Resource(_message.Message):
    __slots__ = ("name", "type", "status", "status_reason", "capacity", "queue_length", "running_tasks", "payload_kinds", "exclusive_lease", "exclusive_waiting", "active_window", "next_window", "members", "pool_policy", "fallback")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_REASON_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    RUNNING_TASKS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_KINDS_FIELD_NUMBER: _ClassVar[int]
    EXCLUSIVE_LEASE_FIELD_NUMBER: _ClassVar[int]
    EXCLUSIVE_WAITING_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_WINDOW_FIELD_NUMBER: _ClassVar[int]
    NEXT_WINDOW_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    POOL_POLICY_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    status: ResourceStatus
    status_reason: str
    capacity: Capacity
    queue_length: int
    running_tasks: int
    payload_kinds: _containers.RepeatedScalarFieldContainer[PayloadKind]
    exclusive_lease: Lease
    exclusive_waiting: int
    active_window: Window
    next_window: Window
    members: _containers.RepeatedScalarFieldContainer[str]
    pool_policy: str
    fallback: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., status: _Optional[_Union[ResourceStatus, str]] = ..., status_reason: _Optional[str] = ..., capacity: _Optional[_Union[Capacity, _Mapping]] = ..., queue_length: _Optional[int] = ..., running_tasks: _Optional[int] = ..., payload_kinds: _Optional[_Iterable[_Union[PayloadKind, str]]] = ..., exclusive_lease: _Optional[_Union[Lease, _Mapping]] = ..., exclusive_waiting: _Optional[int] = ..., active_window: _Optional[_Union[Window, _Mapping]] = ..., next_window: _Optional[_Union[Window, _Mapping]] = ..., members: _Optional[_Iterable[str]] = ..., pool_policy: _Optional[str] = ..., fallback: _Optional[str] = ...) -> None: ...

class QiskitPrimitive(_message.Message):
    __slots__ = ("program_id", "input")
    PROGRAM_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    program_id: str
    input: str
    def __init__(self, program_id: _Optional[str] = ..., input: _Optional[str] = ...) -> None: ...

class PulserSequence(_message.Message):
    __slots__ = ("sequence", "job_runs")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    JOB_RUNS_FIELD_NUMBER: _ClassVar[int]
    sequence: str
    job_runs: int
    def __init__(self, sequence: _Optional[str] = ..., job_runs: _Optional[int] = ...) -> None: ...

class Payload(_message.Message):
    __slots__ = ("qiskit_primitive", "pulser_sequence")
    QISKIT_PRIMITIVE_FIELD_NUMBER: _ClassVar[int]
    PULSER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    qiskit_primitive: QiskitPrimitive
    pulser_sequence: PulserSequence
    def __init__(self, qiskit_primitive: _Optional[_Union[QiskitPrimitive, _Mapping]] = ..., pulser_sequence: _Optional[_Union[PulserSequence, _Mapping]] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("id", "token", "resource", "owner", "slurm_job_id", "create_time", "expire_time", "account", "mode", "min_slots")
    ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SLURM_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MIN_SLOTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    token: str
    resource: str
    owner: str
    slurm_job_id: str
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    account: str
    mode: LeaseMode
    min_slots: int
    def __init__(self, id: _Optional[str] = ..., token: _Optional[str] = ..., resource: _Optional[str] = ..., owner: _Optional[str] = ..., slurm_job_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., account: _Optional[str] = ..., mode: _Optional[_Union[LeaseMode, str]] = ..., min_slots: _Optional[int] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("id", "resource", "state", "owner", "lease_id", "slurm_job_id", "payload_kind", "create_time", "start_time", "end_time", "reason", "queue_position", "client_request_id", "priority", "account", "shots", "estimated_start_time", "wait_reason", "member", "allow_fallback", "warnings")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    SLURM_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_KIND_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    SHOTS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_START_TIME_FIELD_NUMBER: _ClassVar[int]
    WAIT_REASON_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    ALLOW_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    id: str
    resource: str
    state: TaskState
    owner: str
    lease_id: str
    slurm_job_id: str
    payload_kind: PayloadKind
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    reason: str
    queue_position: int
    client_request_id: str
    priority: str
    account: str
    shots: int
    estimated_start_time: _timestamp_pb2.Timestamp
    wait_reason: str
    member: str
    allow_fallback: bool
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., resource: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., owner: _Optional[str] = ..., lease_id: _Optional[str] = ..., slurm_job_id: _Optional[str] = ..., payload_kind: _Optional[_Union[PayloadKind, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., queue_position: _Optional[int] = ..., client_request_id: _Optional[str] = ..., priority: _Optional[str] = ..., account: _Optional[str] = ..., shots: _Optional[int] = ..., estimated_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., wait_reason: _Optional[str] = ..., member: _Optional[str] = ..., allow_fallback: _Optional[bool] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class ListResourcesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListResourcesResponse(_message.Message):
    __slots__ = ("resources",)
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    resources: _containers.RepeatedCompositeFieldContainer[Resource]
    def __init__(self, resources: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ...) -> None: ...

class GetResourceRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetTargetRequest(_message.Message):
    __slots__ = ("resource",)
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    resource: str
    def __init__(self, resource: _Optional[str] = ...) -> None: ...

class Target(_message.Message):
    __slots__ = ("resource", "content_type", "value")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    resource: str
    content_type: str
    value: str
    def __init__(self, resource: _Optional[str] = ..., content_type: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class GetMetadataRequest(_message.Message):
    __slots__ = ("resource",)
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    resource: str
    def __init__(self, resource: _Optional[str] = ...) -> None: ...

class Metadata(_message.Message):
    __slots__ = ("resource", "values")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    resource: str
    values: _containers.ScalarMap[str, str]
    def __init__(self, resource: _Optional[str] = ..., values: _Optional[_Mapping[str, str]] = ...) -> None: ...

class AcquireRequest(_message.Message):
    __slots__ = ("resource", "slurm_job_id", "ttl_seconds", "on_behalf_of", "mode", "min_slots", "wait_seconds")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    SLURM_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ON_BEHALF_OF_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MIN_SLOTS_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    resource: str
    slurm_job_id: str
    ttl_seconds: int
    on_behalf_of: str
    mode: LeaseMode
    min_slots: int
    wait_seconds: int
    def __init__(self, resource: _Optional[str] = ..., slurm_job_id: _Optional[str] = ..., ttl_seconds: _Optional[int] = ..., on_behalf_of: _Optional[str] = ..., mode: _Optional[_Union[LeaseMode, str]] = ..., min_slots: _Optional[int] = ..., wait_seconds: _Optional[int] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("lease", "cancelled_tasks")
    LEASE_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_TASKS_FIELD_NUMBER: _ClassVar[int]
    lease: Lease
    cancelled_tasks: int
    def __init__(self, lease: _Optional[_Union[Lease, _Mapping]] = ..., cancelled_tasks: _Optional[int] = ...) -> None: ...

class ListLeasesRequest(_message.Message):
    __slots__ = ("resource", "slurm_job_id")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    SLURM_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    resource: str
    slurm_job_id: str
    def __init__(self, resource: _Optional[str] = ..., slurm_job_id: _Optional[str] = ...) -> None: ...

class ListLeasesResponse(_message.Message):
    __slots__ = ("leases",)
    LEASES_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    def __init__(self, leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ...) -> None: ...

class StartTaskRequest(_message.Message):
    __slots__ = ("resource", "payload", "lease_token", "client_request_id", "priority", "allow_fallback")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ALLOW_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    resource: str
    payload: Payload
    lease_token: str
    client_request_id: str
    priority: str
    allow_fallback: bool
    def __init__(self, resource: _Optional[str] = ..., payload: _Optional[_Union[Payload, _Mapping]] = ..., lease_token: _Optional[str] = ..., client_request_id: _Optional[str] = ..., priority: _Optional[str] = ..., allow_fallback: _Optional[bool] = ...) -> None: ...

class StopTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class WatchTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GetTaskResultRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class ResultChunk(_message.Message):
    __slots__ = ("content_type", "total_size", "data")
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    content_type: str
    total_size: int
    data: bytes
    def __init__(self, content_type: _Optional[str] = ..., total_size: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class RunTaskResponse(_message.Message):
    __slots__ = ("task", "result_chunk")
    TASK_FIELD_NUMBER: _ClassVar[int]
    RESULT_CHUNK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    result_chunk: ResultChunk
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ..., result_chunk: _Optional[_Union[ResultChunk, _Mapping]] = ...) -> None: ...

class GetTaskLogsRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class TaskLogs(_message.Message):
    __slots__ = ("task_id", "text")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    text: str
    def __init__(self, task_id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("resource", "states", "owner", "all_users", "limit", "page_size", "page_token")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    ALL_USERS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    resource: str
    states: _containers.RepeatedScalarFieldContainer[TaskState]
    owner: str
    all_users: bool
    limit: int
    page_size: int
    page_token: str
    def __init__(self, resource: _Optional[str] = ..., states: _Optional[_Iterable[_Union[TaskState, str]]] = ..., owner: _Optional[str] = ..., all_users: _Optional[bool] = ..., limit: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "next_page_token")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    next_page_token: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Allocation(_message.Message):
    __slots__ = ("account", "resources", "limit", "qpu_seconds", "shots", "period", "used_qpu_seconds", "used_shots", "reset_time")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    QPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SHOTS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    USED_QPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    USED_SHOTS_FIELD_NUMBER: _ClassVar[int]
    RESET_TIME_FIELD_NUMBER: _ClassVar[int]
    account: str
    resources: _containers.RepeatedScalarFieldContainer[str]
    limit: str
    qpu_seconds: float
    shots: int
    period: str
    used_qpu_seconds: float
    used_shots: int
    reset_time: _timestamp_pb2.Timestamp
    def __init__(self, account: _Optional[str] = ..., resources: _Optional[_Iterable[str]] = ..., limit: _Optional[str] = ..., qpu_seconds: _Optional[float] = ..., shots: _Optional[int] = ..., period: _Optional[str] = ..., used_qpu_seconds: _Optional[float] = ..., used_shots: _Optional[int] = ..., reset_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListMyAllocationsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAllocationsResponse(_message.Message):
    __slots__ = ("allocations",)
    ALLOCATIONS_FIELD_NUMBER: _ClassVar[int]
    allocations: _containers.RepeatedCompositeFieldContainer[Allocation]
    def __init__(self, allocations: _Optional[_Iterable[_Union[Allocation, _Mapping]]] = ...) -> None: ...
