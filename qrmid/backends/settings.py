"""Config keys every resource has, whatever its type; each adapter's ``Settings`` extends them."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
T = TypeVar("T")
_BOOL = TypeAdapter(bool)


class ResourceSettings(BaseModel):
    """Name and scheduling keys of one resource."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    #: keys (addresses, account) a resource needs only to dispatch: each type declares them ``X | None`` without a
    #: default, so they are required as any key when ``dispatch`` is true, and are left unset when it is false
    DISPATCH_KEYS: ClassVar[tuple[str, ...]] = ()

    name: str = Field(pattern=NAME_PATTERN, description="unique resource name (letters, digits, _ . -)")
    dispatch: bool = Field(True, description="cluster mode: whether this member may dispatch the resource (it holds "
                           "the resource's credentials); false: it accepts and serves the resource's tasks with the "
                           "status and target its dispatcher publishes, and needs no credentials")
    queue_limit: int = Field(10_000, ge=1, le=1_000_000, description="most tasks waiting in the resource's queue")
    max_leases: int = Field(0, ge=0, le=1_000_000, description="most live leases on the resource; 0: no limit")
    min_slots_cap: int = Field(0, ge=0, le=1_000_000, description="most slots one lease may keep free for its tasks "
                               "(Acquire min_slots); 0: leases may keep none")
    status_interval: float = Field(10.0, gt=0, le=3600, description="seconds between backend status checks")
    poll_interval: float = Field(1.0, gt=0, le=3600, description="seconds between polls of a running job")
    busy_deadline_seconds: float = Field(3600.0, gt=0, le=30 * 86_400, description="fail a task the backend keeps refusing "
                                         "(lanes full, reserved) for this long")
    default_class: str | None = Field(None, description="priority class of tasks naming none; unset: [scheduling]'s")
    max_queued_per_owner: int | None = Field(None, ge=0, le=1_000_000, description="overrides [scheduling] max_queued_per_owner")
    max_running_per_owner: int | None = Field(None, ge=0, le=1_000_000, description="overrides [scheduling] max_running_per_owner")
    max_shots_per_task: int | None = Field(None, ge=0, le=10**12, description="overrides [scheduling] max_shots_per_task")
    slurm_gate: bool = Field(False, description="hold new Slurm jobs asking for the resource's license PENDING while "
                             "it is offline, paused or draining (slurm/README.md)")
    slurm_license: str = Field("", pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,63})?$", description="the Slurm "
                               "license slurm_gate holds; empty: the resource's name")
    max_task_shots: int = Field(10**9, ge=1, le=10**12, description="most shots a task may count in all (every pub "
                                "times its parameter sets); more is refused as invalid at submit")

    @model_validator(mode="before")
    @classmethod
    def _dispatch_keys(cls, data: Any) -> Any:
        """Without ``dispatch``, the keys only dispatching needs are unset; with it, each must be given."""
        if not cls.DISPATCH_KEYS or not isinstance(data, dict):
            return data
        try:
            dispatching = _BOOL.validate_python(data.get("dispatch", True))
        except ValidationError:
            return data  # the dispatch key itself reports the fault
        keys = {cls.model_fields[name].alias or name: name for name in cls.DISPATCH_KEYS}
        if dispatching:  # one given as None is missing
            return {key: value for key, value in data.items()
                    if value is not None or (key not in keys and key not in keys.values())}
        return {**{alias: None for alias, name in keys.items() if alias not in data and name not in data}, **data}

    @model_validator(mode="after")
    def _no_secret_without_dispatch(self) -> ResourceSettings:
        if not self.dispatch and (secrets := self.secret_keys()):
            raise ValueError(f"resource {self.name!r} has dispatch = false but sets {', '.join(secrets)}: a member "
                             "that does not dispatch a resource never uses its credentials, so they stay out of its "
                             "config; remove them, or set dispatch = true if this member may dispatch the resource")
        return self

    def secret_keys(self) -> list[str]:
        """The keys holding a secret that is set, named as in the config file."""
        return [type(self).model_fields[name].alias or name for name, value in self
                if (isinstance(value, SecretStr) and value.get_secret_value())
                or (isinstance(value, dict) and any(isinstance(item, SecretStr) for item in value.values()))]


def given(value: T | None) -> T:
    """A key of ``DISPATCH_KEYS`` on a dispatching resource, where loading the config made sure it is set."""
    assert value is not None, "a dispatching resource has every key dispatching needs"
    return value
