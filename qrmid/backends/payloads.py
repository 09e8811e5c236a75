"""What a task runs: one dataclass per QRMI payload variant."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class PayloadKind(Enum):
    """The payload variants, named as in the API."""

    QISKIT_PRIMITIVE = "qiskit_primitive"
    PULSER_SEQUENCE = "pulser_sequence"


@dataclass(frozen=True, slots=True)
class QiskitPrimitive:
    """A Qiskit Sampler/Estimator V2 input in IBM's JSON form (QRMI ``Payload.QiskitPrimitive``)."""

    program_id: str
    input: str

    kind = PayloadKind.QISKIT_PRIMITIVE

    @property
    def size(self) -> int:
        """Bytes of the payload in UTF-8, as it travels and is stored."""
        return utf8_bytes(self.input) + utf8_bytes(self.program_id)

    def emptied(self) -> QiskitPrimitive:
        """This payload without its input text, to keep once the task is over."""
        return QiskitPrimitive(self.program_id, "")


@dataclass(frozen=True, slots=True)
class PulserSequence:
    """A Pulser abstract-repr sequence and its number of runs (QRMI ``Payload.PasqalCloud``)."""

    sequence: str
    job_runs: int

    kind = PayloadKind.PULSER_SEQUENCE

    @property
    def size(self) -> int:
        """Bytes of the payload in UTF-8, as it travels and is stored."""
        return utf8_bytes(self.sequence)

    def emptied(self) -> PulserSequence:
        """This payload without its sequence text, to keep once the task is over."""
        return PulserSequence("", self.job_runs)


Payload = QiskitPrimitive | PulserSequence


def utf8_bytes(text: str) -> int:
    """Length of ``text`` in UTF-8 bytes (a character may take up to four)."""
    if text.isascii():
        return len(text)
    step = 1 << 20  # encoded a piece at a time: a large text is never copied whole
    return sum(len(text[at:at + step].encode("utf-8", "surrogatepass")) for at in range(0, len(text), step))
