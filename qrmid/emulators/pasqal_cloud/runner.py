"""Job execution: pulser sequences run on pulser-simulation in a process pool, never in the event loop.

A register of at most ``max_exact_atoms`` atoms is simulated exactly (QutipEmulator) and its final state
sampled ``runs`` times; a larger one gets a seeded draw of plausible bitstrings. Either way the counts sum to
``runs`` and every bitstring has one character per atom, in register order. The simulation stack (qutip) is
imported inside the worker functions, so only the workers pay for it.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import random
import signal
import sys
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def execute(sequence: str, variables: dict[str, Any], runs: int, max_exact_atoms: int, seed: int) -> dict[str, Any]:
    """Run one job in a worker process; returns ``{"counter": {...}, "raw": [...]}``."""
    import numpy as np
    from pulser import Sequence

    built = Sequence.from_abstract_repr(sequence)
    if built.is_parametrized() or built.is_register_mappable():
        built = built.build(**variables)
    atoms = len(built.register.qubit_ids)
    if atoms <= max_exact_atoms:
        from pulser_simulation import QutipEmulator

        with warnings.catch_warnings():  # deprecated in pulser 1.9, yet the one API that samples shots directly
            warnings.simplefilter("ignore", DeprecationWarning)
            final = QutipEmulator.from_sequence(built).run()
        np.random.seed(seed % 2**32)
        counter = Counter(final.sample_final_state(N_samples=runs))
    else:
        counter = _draw(atoms, runs, seed)
    raw = [bits for bits, count in sorted(counter.items()) for _ in range(count)]
    random.Random(seed).shuffle(raw)
    return {"counter": dict(counter), "raw": raw}


def _draw(atoms: int, runs: int, seed: int) -> Counter[str]:
    """Seeded shots where each atom ends excited with its own probability below one half."""
    rng = random.Random(seed)
    excitation = [rng.uniform(0.0, 0.5) for _ in range(atoms)]
    return Counter("".join("1" if rng.random() < p else "0" for p in excitation) for _ in range(runs))


def _die_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when the emulator dies, even by SIGKILL (Linux PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(0)


def warm_up() -> None:
    """Import the simulation stack so the first job does not pay for it."""
    import pulser_simulation  # noqa: F401


class Runner:
    """The process pool (spawn context) that jobs run in."""

    def __init__(self, workers: int, max_exact_atoms: int) -> None:
        self.workers = workers
        self.max_exact_atoms = max_exact_atoms
        self.pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_die_with_parent,
            initargs=(os.getpid(),),
        )

    def start(self) -> None:
        """Begin loading the simulation stack in every worker."""
        for _ in range(self.workers):
            self.pool.submit(warm_up)

    async def run(self, sequence: str, variables: dict[str, Any], runs: int, seed: int) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, execute, sequence, variables, runs, self.max_exact_atoms, seed)

    async def close(self) -> None:
        """Drop queued jobs and wait, off the event loop, for the workers to exit."""
        await asyncio.to_thread(self.pool.shutdown, wait=True, cancel_futures=True)
