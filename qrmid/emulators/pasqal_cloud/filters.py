"""Query-string filters of the list and bulk endpoints (repeated keys mean "any of")."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from starlette.requests import Request

from .envelope import ApiError
from .store import Batch, Job

TRUE = {"true", "1", "yes"}
FALSE = {"false", "0", "no"}


def _instant(text: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ApiError(422, f"Query parameter {name!r} is not an ISO 8601 date") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _flag(request: Request, name: str) -> bool | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise ApiError(422, f"Query parameter {name!r} must be a boolean")


def _number(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    try:
        return None if value is None else int(value)
    except ValueError as exc:
        raise ApiError(422, f"Query parameter {name!r} must be an integer") from exc


def _common(request: Request) -> Callable[[str, str], bool]:
    """A check on (id, created_at) shared by batches and jobs: ``id`` and the ``start_date``/``end_date`` range."""
    ids = request.query_params.getlist("id")
    start, end = request.query_params.get("start_date"), request.query_params.get("end_date")
    low = None if start is None else _instant(start, "start_date")
    high = None if end is None else _instant(end, "end_date")

    def keep(ident: str, created_at: str) -> bool:
        created = _instant(created_at, "created_at")
        return (not ids or ident in ids) and (low is None or created >= low) and (high is None or created <= high)

    return keep


def _any_of(request: Request, name: str, actual: str) -> bool:
    wanted = request.query_params.getlist(name)
    return not wanted or actual in wanted


def job_filter(request: Request, batches: dict[str, Batch]) -> Callable[[Job], bool]:
    """A predicate for ``GET /api/v2/jobs`` and the cancel/rebatch job filters."""
    common = _common(request)
    min_runs, max_runs = _number(request, "min_runs"), _number(request, "max_runs")
    with_errors = _flag(request, "errors")

    def keep(job: Job) -> bool:
        return (
            common(job.id, job.created_at)
            and _any_of(request, "project_id", job.project_id)
            and _any_of(request, "batch_id", job.batch_id)
            and _any_of(request, "user_id", batches[job.batch_id].user_id)
            and _any_of(request, "status", job.status)
            and (min_runs is None or job.runs >= min_runs)
            and (max_runs is None or job.runs <= max_runs)
            and (with_errors is None or bool(job.errors) == with_errors)
        )

    return keep


def batch_filter(request: Request) -> Callable[[Batch], bool]:
    """A predicate for ``GET /api/v1/batches``."""
    common = _common(request)
    is_open = _flag(request, "open")
    tag = request.query_params.get("tag")

    def keep(batch: Batch) -> bool:
        return (
            common(batch.id, batch.created_at)
            and _any_of(request, "project_id", batch.project_id)
            and _any_of(request, "user_id", batch.user_id)
            and _any_of(request, "device_type", batch.device_type)
            and _any_of(request, "status", batch.status)
            and _any_of(request, "queue_priority", "MEDIUM")
            and (is_open is None or batch.open == is_open)
            and (tag is None or tag in batch.tags)
        )

    return keep
