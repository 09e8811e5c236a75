"""Payload checks that run in the daemon's validation worker processes, and the bounds they read inputs within."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class InputBounds:
    """Site-wide bounds on what reading one payload may build (``[validation]``), checked before it is built."""

    max_decoded_bytes: int = 64 << 20  # arrays and circuits inflated from typed values, in all
    max_circuit_bytes: int = 1 << 20  # OpenQASM 3 text of one circuit
    max_layout_traps: int = 1000  # traps of one Pulser register layout


@dataclass(frozen=True, slots=True)
class Check:
    """A full check of one payload: ``function(bounds, *args)`` returns the task's shots or raises InvalidPayload.

    The daemon runs it in a worker process limited in memory and time, so ``function`` must be a module-level
    function and ``args`` must pickle. ``outline(*args)``, when given, runs on the event loop, cheaply and within
    small bounds: ``args`` less what cannot change the check's answer or shots (e.g. parameter values, as their
    shape), so that two inputs of one outline pass alike; None when it cannot tell.
    """

    function: Callable[..., int]
    args: tuple[Any, ...]
    outline: Callable[..., Any] | None = None
