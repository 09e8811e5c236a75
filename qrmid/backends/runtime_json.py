"""IBM's ``RuntimeEncoder`` JSON (Qiskit primitive inputs) read with every typed value bounded before it is built.

Compressed blobs are inflated only up to the bytes left in the payload's budget, arrays are read from their
declared dtype and shape, and a typed value that cannot be decoded is an InvalidPayload naming its type, never an
arbitrary exception. Typed values without bounded handling here go to IBM's own decoder, which builds them from
JSON already read (so from at most the payload's size).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import zlib
from typing import Any

import numpy as np
from qiskit import qpy
from qiskit_ibm_runtime.json import RuntimeDecoder

from qrmid.backends import circuit_cache
from qrmid.backends.base import InvalidPayload

REFUSED = frozenset({"spmatrix"})  # a zip archive inflated by SciPy, no bound possible; never a primitive input
EXTRAPOLATORS = frozenset({"linear", "exponential", "double_exponential", "fallback"})  # strings IBM keeps as is


def loads(text: str, max_decoded_bytes: int | None = None) -> Any:
    """The document ``text`` encodes; typed values may inflate to ``max_decoded_bytes`` in all (None: no bound)."""
    decoder = _Decoder(max_decoded_bytes)
    try:
        return decoder.decode(text)
    except json.JSONDecodeError as exc:
        raise InvalidPayload(f"input is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidPayload("input nests arrays or objects too deeply to be read; flatten it") from None


class _Decoder(json.JSONDecoder):
    def __init__(self, max_bytes: int | None) -> None:
        super().__init__(object_hook=self._typed)
        self.limit = max_bytes
        self.left = max_bytes
        self._ibm = RuntimeDecoder().object_hook

    def _typed(self, obj: dict[str, Any]) -> Any:
        if "__type__" not in obj:
            return obj
        kind = obj["__type__"]
        if not isinstance(kind, str):
            raise InvalidPayload(f"'__type__' must name an encoded type, not {kind!r}")
        if "__value__" not in obj:
            raise InvalidPayload(f"an encoded {kind:.40} value has no '__value__'")
        if kind in REFUSED:
            raise InvalidPayload(f"encoded {kind:.40} values are not taken in primitive inputs")
        value = obj["__value__"]
        try:
            if kind == "ndarray" and isinstance(value, str) and value not in EXTRAPOLATORS:
                return self._array(value)
            if kind in ("QuantumCircuit", "Instruction"):
                circuit = self._circuit(kind, value)
                return circuit if kind == "QuantumCircuit" else circuit.data[0].operation
            return self._ibm(obj)
        except InvalidPayload:
            raise
        except RecursionError:
            raise InvalidPayload(f"an encoded {kind:.40} value nests too deeply to be read") from None
        except MemoryError:  # the worker's memory limit: not the input's syntax
            raise
        except Exception as exc:  # IBM's decoder and Qiskit's classes raise many types, all meaning "unusable"
            raise InvalidPayload(f"cannot decode an encoded {kind:.40} value: {type(exc).__name__}: {str(exc)[:300]}") from None

    def _circuit(self, kind: str, value: Any) -> Any:
        """A QPY blob's circuit, read once per process (``circuit_cache``); its inflated bytes count every time."""
        if not isinstance(value, str):
            raise InvalidPayload(f"an encoded {kind:.40} value's '__value__' must be base64 text")

        def read(text: str) -> tuple[Any, int]:
            data = self._inflate(kind, text)
            return qpy.load(io.BytesIO(data))[0], len(data)

        circuit, decoded, reused = circuit_cache.circuit("qpy", value, read)
        if reused:
            self._charge(kind, decoded)
        return circuit

    def _charge(self, kind: str, size: int) -> None:
        """Count ``size`` decoded bytes against the input's budget."""
        if self.left is None:
            return
        if size > self.left:
            raise InvalidPayload(f"an encoded {kind:.40} value inflates past the {self.limit} bytes one input may decode "
                                 "to in all (arrays and circuits; [validation] max_decoded_bytes); send less data")
        self.left -= size

    def _inflate(self, kind: str, value: Any) -> bytes:
        """The zlib blob in base64 text ``value``, inflated only as far as the budget allows."""
        if not isinstance(value, str):
            raise InvalidPayload(f"an encoded {kind:.40} value's '__value__' must be base64 text")
        try:
            packed = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidPayload(f"an encoded {kind:.40} value is not valid base64: {exc}") from None
        inflater = zlib.decompressobj()
        room = self.left if self.left is not None else -1
        try:
            data = inflater.decompress(packed, room + 1 if room >= 0 else 0)
        except zlib.error as exc:
            raise InvalidPayload(f"an encoded {kind:.40} value is not a valid zlib blob: {exc}") from None
        self._charge(kind, len(data))  # past the budget when the room ran out (its bound is one byte over)
        if not inflater.eof:
            raise InvalidPayload(f"an encoded {kind:.40} value is a truncated zlib blob")
        return data

    def _array(self, value: str) -> np.ndarray[Any, Any]:
        """An array in NumPy's .npy format, its header checked before its data is read."""
        data = self._inflate("ndarray", value)
        stream = io.BytesIO(data)
        try:
            version = np.lib.format.read_magic(stream)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = header(stream)
        except ValueError as exc:
            raise InvalidPayload(f"an encoded ndarray value is not a NumPy array: {exc}") from None
        if dtype.hasobject:
            raise InvalidPayload("an encoded ndarray value holds Python objects; only numeric arrays are taken")
        if math.prod(shape) * dtype.itemsize > len(data):
            raise InvalidPayload(f"an encoded ndarray value declares shape {shape} of {dtype}, more than the data it holds")
        stream.seek(0)
        return np.load(stream, allow_pickle=False)
