"""``qrmi.primitives`` on qrmid: ``QRMIService``, the Sampler/Estimator V2 base classes and ``RuntimeJobV2``."""

from qrmid.qrmi.primitives.base import QRMIBaseEstimatorV2, QRMIBaseSamplerV2, RuntimeJobV2
from qrmid.qrmi.resource import QRMIService

__all__ = ["QRMIBaseEstimatorV2", "QRMIBaseSamplerV2", "QRMIService", "RuntimeJobV2"]
