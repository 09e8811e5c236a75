"""``pasqal-cloud``: a Pasqal Cloud device type (FRESNEL, EMU_MPS, ...) through Pasqal Cloud Services.

The resource packs the tasks of all its callers into open batches, one job per task, so that tasks share the
batch overhead instead of paying it each (see ``packer``).
"""

from qrmid.backends.pasqal_cloud.adapter import PasqalCloud
from qrmid.backends.pasqal_cloud.settings import Settings

__all__ = ["PasqalCloud", "Settings"]
