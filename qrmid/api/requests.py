"""What every servicer needs of a request: the context type and a check of required fields."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc

from qrmid.core.errors import InvalidArgument

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def required(value: str, field: str) -> str:
    """``value``, or INVALID_ARGUMENT naming ``field`` when it is empty."""
    if not value:
        raise InvalidArgument(f"{field} is required")
    return value
