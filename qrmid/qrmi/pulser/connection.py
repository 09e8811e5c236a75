"""``PulserQRMIConnection``: ``qrmi``'s Pulser ``RemoteConnection``, here qrmid's ``QrmidConnection`` over a
``QuantumResource`` (open batches are supported)."""

from __future__ import annotations

from typing import Any

from pulser import Sequence
from pulser.backend.remote import RemoteResults

from qrmid.integrations.job_env import lease_token
from qrmid.integrations.pulser import QrmidConnection
from qrmid.qrmi.models import ResourceType
from qrmid.qrmi.resource import QRMIService, QuantumResource

__all__ = ["PulserQRMIConnection"]

COMPATIBLE = (ResourceType.PasqalLocal, ResourceType.PasqalCloud, ResourceType.LocalPulser)


class PulserQRMIConnection(QrmidConnection):
    """A connection to a Pasqal QRMI resource: ``qrmi``, else the job's only accessible resource."""

    def __init__(self, qrmi: QuantumResource | None = None) -> None:
        self._qrmi = qrmi or self._resolve_single_resource()
        if self._qrmi.resource_type() not in COMPATIBLE:
            raise ValueError("PulserQRMIConnection can only be used with 'PasqalLocal', 'PasqalCloud' or "
                             f"'LocalPulser' QRMI resources, got: '{self._qrmi.resource_type()}'")
        super().__init__(self._qrmi.resource_id(), address=self._qrmi._connection.address,
                         lease_token=self._qrmi._lease or lease_token(self._qrmi.resource_id()))
        self._current_batch_id: str | None = None

    @staticmethod
    def _resolve_single_resource() -> QuantumResource:
        resources = QRMIService().resources()
        if len(resources) == 1:
            return resources[0]
        if not resources:
            raise RuntimeError("No accessible QRMI resource found. "
                               "Specify one explicitly with PulserQRMIConnection(qrmi=...).")
        names = ", ".join(resource.resource_id() for resource in resources)
        raise ValueError(f"Multiple QRMI resources are available in this job context: {names}. "
                         "Specify one explicitly with PulserQRMIConnection(qrmi=...).")

    def submit(self, sequence: Sequence, wait: bool = True, open: bool = False, batch_id: str | None = None,
               **kwargs: Any) -> RemoteResults:
        """As ``QrmidConnection.submit``, but waiting for the jobs unless told not to, as ``qrmi``'s does."""
        results = super().submit(sequence, wait, open, batch_id, **kwargs)
        self._current_batch_id = results.batch_id
        return results

    def get_batch_logs(self, batch_id: str | None = None) -> tuple[str, ...]:
        """Each job's logs (the last batch's when ``batch_id`` is None)."""
        return tuple(self.logs(batch_id or self._require_batch()))

    def cancel_batch_jobs(self, batch_id: str | None = None) -> None:
        """Cancel the batch's jobs (the last batch's when ``batch_id`` is None)."""
        self.cancel(batch_id or self._require_batch())

    def _require_batch(self) -> str:
        if self._current_batch_id is None:
            raise ValueError("no batch submitted through this connection yet")
        return self._current_batch_id
