"""Emulator configuration: IAM settings and the backends it serves, from a TOML or JSON file or defaults.

A file looks like this (TOML; the same keys work in JSON)::

    api_keys = ["my-key"]
    service_crn = "crn:v1:local:emulator"
    token_expires_in = 3600
    server = "current"          # or "older-405" / "older-404": a server from before GET /v1/jobs/{id} (see below)

    [[backends]]
    name = "fake_perth"
    device = "perth"            # qiskit-ibm-runtime fake backend providing configuration and properties
    lanes = { hpc_workload_manager = 5, ibm_quantum_compute = 0 }
    job_duration_s = 0.5        # how long each job runs, from admission (reading input and simulating included)
    admission_order = "duplicate-first"   # or "lanes-first": 429 before 409 for a duplicate id (see below)
    pub_widths = "strict"       # or "lenient": pad an estimator pub's circuit to its observables' width (see below)
"""

from __future__ import annotations

import importlib.util
import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

BackendStatus = Literal["online", "offline", "paused"]
# The order of POST /v1/jobs's duplicate-id and lanes checks is not documented. "duplicate-first": a duplicate id is
# refused 409/1231 whatever the lanes; "lanes-first", as IBM's reference simulator does: stored jobs are counted
# first, so a duplicate id is refused 429/1232 while the lanes are full (409 only when they are not).
AdmissionOrder = Literal["duplicate-first", "lanes-first"]
LANES_FIRST = "lanes-first"
# How an estimator pub's circuit and observables must agree in width. "strict", as IBM's reference simulator does:
# a pub whose circuit and observables differ in width fails the job (a transpiled circuit read from OpenQASM 3 is
# only as wide as its highest used qubit, observables laid out with apply_layout have the backend's width);
# "lenient": a narrower circuit is padded with idle qubits up to its observables' width.
PubWidths = Literal["strict", "lenient"]
# Which server generation is emulated. "current": every route of the spec. "older-405" and "older-404", IBM's
# reference behaviour as of mid-2025: no GET /v1/jobs/{id} (answered 405 Method Not Allowed, as the path serves
# DELETE, or 404 Not Found, in the web framework's own {"detail": ...} body), no /lanes and no /versions (404).
Server = Literal["current", "older-405", "older-404"]


class Lanes(BaseModel):
    """How a backend's execution lanes are split between on-prem HPC jobs and IBM cloud traffic."""

    model_config = ConfigDict(extra="forbid")

    hpc_workload_manager: int = Field(5, ge=0)
    ibm_quantum_compute: int = Field(0, ge=0)

    def to_json(self) -> dict:
        return {
            "hpc_workload_manager": {"lanes": self.hpc_workload_manager},
            "ibm_quantum_compute": {"lanes": self.ibm_quantum_compute},
        }


class BackendConfig(BaseModel):
    """One emulated backend; its device data comes from a fake backend or from explicit files."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=256)
    device: str = "perth"
    configuration_file: Path | None = None
    properties_file: Path | None = None
    status: BackendStatus = "online"
    message: str = ""
    locked: bool = False
    lanes: Lanes = Field(default_factory=Lanes)
    job_duration_s: float = Field(0.0, ge=0)
    admission_order: AdmissionOrder = "duplicate-first"
    pub_widths: PubWidths = "strict"
    noise: bool = True
    seed: int | None = None

    @model_validator(mode="after")
    def _files_together(self) -> BackendConfig:
        if (self.configuration_file is None) != (self.properties_file is None):
            raise ValueError("configuration_file and properties_file must be given together")
        return self

    def device_files(self) -> tuple[Path, Path]:
        """Paths of the configuration and properties JSON of this backend's device."""
        if self.configuration_file is not None and self.properties_file is not None:
            return self.configuration_file, self.properties_file
        spec = importlib.util.find_spec("qiskit_ibm_runtime")
        if spec is None or not spec.submodule_search_locations:
            raise ValueError("qiskit-ibm-runtime is not installed; give configuration_file and properties_file")
        folder = Path(spec.submodule_search_locations[0]) / "fake_provider" / "backends" / self.device
        conf, props = folder / f"conf_{self.device}.json", folder / f"props_{self.device}.json"
        if not conf.is_file() or not props.is_file():
            raise ValueError(f"no fake backend data for device {self.device!r} in {folder}")
        return conf, props


class EmulatorConfig(BaseModel):
    """Settings of one emulator process."""

    model_config = ConfigDict(extra="forbid")

    api_keys: list[str] = Field(default_factory=lambda: ["emulator-api-key"], min_length=1)
    service_crn: str = "crn:v1:local:emulator"
    strict_service_crn: bool = False
    token_expires_in: int = Field(3600, ge=1)
    versions: list[str] = Field(default_factory=lambda: ["2025-08-01", "2025-08-15"])
    workers: int = Field(1, ge=1)
    max_request_bytes: int = Field(1_000_000, ge=1)
    storage_timeout_s: float = Field(30.0, gt=0)
    enforce_timeout: bool = True
    server: Server = "current"
    backends: list[BackendConfig] = Field(default_factory=lambda: [BackendConfig(name="fake_perth")], min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> EmulatorConfig:
        names = [b.name for b in self.backends]
        if len(names) != len(set(names)):
            raise ValueError(f"backend names must be unique: {names}")
        return self


def load_config(path: Path | None) -> EmulatorConfig:
    """Read a ``.toml`` or ``.json`` config file; defaults when ``path`` is None."""
    if path is None:
        return EmulatorConfig()
    text = path.read_text()
    data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    return EmulatorConfig.model_validate(data)
