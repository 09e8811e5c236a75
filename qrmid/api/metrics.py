"""MetricsService: per-resource utilization for everyone, accounting records for their owners and admins."""

from __future__ import annotations

import base64
import binascii
import itertools
import math

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from qrmid.api.convert import timestamp
from qrmid.api.identity import caller
from qrmid.api.status import unary
from qrmid.core.broker import Broker
from qrmid.core.errors import InvalidArgument, PermissionDenied
from qrmid.core.tasks import TaskState
from qrmid.ops.accounting import AccountingSource, Filters, UsageRecord
from qrmid.v1 import metrics_pb2 as mpb
from qrmid.v1 import metrics_pb2_grpc as mpb_grpc
from qrmid.v1 import quantum_resources_pb2 as pb

DEFAULT_WINDOW = 3600
DEFAULT_PAGE = 1000
MAX_PAGE = 10_000
_TOKEN_PREFIX = "after:"
INT64_MAX = (1 << 63) - 1
LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z, the last instant a Timestamp holds


class MetricsService(mpb_grpc.MetricsServiceServicer):
    """Reads live figures from the broker and history from an ``AccountingSource``."""

    def __init__(self, broker: Broker, source: AccountingSource) -> None:
        self.broker = broker
        self.source = source

    @unary
    async def GetUtilization(self, request: mpb.GetUtilizationRequest,
                             context: grpc.aio.ServicerContext) -> mpb.GetUtilizationResponse:
        window = request.window_seconds or DEFAULT_WINDOW
        names = [self.broker.resource(request.resource).name] if request.resource else list(self.broker.resources)
        response = mpb.GetUtilizationResponse()
        for name in names:
            view = self.broker.resources[name].view()
            used = self.source.utilization(name, window)
            capacity = view.slots_total * window
            response.resources.append(mpb.ResourceUtilization(
                resource=name, slots_total=view.slots_total, slots_busy=view.running_tasks,
                queue_depth=view.queue_length,
                busy_fraction=min(1.0, used.busy_slot_seconds / capacity) if capacity else 0.0,
                tasks_completed=used.ended[TaskState.COMPLETED], tasks_failed=used.ended[TaskState.FAILED],
                tasks_cancelled=used.ended[TaskState.CANCELLED], shots=_int64(used.shots), qpu_seconds=used.qpu_seconds,
                window_seconds=window))
        return response

    @unary
    async def ListAccounting(self, request: mpb.ListAccountingRequest,
                             context: grpc.aio.ServicerContext) -> mpb.ListAccountingResponse:
        who = caller(context)
        owner = request.owner
        if not who.admin:
            if owner and owner != who.name:
                raise PermissionDenied(f"only admins may list another user's accounting records ({owner!r}); "
                                       "leave owner empty for your own")
            owner = who.name
        size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        filters = Filters(owner=owner, account=request.account, resource=request.resource,
                          slurm_job_id=request.slurm_job_id,
                          since=_seconds(request, "start_time"), until=_seconds(request, "end_time"),
                          after_seq=_decode(request.page_token))
        page = list(itertools.islice(self.source.records(filters), size + 1))
        response = mpb.ListAccountingResponse(records=[_record(r) for r in page[:size]])
        if len(page) > size:
            response.next_page_token = _encode(page[size - 1].seq)
        return response


def _seconds(request: mpb.ListAccountingRequest, field: str) -> float | None:
    if not request.HasField(field):
        return None
    return getattr(request, field).ToNanoseconds() / 1e9


def _encode(seq: int) -> str:
    return base64.urlsafe_b64encode(f"{_TOKEN_PREFIX}{seq}".encode()).decode()


def _decode(token: str) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        if text.startswith(_TOKEN_PREFIX):
            return int(text.removeprefix(_TOKEN_PREFIX))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidArgument("page_token is not one this daemon issued: pass next_page_token from the previous page")


def _record(record: UsageRecord) -> mpb.AccountingRecord:
    return mpb.AccountingRecord(
        task_id=record.task_id, resource=record.resource, owner=record.owner, account=record.account,
        slurm_job_id=record.slurm_job_id, lease_id=record.lease_id,
        state=pb.TaskState.Value(f"TASK_STATE_{record.state.name}"), create_time=_time(record.created_at),
        start_time=_time(record.started_at), end_time=_time(record.ended_at), shots=_int64(record.shots),
        qpu_seconds=record.qpu_seconds, member=record.member)


def _int64(count: int) -> int:
    """``count`` within an int64 field: one record holding an absurd figure must not fail the whole answer."""
    return max(0, min(count, INT64_MAX))


def _time(seconds: float | None) -> Timestamp | None:
    """``seconds`` as a Timestamp, within the years 1970 to 9999 a Timestamp holds (None stays None)."""
    if seconds is None:
        return None
    return timestamp(max(0.0, min(seconds, LAST_SECOND)) if math.isfinite(seconds) else 0.0)
