"""``ibm-quantum-system``: IBM on-prem systems through the IBM Quantum System API (formerly Direct Access).

Jobs are admitted per execution lane: the resource never holds more stored jobs on the backend than
``hpc_workload_manager.lanes``, and a lane is freed by DELETE once qrmid has the results and logs.
"""

from qrmid.backends.ibm_quantum_system.adapter import IbmQuantumSystem
from qrmid.backends.ibm_quantum_system.settings import Settings

__all__ = ["IbmQuantumSystem", "Settings"]
