"""Emulator of the IBM Quantum System API (formerly "Direct Access API") v1, served over real HTTP.

IAM token exchange, backends with a real device's configuration and properties (qiskit-ibm-runtime fake
backends), jobs whose data flows through S3 presigned URLs, execution lanes, and sampler/estimator runs on a
qiskit-aer simulator of the device in worker processes. Run it with
``python -m qrmid.emulators.ibm_quantum_system --port PORT [--host 127.0.0.1] [--config FILE]``.
"""

from .app import build_app
from .config import EmulatorConfig, load_config

__all__ = ["EmulatorConfig", "build_app", "load_config"]
