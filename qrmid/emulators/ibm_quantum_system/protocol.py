"""What the server process hands a simulation worker process and what it gets back (plain, picklable data)."""

from __future__ import annotations

from dataclasses import dataclass, field

# Reason codes of failed jobs. Clients treat them as opaque; these are the emulator's choices.
INVALID_INPUT = 1002  # input is not a valid primitive document (IBM's "Error in the validation process of the job")
STORAGE_ERROR = 1517  # input could not be read, or results/logs could not be written
TIMED_OUT = 1305  # the run exceeded the job's timeout_secs
PRIMITIVE_FAILED = 5203  # the primitive failed, e.g. a circuit outside the backend's instruction set


@dataclass(frozen=True)
class SimulationRequest:
    """Run one primitive input document on a device's simulator."""

    program_id: str
    input_text: str
    configuration_file: str
    properties_file: str
    noise: bool
    seed: int | None
    pad_circuits: bool  # pad an estimator pub's circuit to its observables' width instead of refusing


@dataclass
class SimulationOutcome:
    """Encoded results and log lines on success; a reason code and message on failure."""

    results: str | None = None
    quantum_nanoseconds: int = 0
    log: list[tuple[str, str]] = field(default_factory=list)
    reason_code: int | None = None
    reason_message: str | None = None
