"""The JSend envelope, API errors, request bodies (plain or gzip) and list pagination of the core API."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

MESSAGES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    422: "Unprocessable entity",
    429: "Too many requests",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


class ApiError(Exception):
    """A failure answered in the error envelope with ``status`` and a description."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


def success(data: Any, pagination: dict[str, int] | None = None, headers: dict[str, str] | None = None) -> Response:
    """A 200 response carrying ``data`` (and ``pagination`` for list endpoints)."""
    body: dict[str, Any] = {"status": "success", "message": "OK.", "code": "200", "data": data}
    if pagination is not None:
        body["pagination"] = pagination
    return JSONResponse(body, headers=headers)


def error_body(status: int, description: str) -> Response:
    """The error envelope: ``fail`` for client errors, ``error`` for server errors, ``code`` as a string."""
    body = {
        "status": "fail" if status < 500 else "error",
        "message": MESSAGES.get(status, "Error"),
        "code": str(status),
        "data": {"description": description},
    }
    headers = {"Retry-After": "1"} if status == 429 else None
    return JSONResponse(body, status_code=status, headers=headers)


async def read_json(request: Request) -> Any:
    """The decoded JSON body, gunzipped first when ``Content-Encoding: gzip``; 422 when it is not JSON."""
    raw = await request.body()
    if "gzip" in request.headers.get("content-encoding", "").lower():
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ApiError(400, f"Body is not valid gzip: {exc}") from exc
    try:
        return json.loads(raw) if raw else None
    except ValueError as exc:
        raise ApiError(422, f"Body is not valid JSON: {exc}") from exc


def _query_int(request: Request, name: str, default: int, low: int, high: int | None = None) -> int:
    """An integer query parameter within bounds, else 422."""
    value = request.query_params.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise ApiError(422, f"Query parameter {name!r} must be an integer") from exc
    if number < low or (high is not None and number > high):
        raise ApiError(422, f"Query parameter {name!r} must be between {low} and {high if high is not None else 'inf'}")
    return number


def paginate(
    request: Request, items: Sequence[Any], sort_keys: dict[str, Callable[[Any], Any]], render: Callable[[Any], Any]
) -> Response:
    """One page of ``items`` per ``limit``/``offset``/``order_by``/``order_by_direction`` with ``pagination``."""
    limit = _query_int(request, "limit", 100, 1, 100)
    offset = _query_int(request, "offset", 0, 0)
    order_by = request.query_params.get("order_by", "created_at")
    if order_by not in sort_keys:
        raise ApiError(422, f"Cannot order by {order_by!r}; one of {sorted(sort_keys)}")
    direction = request.query_params.get("order_by_direction", "DESC").upper()
    if direction not in ("ASC", "DESC"):
        raise ApiError(422, "order_by_direction must be ASC or DESC")
    ordered = sorted(items, key=sort_keys[order_by], reverse=direction == "DESC")
    page = ordered[offset : offset + limit]
    end = offset + len(page)
    content_range = f"{offset + 1}-{end}/{len(ordered)}" if page else f"*/{len(ordered)}"
    return success(
        [render(item) for item in page],
        pagination={"total": len(ordered), "start": offset, "end": end},
        headers={"Content-Range": content_range},
    )
