"""Import of QRMI's ``qrmi_config.json``: the same resources as qrmid resource tables, and a warning for anything
that cannot be mapped.

``ibm-quantum-system`` and ``pasqal-cloud`` map to qrmid's own adapters (their QRMI key names are qrmid's config
keys); every other QRMI type maps to the ``qrmi`` pass-through adapter with its ``environment`` as it is. Warnings
name the resource and the key, never a value.
"""

from __future__ import annotations

import json
import logging
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel, TypeAdapter, ValidationError

from qrmid.backends import ibm_quantum_system, pasqal_cloud
from qrmid.backends.qrmi_package.settings import RESOURCE_TYPES
from qrmid.backends.registry import ResourceConfig
from qrmid.backends.settings import NAME_PATTERN
from qrmid.ops.pool_config import ResourceEntry

# native types: the key holding the vendor-side name, and the settings whose aliases are the QRMI keys it reads
NATIVE: dict[str, tuple[str, type[BaseModel]]] = {
    "ibm-quantum-system": ("backend", ibm_quantum_system.Settings),
    "pasqal-cloud": ("device_type", pasqal_cloud.Settings),
}
REMOVED = {"direct-access": ("ibm-quantum-system", "QRMI_IBM_DA_", "QRMI_IBM_QS_")}  # old type: new, old/new prefix
# set by the Slurm plugin per job, not by the admin: nothing to import
JOB_KEYS = frozenset({"QRMI_JOB_ACQUISITION_TOKEN", "QRMI_JOB_ID", "QRMI_JOB_UID"})
_NAME = re.compile(NAME_PATTERN)
_RESOURCE: TypeAdapter[ResourceConfig] = TypeAdapter(ResourceConfig)
log = logging.getLogger(__name__)


class QrmiConfigError(ValueError):
    """The file is not a usable qrmi_config.json; the message says why."""


