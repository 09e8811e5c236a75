"""Settings of the Pasqal Cloud emulator: accounts, token lifetime, timings and execution limits.

Loaded from an optional JSON file (``--config``); every key has a default so the emulator runs without one.
The timing keys can also be changed at run time through ``POST /_emulator/settings``.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

PUBLIC_CLIENT_ID = "PeZvo7Atx7IVv3iel59asJSb4Ig7vuSB"
AUDIENCE = "https://apis.pasqal.cloud/account/api/v1"
DEFAULT_PROJECT = "00000000-0000-0000-0000-0000000000a1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class User(_Strict):
    """A person logging in with the password-realm grant."""

    username: str
    password: str
    user_id: str
    projects: list[str] = Field(default_factory=lambda: [DEFAULT_PROJECT])


class ServiceAccount(_Strict):
    """A machine client using the client_credentials grant."""

    client_id: str
    client_secret: str
    user_id: str
    projects: list[str] = Field(default_factory=lambda: [DEFAULT_PROJECT])


class DeviceOverride(_Strict):
    """Initial state of one device type."""

    status: str = "UP"
    availability: str = "ACTIVE"


class Timings(_Strict):
    """Durations steering the device model; all in seconds."""

    token_lifetime_s: float = 86400.0
    batch_overhead_s: float = 2.0
    job_duration_s: float = 1.0
    open_batch_timeout_s: float = 60.0


class EmulatorConfig(Timings):
    """Everything the emulator process is started with."""

    users: list[User] = Field(
        default_factory=lambda: [User(username="user@example.org", password="password", user_id="user-0001")]
    )
    service_accounts: list[ServiceAccount] = Field(
        default_factory=lambda: [
            ServiceAccount(client_id="service-client", client_secret="service-secret", user_id="service-0001")
        ]
    )
    public_client_id: str = PUBLIC_CLIENT_ID
    realm: str = "pcs-users"
    audiences: list[str] = Field(default_factory=lambda: [AUDIENCE])
    auth_domain: str = "authenticate.pasqal.cloud"
    jwt_secret: str = "pasqal-cloud-emulator-secret-key-32b"
    max_exact_atoms: int = Field(default=10, ge=0)
    workers: int = Field(default=1, ge=1)
    seed: int = 0
    devices: dict[str, DeviceOverride] = Field(default_factory=dict)

    @classmethod
    def load(cls, path: str | None) -> EmulatorConfig:
        """Read a JSON config file, or return the defaults when no path is given."""
        if path is None:
            return cls()
        return cls.model_validate(json.loads(Path(path).read_text()))
