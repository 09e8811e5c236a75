"""``qrmi.primitives.ibm`` on qrmid: ``SamplerV2``, ``EstimatorV2``, ``get_backend``, ``get_target``."""

from __future__ import annotations

import warnings

from qiskit.transpiler import Target

from qrmid.integrations.qiskit import QrmidBackend
from qrmid.qrmi.primitives.base import QRMIBaseEstimatorV2, QRMIBaseSamplerV2
from qrmid.qrmi.resource import QuantumResource

__all__ = ["EstimatorV2", "SamplerV2", "get_backend", "get_target"]


class SamplerV2(QRMIBaseSamplerV2):
    """SamplerV2 for QRMI."""


class EstimatorV2(QRMIBaseEstimatorV2):
    """EstimatorV2 for QRMI."""


def get_backend(qrmi: QuantumResource, use_fractional_gates: bool | None = False) -> QrmidBackend:
    """The resource as a Qiskit ``BackendV2`` built from its target."""
    return QrmidBackend(qrmi.resource_id(), qrmi._connection, bool(use_fractional_gates))


def get_target(qrmi: QuantumResource) -> Target:
    """The resource's transpiler target (deprecated in ``qrmi`` 0.26.3 for ``get_backend(qrmi).target``)."""
    warnings.warn("`get_target` function is deprecated as of qrmi 0.26.3, use get_backend().target instead.",
                  DeprecationWarning, stacklevel=2)
    return get_backend(qrmi).target
