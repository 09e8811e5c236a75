import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from qrmid.v1 import quantum_resources_pb2 as _quantum_resources_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetUtilizationRequest(_message.Message):
    __slots__ = ("resource", "window_seconds")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    resource: str
    window_seconds: int
    def __init__(self, resource: _Optional[str] = ..., window_seconds: _Optional[int] = ...) -> None: ...

class ResourceUtilization(_message.Message):
    __slots__ = ("resource", "slots_total", "slots_busy", "queue_depth", "busy_fraction", "tasks_completed", "tasks_failed", "tasks_cancelled", "shots", "qpu_seconds", "window_seconds")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    SLOTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SLOTS_BUSY_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    BUSY_FRACTION_FIELD_NUMBER: _ClassVar[int]
    TASKS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    TASKS_FAILED_FIELD_NUMBER: _ClassVar[int]
    TASKS_CANCELLED_FIELD_NUMBER: _ClassVar[int]
    SHOTS_FIELD_NUMBER: _ClassVar[int]
    QPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    resource: str
    slots_total: int
    slots_busy: int
    queue_depth: int
    busy_fraction: float
    tasks_completed: int
    tasks_failed: int
    tasks_cancelled: int
    shots: int
    qpu_seconds: float
    window_seconds: int
    def __init__(self, resource: _Optional[str] = ..., slots_total: _Optional[int] = ..., slots_busy: _Optional[int] = ..., queue_depth: _Optional[int] = ..., busy_fraction: _Optional[float] = ..., tasks_completed: _Optional[int] = ..., tasks_failed: _Optional[int] = ..., tasks_cancelled: _Optional[int] = ..., shots: _Optional[int] = ..., qpu_seconds: _Optional[float] = ..., window_seconds: _Optional[int] = ...) -> None: ...

class GetUtilizationResponse(_message.Message):
    __slots__ = ("resources",)
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    resources: _containers.RepeatedCompositeFieldContainer[ResourceUtilization]
    def __init__(self, resources: _Optional[_Iterable[_Union[ResourceUtilization, _Mapping]]] = ...) -> None: ...

class ListAccountingRequest(_message.Message):
    __slots__ = ("start_time", "end_time", "owner", "account", "resource", "slurm_job_id", "page_size", "page_token")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    SLURM_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    owner: str
    account: str
    resource: str
    slurm_job_id: str
    page_size: int
    page_token: str
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., owner: _Optional[str] = ..., account: _Optional[str] = ..., resource: _Optional[str] = ..., slurm_job_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class AccountingRecord(_message.Message):
    __slots__ = ("task_id", "resource", "owner", "account", "slurm_job_id", "lease_id", "state", "create_time", "start_time", "end_time", "shots", "qpu_seconds", "member")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    SLURM_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    SHOTS_FIELD_NUMBER: _ClassVar[int]
    QPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    resource: str
    owner: str
    account: str
    slurm_job_id: str
    lease_id: str
    state: _quantum_resources_pb2.TaskState
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    shots: int
    qpu_seconds: float
    member: str
    def __init__(self, task_id: _Optional[str] = ..., resource: _Optional[str] = ..., owner: _Optional[str] = ..., account: _Optional[str] = ..., slurm_job_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., state: _Optional[_Union[_quantum_resources_pb2.TaskState, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., shots: _Optional[int] = ..., qpu_seconds: _Optional[float] = ..., member: _Optional[str] = ...) -> None: ...

class ListAccountingResponse(_message.Message):
    __slots__ = ("records", "next_page_token")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[AccountingRecord]
    next_page_token: str
    def __init__(self, records: _Optional[_Iterable[_Union[AccountingRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
