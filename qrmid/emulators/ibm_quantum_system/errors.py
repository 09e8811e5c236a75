"""The API's error bodies: the standard ``{status_code, trace, correlation_id, errors[]}`` shape and IAM's own."""

from __future__ import annotations

import secrets
import uuid

from starlette.responses import JSONResponse

MORE_INFO = "https://cloud.ibm.com/apidocs/quantum-computing#error-handling"

# Codes of the API (``errors[].code``, strings on the wire).
INVALID_REQUEST = "1337"  # 400: request validation failed (older servers' code)
NOT_AUTHORIZED = "1200"
INVALID_CREDENTIALS = "1201"
BACKEND_NOT_FOUND = "1216"
JOB_NOT_FOUND = "1291"
DUPLICATE_JOB = "1231"
NOT_CANCELLABLE = "1306"
NOT_DELETABLE = "1337"  # 409: deleting a non-terminal job
RESERVED = "1233"
LANES_FULL = "1232"


class ApiError(Exception):
    """Raised by a route to answer with the standard error body."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str = "",
        *,
        value: str = "",
        target: tuple[str, str] | None = None,
        solution: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.value = value
        self.target = target
        self.solution = solution

    def response(self) -> JSONResponse:
        entry: dict = {"code": self.code, "message": self.message, "more_info": MORE_INFO, "location": ""}
        if self.value:
            entry["value"] = self.value
        if self.target is not None:
            entry["target"] = {"name": self.target[0], "type": self.target[1]}
        if self.solution:
            entry["solution"] = self.solution
        body = {
            "status_code": self.status,
            "title": self.message,
            "trace": str(uuid.uuid4()),
            "correlation_id": secrets.token_hex(10),
            "errors": [entry],
        }
        return JSONResponse(body, status_code=self.status)


# Injected faults with these statuses carry the code the real condition has, so clients react to them alike.
FAULT_CODES = {401: INVALID_CREDENTIALS, 423: RESERVED, 429: LANES_FULL}


def error_body(status: int, message: str) -> JSONResponse:
    """Standard error body for injected faults."""
    return ApiError(status, message, FAULT_CODES.get(status, "")).response()


def iam_error(code: str, message: str) -> JSONResponse:
    """IAM's error body (always 400 for the two errors the token route can give)."""
    return JSONResponse({"errorCode": code, "errorMessage": message, "errorDetails": None}, status_code=400)