@dataclass
class Imported:
    """qrmid resource tables (config keys and values) and what could not be mapped."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def read(path: Path) -> Imported:
    """The resources of the qrmi_config.json at ``path``; QrmiConfigError when it cannot be read as one."""
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise QrmiConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise QrmiConfigError(f"{path}: not valid JSON: {exc}") from None
    return convert(doc, str(path))


def merge(path: Path, resources: list[ResourceEntry]) -> list[ResourceEntry]:
    """``resources`` followed by those of the qrmi_config.json at ``path`` (``[daemon] qrmi_config``); warnings
    are logged. ValueError when the file is unusable, lets other users read its secrets, or a name is taken."""
    imported = read(path)
    for warning in imported.warnings:
        log.warning("%s", warning)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077 and any(table["type"] != "qrmi" or table["environment"] for table in imported.resources):
        raise ValueError(f"{path} holds resource settings (credentials) but its mode {mode:04o} lets group or other "
                         f"users read it; run: chmod 600 {path}")
    names = {resource.name for resource in resources}
    for table in imported.resources:
        if table["name"] in names:
            raise ValueError(f"resource {table['name']!r} is defined both in the config file and in {path}: "
                             "remove or rename one of them")
    return [*resources, *(_RESOURCE.validate_python(table) for table in imported.resources)]


def convert(doc: Any, source: str) -> Imported:
    """The resources of a parsed qrmi_config.json document; ``source`` names it in messages."""
    if not isinstance(doc, dict) or not isinstance(doc.get("resources"), list):
        raise QrmiConfigError(f"{source}: not a QRMI config: expected an object with a 'resources' list")
    imported = Imported()
    seen: set[str] = set()
    for index, entry in enumerate(doc["resources"]):
        warn = imported.warnings.append
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            warn(f"{source}: resources[{index}] has no 'name': left out")
            continue
        name = entry["name"]
        if name in seen:
            warn(f"{source}: resource {name!r} is defined twice: the second one is left out")
            continue
        seen.add(name)
        table = _resource(entry, f"{source}: resource {name!r}", warn)
        if table is not None and _usable(table, f"{source}: resource {name!r}", warn):
            imported.resources.append(table)
    return imported


def to_toml(imported: Imported) -> str:
    """The resources as TOML ``[[resources]]`` tables, ready for a qrmid config file."""
    parts = []
    for table in imported.resources:
        scalars = {key: value for key, value in table.items() if not isinstance(value, dict)}
        text = "[[resources]]\n" + tomli_w.dumps(scalars)
        for key, value in table.items():
            if isinstance(value, dict):
                text += f"\n[resources.{key}]\n" + tomli_w.dumps(value)
        parts.append(text)
    return "\n".join(parts)


def _resource(entry: dict[str, Any], where: str, warn: Any) -> dict[str, Any] | None:
    """One QRMI resource definition as a qrmid resource table, or None (with a warning) when unusable."""
    kind = entry.get("type")
    for key in sorted(set(entry) - {"name", "type", "is_dynamic", "environment"}):
        warn(f"{where}: key {key!r} is not a QRMI resource key: ignored")
    if entry.get("is_dynamic"):
        warn(f"{where}: is_dynamic resources (backends discovered at run time) are not supported: list each "
             "backend as its own resource; left out")
        return None
    environment = entry.get("environment", {})
    if not isinstance(environment, dict) or not all(isinstance(key, str) for key in environment):
        warn(f"{where}: 'environment' must map setting names to values; left out")
        return None
    environment = {key: _text(value) for key, value in environment.items()}
    for key in sorted(JOB_KEYS & set(environment)):
        warn(f"{where}: key {key!r} is set per job, not by the admin: ignored")
        del environment[key]
    if kind in REMOVED:
        kind, old, new = REMOVED[kind]
        warn(f"{where}: type 'direct-access' was removed from QRMI: imported as {kind} with {old}* keys read as {new}*")
        environment = {new + key.removeprefix(old) if key.startswith(old) else key: value
                       for key, value in environment.items()}
    name = entry["name"]
    qrmid_name = name if _NAME.fullmatch(name) else re.sub(r"[^A-Za-z0-9_.-]", "-", name).lstrip("_.-")[:64]
    if not qrmid_name:
        warn(f"{where}: the name cannot be made a qrmid resource name; left out")
        return None
    if qrmid_name != name:
        warn(f"{where}: not a valid qrmid resource name: served as {qrmid_name!r}")
    if kind in NATIVE:
        return _native(kind, name, qrmid_name, environment, where, warn)
    if kind in RESOURCE_TYPES:
        table: dict[str, Any] = {"type": "qrmi", "name": qrmid_name, "resource_type": kind}
        if qrmid_name != name:
            table["resource_id"] = name
        return table | {"environment": environment}
    warn(f"{where}: unknown QRMI resource type {kind!r}: left out")
    return None


def _native(kind: str, name: str, qrmid_name: str, environment: dict[str, str], where: str,
            warn: Any) -> dict[str, Any]:
    """A resource of a type qrmid serves itself: the QRMI keys are its config keys."""
    vendor_key, settings = NATIVE[kind]
    known = {info.alias for info in settings.model_fields.values() if info.alias}
    table: dict[str, Any] = {"type": kind, "name": qrmid_name}
    if qrmid_name != name:
        table[vendor_key] = name
    for key, value in environment.items():
        if key in known:
            table[key] = value
        else:
            warn(f"{where}: key {key!r} has no {kind} equivalent in qrmid: ignored")
    return table


def _usable(table: dict[str, Any], where: str, warn: Any) -> bool:
    """Whether qrmid can serve the resource table; a warning naming the keys (never values) when not."""
    try:
        _RESOURCE.validate_python(table)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in error['loc'][1:]) or 'settings'}: {error['msg']}"
                             for error in exc.errors())
        warn(f"{where}: cannot be served as {table['type']}: {problems}; left out")
        return False
    return True


def _text(value: Any) -> str:
    """QRMI reads every setting as a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)
