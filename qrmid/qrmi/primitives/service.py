"""``QRMIService`` under ``qrmi.primitives.service``, the import path of earlier ``qrmi`` releases."""

from qrmid.qrmi.resource import QRMIService

__all__ = ["QRMIService"]
