import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from qrmid.v1 import quantum_resources_pb2 as _quantum_resources_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DrainResourceRequest(_message.Message):
    __slots__ = ("resource", "reason")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    resource: str
    reason: str
    def __init__(self, resource: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ResumeResourceRequest(_message.Message):
    __slots__ = ("resource",)
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    resource: str
    def __init__(self, resource: _Optional[str] = ...) -> None: ...

class ReloadConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadConfigResponse(_message.Message):
    __slots__ = ("added", "removed", "changed")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    added: _containers.RepeatedScalarFieldContainer[str]
    removed: _containers.RepeatedScalarFieldContainer[str]
    changed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, added: _Optional[_Iterable[str]] = ..., removed: _Optional[_Iterable[str]] = ..., changed: _Optional[_Iterable[str]] = ...) -> None: ...

class ListQueuesRequest(_message.Message):
    __slots__ = ("resource", "owner")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    resource: str
    owner: str
    def __init__(self, resource: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class ListQueuesResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[_quantum_resources_pb2.Task]
    def __init__(self, tasks: _Optional[_Iterable[_Union[_quantum_resources_pb2.Task, _Mapping]]] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("task_id", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ListAllLeasesRequest(_message.Message):
    __slots__ = ("resource", "owner")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    resource: str
    owner: str
    def __init__(self, resource: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class RevokeLeaseRequest(_message.Message):
    __slots__ = ("lease_id", "reason")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    reason: str
    def __init__(self, lease_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SetLogLevelRequest(_message.Message):
    __slots__ = ("level",)
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    level: str
    def __init__(self, level: _Optional[str] = ...) -> None: ...

class SetLogLevelResponse(_message.Message):
    __slots__ = ("previous",)
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    previous: str
    def __init__(self, previous: _Optional[str] = ...) -> None: ...

class ListQuarantineRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class QuarantinedRow(_message.Message):
    __slots__ = ("id", "source", "row_id", "key", "reason", "quarantine_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ROW_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    QUARANTINE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: int
    source: str
    row_id: int
    key: str
    reason: str
    quarantine_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., source: _Optional[str] = ..., row_id: _Optional[int] = ..., key: _Optional[str] = ..., reason: _Optional[str] = ..., quarantine_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListQuarantineResponse(_message.Message):
    __slots__ = ("journal", "rows")
    JOURNAL_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    journal: str
    rows: _containers.RepeatedCompositeFieldContainer[QuarantinedRow]
    def __init__(self, journal: _Optional[str] = ..., rows: _Optional[_Iterable[_Union[QuarantinedRow, _Mapping]]] = ...) -> None: ...

class ListMembersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClusterMember(_message.Message):
    __slots__ = ("name", "start_time", "heartbeat_time", "healthy", "handing_over", "dispatches")
    NAME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIME_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    HANDING_OVER_FIELD_NUMBER: _ClassVar[int]
    DISPATCHES_FIELD_NUMBER: _ClassVar[int]
    name: str
    start_time: _timestamp_pb2.Timestamp
    heartbeat_time: _timestamp_pb2.Timestamp
    healthy: bool
    handing_over: bool
    dispatches: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., heartbeat_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., healthy: _Optional[bool] = ..., handing_over: _Optional[bool] = ..., dispatches: _Optional[_Iterable[str]] = ...) -> None: ...

class Dispatcher(_message.Message):
    __slots__ = ("resource", "member", "epoch", "since_time")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SINCE_TIME_FIELD_NUMBER: _ClassVar[int]
    resource: str
    member: str
    epoch: int
    since_time: _timestamp_pb2.Timestamp
    def __init__(self, resource: _Optional[str] = ..., member: _Optional[str] = ..., epoch: _Optional[int] = ..., since_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListMembersResponse(_message.Message):
    __slots__ = ("member", "members", "dispatchers")
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    DISPATCHERS_FIELD_NUMBER: _ClassVar[int]
    member: str
    members: _containers.RepeatedCompositeFieldContainer[ClusterMember]
    dispatchers: _containers.RepeatedCompositeFieldContainer[Dispatcher]
    def __init__(self, member: _Optional[str] = ..., members: _Optional[_Iterable[_Union[ClusterMember, _Mapping]]] = ..., dispatchers: _Optional[_Iterable[_Union[Dispatcher, _Mapping]]] = ...) -> None: ...

class HandoverRequest(_message.Message):
    __slots__ = ("member", "back")
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    BACK_FIELD_NUMBER: _ClassVar[int]
    member: str
    back: bool
    def __init__(self, member: _Optional[str] = ..., back: _Optional[bool] = ...) -> None: ...

class ListSlurmGatesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SlurmGate(_message.Message):
    __slots__ = ("resource", "license", "reservation", "state", "detail")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    LICENSE_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    resource: str
    license: str
    reservation: str
    state: str
    detail: str
    def __init__(self, resource: _Optional[str] = ..., license: _Optional[str] = ..., reservation: _Optional[str] = ..., state: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class ListSlurmGatesResponse(_message.Message):
    __slots__ = ("gates",)
    GATES_FIELD_NUMBER: _ClassVar[int]
    gates: _containers.RepeatedCompositeFieldContainer[SlurmGate]
    def __init__(self, gates: _Optional[_Iterable[_Union[SlurmGate, _Mapping]]] = ...) -> None: ...

class CreateWindowRequest(_message.Message):
    __slots__ = ("window",)
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    window: _quantum_resources_pb2.Window
    def __init__(self, window: _Optional[_Union[_quantum_resources_pb2.Window, _Mapping]] = ...) -> None: ...

class ListWindowsRequest(_message.Message):
    __slots__ = ("resource",)
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    resource: str
    def __init__(self, resource: _Optional[str] = ...) -> None: ...

class ListWindowsResponse(_message.Message):
    __slots__ = ("windows",)
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    windows: _containers.RepeatedCompositeFieldContainer[_quantum_resources_pb2.Window]
    def __init__(self, windows: _Optional[_Iterable[_Union[_quantum_resources_pb2.Window, _Mapping]]] = ...) -> None: ...

class DeleteWindowRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class SetAllocationRequest(_message.Message):
    __slots__ = ("allocation",)
    ALLOCATION_FIELD_NUMBER: _ClassVar[int]
    allocation: _quantum_resources_pb2.Allocation
    def __init__(self, allocation: _Optional[_Union[_quantum_resources_pb2.Allocation, _Mapping]] = ...) -> None: ...

class ListAllocationsRequest(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: str
    def __init__(self, account: _Optional[str] = ...) -> None: ...

class DeleteAllocationRequest(_message.Message):
    __slots__ = ("account", "resources")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    account: str
    resources: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, account: _Optional[str] = ..., resources: _Optional[_Iterable[str]] = ...) -> None: ...
