"""Config keys of an ``ibm-quantum-system`` resource, named as QRMI names them (``QRMI_IBM_QS_*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, Field, SecretStr

from qrmid.backends.settings import ResourceSettings

MAX_PRESIGN_SECONDS = 604_800  # SigV4 caps X-Amz-Expires at 7 days


class Settings(ResourceSettings, populate_by_name=True):
    """One IBM backend reached through the IBM Quantum System API."""

    type: Literal["ibm-quantum-system"]
    poll_interval: float = Field(0.25, gt=0, le=3600, description="longest wait between looks at a job near or "
                                 "past its expected end (and between all looks until one job has completed): a "
                                 "lane stays held until qrmid sees its job end")
    backend: str = Field("", description="backend name on the service; default: the resource name")
    DISPATCH_KEYS = ("endpoint", "iam_endpoint", "iam_apikey", "service_crn", "aws_access_key_id",
                     "aws_secret_access_key", "s3_endpoint", "s3_bucket", "s3_region")

    # required unless dispatch = false (DISPATCH_KEYS)
    endpoint: AnyHttpUrl | None = Field(alias="QRMI_IBM_QS_ENDPOINT")
    iam_endpoint: AnyHttpUrl | None = Field(alias="QRMI_IBM_QS_IAM_ENDPOINT")
    iam_apikey: SecretStr | None = Field(alias="QRMI_IBM_QS_IAM_APIKEY")
    service_crn: str | None = Field(alias="QRMI_IBM_QS_SERVICE_CRN")
    aws_access_key_id: SecretStr | None = Field(alias="QRMI_IBM_QS_AWS_ACCESS_KEY_ID")
    aws_secret_access_key: SecretStr | None = Field(alias="QRMI_IBM_QS_AWS_SECRET_ACCESS_KEY")
    s3_endpoint: AnyHttpUrl | None = Field(alias="QRMI_IBM_QS_S3_ENDPOINT")
    s3_bucket: str | None = Field(alias="QRMI_IBM_QS_S3_BUCKET")
    s3_region: str | None = Field(alias="QRMI_IBM_QS_S3_REGION")
    s3_endpoint_for_qsapi: AnyHttpUrl | None = Field(
        None, alias="QRMI_IBM_QS_S3_ENDPOINT_FOR_QSAPI", description="S3 endpoint as the service reaches it")
    job_timeout_seconds: int = Field(3600, ge=1, le=MAX_PRESIGN_SECONDS, alias="QRMI_JOB_TIMEOUT_SECONDS",
                                     description="limit on a job's system execution time")
    lanes: int = Field(5, ge=1, le=1000, description="lane count when the service has no /lanes route")
    max_lanes: int = Field(0, ge=0, le=1000, description="use at most this many lanes; 0: all the service grants")
    request_timeout_seconds: float = Field(60, gt=0, le=3600)
    retry_deadline_seconds: float = Field(120, gt=0, le=86_400, description="give up a failing call after this long")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field("info", description="job log detail")
    delete_objects: bool = Field(True, description="remove a job's S3 objects once its results are stored")
