"""``qrmi``: any QRMI resource type (IBM Quantum Compute Service, Pasqal Local, IQM, Alice & Bob, OQTOPUS, ...)
served through QRMI's own ``qrmi`` package, behind qrmid's queue, leases and journal.

Each call blocks, and one handle must not be used by two threads at once: calls run in ``slots`` worker threads,
each with its own handle, built with ``QuantumResource.from_config`` (no environment variables).
"""

from qrmid.backends.qrmi_package.adapter import QrmiPackage
from qrmid.backends.qrmi_package.settings import Settings

__all__ = ["QrmiPackage", "Settings"]
