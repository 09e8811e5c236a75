"""``QRMIService`` under the module path of older ``qrmi`` Pulser examples (``qrmi.pulser.service``)."""

from qrmid.qrmi.resource import QRMIService

__all__ = ["QRMIService"]
