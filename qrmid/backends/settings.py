"""Config keys every resource has, whatever its type; each adapter's ``Settings`` extends them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ResourceSettings(BaseModel):
    """Name and scheduling keys of one resource."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str = Field(pattern=NAME_PATTERN, description="unique resource name (letters, digits, _ . -)")
    queue_limit: int = Field(10_000, ge=1, le=1_000_000, description="most tasks waiting in the resource's queue")
    max_leases: int = Field(0, ge=0, le=1_000_000, description="most live leases on the resource; 0: no limit")
    status_interval: float = Field(10.0, gt=0, le=3600, description="seconds between backend status checks")
    poll_interval: float = Field(1.0, gt=0, le=3600, description="seconds between polls of a running job")
    busy_deadline_seconds: float = Field(3600.0, gt=0, le=30 * 86_400, description="fail a task the backend keeps refusing "
                                         "(lanes full, reserved) for this long")
    default_class: str | None = Field(None, description="priority class of tasks naming none; unset: [scheduling]'s")
    max_queued_per_owner: int | None = Field(None, ge=0, le=1_000_000, description="overrides [scheduling] max_queued_per_owner")
    max_running_per_owner: int | None = Field(None, ge=0, le=1_000_000, description="overrides [scheduling] max_running_per_owner")
    max_shots_per_task: int | None = Field(None, ge=0, le=10**12, description="overrides [scheduling] max_shots_per_task")
    max_task_shots: int = Field(10**9, ge=1, le=10**12, description="most shots a task may count in all (every pub "
                                "times its parameter sets); more is refused as invalid at submit")
