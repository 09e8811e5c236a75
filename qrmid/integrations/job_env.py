"""What a Slurm job's environment tells the framework adapters: the lease the job holds on a resource."""

from __future__ import annotations

import os


def lease_token(resource: str) -> str:
    """The lease the job holds on ``resource``: ``$<resource>_QRMI_JOB_ACQUISITION_TOKEN`` as the Slurm plugin
    exports it, else ``$QRMI_JOB_ACQUISITION_TOKEN``, else none ("")."""
    return os.environ.get(f"{resource}_QRMI_JOB_ACQUISITION_TOKEN") or os.environ.get(
        "QRMI_JOB_ACQUISITION_TOKEN", "")
