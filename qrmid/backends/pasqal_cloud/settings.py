"""Config keys of a ``pasqal-cloud`` resource, named as QRMI names them (``QRMI_PASQAL_CLOUD_*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, Field, SecretStr, model_validator
from pydantic_core import PydanticCustomError

from qrmid.backends.settings import ResourceSettings

PUBLIC_CLIENT_ID = "PeZvo7Atx7IVv3iel59asJSb4Ig7vuSB"  # Pasqal's public Auth0 client for the password grant


class Settings(ResourceSettings, populate_by_name=True):
    """One Pasqal Cloud device type, reached through Pasqal Cloud Services, with its tasks packed into open
    batches."""

    DISPATCH_KEYS = ("project_id",)

    type: Literal["pasqal-cloud"]
    device_type: str = Field("", description="device type (FRESNEL, EMU_MPS, ...); default: the resource name")
    project_id: str | None = Field(alias="QRMI_PASQAL_CLOUD_PROJECT_ID", description="required unless dispatch = false")
    base_url: AnyHttpUrl = Field(AnyHttpUrl("https://apis.pasqal.cloud"), alias="QRMI_PASQAL_CLOUD_BASE_URL",
                                 description="service root; the core API is under /core-fast")
    auth_endpoint: str = Field("authenticate.pasqal.cloud/oauth/token", alias="QRMI_PASQAL_CLOUD_AUTH_ENDPOINT",
                               description="Auth0 token URL (https:// is added when it has no scheme)")
    auth_token: SecretStr | None = Field(None, alias="QRMI_PASQAL_CLOUD_AUTH_TOKEN",
                                         description="a pre-issued token, used until it expires or is refused")
    client_id: str = Field("", alias="QRMI_PASQAL_CLOUD_CLIENT_ID", description="service account (client "
                           "credentials grant)")
    client_secret: SecretStr | None = Field(None, alias="QRMI_PASQAL_CLOUD_CLIENT_SECRET")
    username: str = Field("", alias="PASQAL_USERNAME", description="user account (password grant)")
    password: SecretStr | None = Field(None, alias="PASQAL_PASSWORD")
    audience: str = Field("https://apis.pasqal.cloud/account/api/v1", description="token audience (follows "
                          "the service tier)")
    slots: int = Field(100, ge=1, le=100_000, description="most tasks in flight (submitted, not finished) at once")
    batch_window_seconds: float = Field(60.0, gt=0, le=86_400, description="complete an open batch this long after "
                                        "opening it; keep it below the service's open-batch time-out")
    max_jobs_per_batch: int = Field(100, ge=1, le=100_000, description="complete a batch once it holds this many jobs; "
                                    "1: one batch per task")
    max_runs_per_batch: int = Field(0, ge=0, le=10**9, description="complete a batch once its jobs add up to this many "
                                    "runs; 0: no limit")
    close_when_idle: bool = Field(True, description="complete the open batch once the resource's queue is "
                                  "empty and every job of the batch has finished")
    min_poll_interval: float = Field(0.05, ge=0.01, le=3600, description="shortest wait between two polls of a "
                                     "batch, when its jobs are expected to end before poll_interval is up")
    request_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    retry_deadline_seconds: float = Field(120.0, gt=0, le=86_400, description="give up a failing call after this long")

    @model_validator(mode="after")
    def _credentials(self) -> Settings:
        if not self.dispatch:  # none are needed (and none are held: ResourceSettings)
            return self
        # a "missing" error: config errors then name the keys without echoing the table and its secrets
        if bool(self.client_id) != bool(self.client_secret):
            raise PydanticCustomError("missing", "QRMI_PASQAL_CLOUD_CLIENT_ID and _CLIENT_SECRET go together")
        if bool(self.username) != bool(self.password):
            raise PydanticCustomError("missing", "PASQAL_USERNAME and PASQAL_PASSWORD go together")
        if not (self.auth_token or self.client_id or self.username):
            raise PydanticCustomError("missing", "credentials are missing: set QRMI_PASQAL_CLOUD_CLIENT_ID and "
                                      "_CLIENT_SECRET, PASQAL_USERNAME and PASQAL_PASSWORD, or "
                                      "QRMI_PASQAL_CLOUD_AUTH_TOKEN")
        return self

    @property
    def device(self) -> str:
        return self.device_type or self.name
