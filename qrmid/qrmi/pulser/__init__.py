"""``qrmi.pulser`` on qrmid: ``PulserQRMIConnection``."""

from qrmid.qrmi.pulser.connection import PulserQRMIConnection

__all__ = ["PulserQRMIConnection"]
