"""A drop-in for the ``qrmi`` Python package that talks to qrmid: change ``import qrmi`` / ``from qrmi ...`` to
``qrmid.qrmi`` and QRMI programs run against the daemon. See docs/python.md for the differences."""

from qrmid.qrmi.errors import (
    AuthenticationFailedError,
    ConfigError,
    EnvVarNotSetError,
    InvalidInputError,
    QrmiError,
    ResourceNotFoundError,
    TaskNotFoundError,
    TaskNotReadyError,
    UnsupportedFunctionError,
    UnsupportedPayloadError,
    UnsupportedResourceTypeError,
)
from qrmid.qrmi.models import (
    Payload,
    ResourceCapacity,
    ResourceStatus,
    ResourceStatusCode,
    ResourceType,
    Target,
    TaskResult,
    TaskStatus,
)
from qrmid.qrmi.resource import QRMIService, QuantumResource, get_job_qpu_resources_and_types

__all__ = [
    "AuthenticationFailedError", "ConfigError", "EnvVarNotSetError", "InvalidInputError", "Payload",
    "QRMIService", "QrmiError", "QuantumResource", "ResourceCapacity", "ResourceNotFoundError", "ResourceStatus",
    "ResourceStatusCode", "ResourceType", "Target", "TaskNotFoundError", "TaskNotReadyError", "TaskResult",
    "TaskStatus", "UnsupportedFunctionError", "UnsupportedPayloadError", "UnsupportedResourceTypeError",
    "get_job_qpu_resources_and_types",
]
