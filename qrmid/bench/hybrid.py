"""Benchmark of hybrid loops, run by hand: ``python -m qrmid.bench.hybrid [--calls N] [--rounds R]``.

A classical loop sends one primitive call, waits for its result, and sends the next: what qrmid adds to each call is
what its users feel. In one run, alternating the two sides ``rounds`` times, the time per call of

- a 2-qubit Bell sampler (100 shots) and
- a 4-qubit, 8-parameter estimator (the same circuit, new parameter values each call)

through ``qrmid.integrations.qiskit`` on a ``local-qiskit`` resource of a qrmid process, against qiskit-aer's own
primitives in this process (the baseline), and against the floor of such a call (``qrmid.bench.floor``: the same gRPC
stream, simulator worker and durable commit, and nothing else). Each figure is min–median–max over the rounds of that
round's median (and p99), with the overhead over the baseline, and what qrmid adds beyond the floor.

Both sides simulate with the same OpenMP settings: the baseline takes ``OMP_WAIT_POLICY=PASSIVE`` as qrmid's
simulator workers do (unless it is set already), so its threads do not spin against the daemon between calls, which
on a small machine would slow the baseline by several milliseconds a call and flatter qrmid.
"""

from __future__ import annotations

import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.quantum_info import SparsePauliOp
from rich.console import Console
from rich.table import Table

from qrmid.bench import floor
from qrmid.bench.process import QrmidProcess

RESOURCES = '[[resources]]\ntype = "local-qiskit"\nname = "sim"\nslots = 2\n'


def bell() -> QuantumCircuit:
    circuit = QuantumCircuit(2)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.measure_all()
    return circuit


def ansatz() -> QuantumCircuit:
    """Two layers of RY rotations and a CX ladder on 4 qubits: 8 parameters."""
    theta = ParameterVector("theta", 8)
    circuit = QuantumCircuit(4)
    for layer in range(2):
        for qubit in range(4):
            circuit.ry(theta[4 * layer + qubit], qubit)
        for qubit in range(3):
            circuit.cx(qubit, qubit + 1)
    return circuit


def loops(sampler: object, estimator: object) -> dict[str, Callable[[int], None]]:
    """One call of each loop, the n-th of its run. The estimator's parameter values are new on every call of the
    whole run, later rounds included, as an optimizer's would be (so no input is ever sent twice)."""
    circuit, observable = ansatz(), SparsePauliOp("ZZII")
    bell_circuit = bell()
    steps = itertools.count()

    def sample(n: int) -> None:
        sampler.run([bell_circuit], shots=100).result()  # type: ignore[attr-defined]

    def estimate(n: int) -> None:
        values = [0.001 * next(steps) + 0.1 * k for k in range(8)]
        estimator.run([(circuit, observable, values)]).result()  # type: ignore[attr-defined]

    return {"Bell sampler, 100 shots": sample, "4-qubit estimator, new parameters each call": estimate}


def timed(call: Callable[[int], None], calls: int) -> list[float]:
    """Seconds of each of ``calls`` sequential calls, after two to warm up."""
    call(-2)
    call(-1)
    times = []
    for n in range(calls):
        started = time.perf_counter()
        call(n)
        times.append(time.perf_counter() - started)
    return times


def ms(values: list[float]) -> str:
    """Seconds as min–median–max milliseconds."""
    return f"{min(values) * 1e3:.1f}–{statistics.median(values) * 1e3:.1f}–{max(values) * 1e3:.1f} ms"


def p99(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, round(0.99 * (len(values) - 1)))]


@click.command()
@click.option("--calls", default=100, show_default=True, help="sequential calls per loop and round")
@click.option("--rounds", default=3, show_default=True, help="alternations of the two sides")
def main(calls: int, rounds: int) -> None:
    """Time per call of hybrid loops through qrmid against qiskit-aer in this process."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before qiskit-aer's OpenMP runtime loads, which reads it once
    from qiskit_aer.primitives import EstimatorV2 as AerEstimator
    from qiskit_aer.primitives import SamplerV2 as AerSampler

    from qrmid.integrations.qiskit import EstimatorV2, SamplerV2

    with tempfile.TemporaryDirectory(prefix="qh") as scratch:
        socket, config = Path(scratch) / "qrmid.sock", Path(scratch) / "qrmid.toml"
        config.write_text(f'[daemon]\nsocket = "{socket}"\n[journal]\npath = "{Path(scratch) / "journal.db"}"\n'
                          f'{RESOURCES}')
        daemon = QrmidProcess(config, socket, output=Path(scratch) / "qrmid.log")
        daemon.start()
        floor_socket = Path(scratch) / "floor.sock"
        try:
            with floor.running(floor_socket, Path(scratch) / "floor.db"):
                sides = {"aer": loops(AerSampler(), AerEstimator()),
                         "floor": loops(floor.Sampler(floor_socket), floor.Estimator(floor_socket)),
                         "qrmid": loops(SamplerV2("sim", address=daemon.address, lease_token=""),
                                        EstimatorV2("sim", address=daemon.address, lease_token=""))}
                medians: dict[tuple[str, str], list[float]] = {}
                tails: dict[tuple[str, str], list[float]] = {}
                for _ in range(rounds):
                    for side, calls_of in sides.items():
                        for name, call in calls_of.items():
                            times = timed(call, calls)
                            medians.setdefault((name, side), []).append(statistics.median(times))
                            tails.setdefault((name, side), []).append(p99(times))
        finally:
            daemon.stop()
    table = Table(title=f"hybrid loops: {calls} sequential calls, {rounds} rounds (min–median–max of each round's "
                        "figure)")
    for column in ("loop", "figure", "qiskit-aer in process", "floor: same hops, nothing else", "qrmid",
                   "overhead (median)", "beyond the floor"):
        table.add_column(column)
    for name in sides["qrmid"]:
        for figure, values in (("median per call", medians), ("p99 per call", tails)):
            base, least, mine = values[(name, "aer")], values[(name, "floor")], values[(name, "qrmid")]
            table.add_row(name, figure, ms(base), ms(least), ms(mine),
                          f"{(statistics.median(mine) - statistics.median(base)) * 1e3:+.1f} ms",
                          f"{(statistics.median(mine) - statistics.median(least)) * 1e3:+.1f} ms")
    Console(width=150).print(table)  # never cut a figure, in a terminal or a pipe


if __name__ == "__main__":
    main()
