"""Benchmark of payload validation under hostile input, run by hand: ``python -m qrmid.bench.validation``.

In one run, against a ``qrmid serve`` process whose callers authenticate with bearer tokens (two users):

- one user's small sampler StartTask latency, idle, and while the other user has six large circuits (640 kB of
  OpenQASM 3 each) in validation: the ratio is what the large ones cost everyone else;
- with ``--hostile``: each hostile input of :mod:`qrmid.bench.hostile` in turn, its answer and how far the daemon's
  peak resident memory (VmHWM) rose.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import grpc
from rich.console import Console
from rich.table import Table

from qrmid.bench import hostile
from qrmid.bench.process import QrmidProcess
from qrmid.v1 import quantum_resources_pb2 as pb
from qrmid.v1 import quantum_resources_pb2_grpc as pb_grpc

TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789ab"}
SMALL = hostile.sampler([hostile.BELL, None, 8])
MIB = 1 << 20
TIMEOUT = 180.0  # seconds a call may take; a daemon that hangs answers DEADLINE_EXCEEDED


class User:
    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self.stub = pb_grpc.QuantumResourcesStub(channel)
        self.metadata = (("authorization", f"Bearer {token}"),)

    def start(self, resource: str, payload: pb.Payload) -> Any:
        return self.stub.StartTask(pb.StartTaskRequest(resource=resource, payload=payload), metadata=self.metadata,
                                   timeout=TIMEOUT)


def qiskit(program: str, text: str) -> pb.Payload:
    return pb.Payload(qiskit_primitive=pb.QiskitPrimitive(program_id=program, input=text))


def pulser(text: str) -> pb.Payload:
    return pb.Payload(pulser_sequence=pb.PulserSequence(sequence=text, job_runs=10))


HOSTILE = {  # the shot counts last: a daemon that cannot journal them stops journaling, and answering, at all
    "ndarray inflating to 1.5 GiB": lambda: ("local-qiskit", qiskit("sampler", hostile.inflating_array(1.5))),
    "Pulser, 20,000 atoms": lambda: ("local-pulser", pulser(hostile.pulser_atoms(20_000))),
    "OpenQASM 3, 2 MB": lambda: ("local-qiskit", qiskit("sampler", hostile.qasm(2.0))),
    "32 MiB of 4-byte characters": lambda: ("local-pulser", pulser("\U0001d4b3" * 8_400_000)),
    "200,000-deep JSON (Qiskit)": lambda: ("local-qiskit", qiskit("sampler", hostile.deep())),
    "200,000-deep JSON (Pulser)": lambda: ("local-pulser", pulser(hostile.pulser_deep())),
    "estimator precision 1e-10": lambda: ("local-qiskit", qiskit("estimator", hostile.estimator(precision=1e-10))),
    "parameter values (10**16, 0)": lambda: ("local-qiskit", qiskit("sampler", hostile.huge_shape())),
}


def peak(process: QrmidProcess) -> int:
    assert process.process is not None
    status = Path(f"/proc/{process.process.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) << 10


async def latency(user: User, calls: int) -> float:
    """Median seconds of a small sampler StartTask."""
    took = []
    for _ in range(calls):
        started = time.perf_counter()
        await user.start("local-qiskit", qiskit("sampler", SMALL))
        took.append(time.perf_counter() - started)
    return statistics.median(took)


async def measure(process: QrmidProcess, calls: int, with_hostile: bool, console: Console) -> list[Any]:
    options = [("grpc.max_send_message_length", 64 * MIB), ("grpc.max_receive_message_length", 64 * MIB)]
    async with grpc.aio.insecure_channel(process.address, options=options) as one, \
            grpc.aio.insecure_channel(process.address, options=options) as other:
        alice, bob = User(one, TOKENS["alice"]), User(other, TOKENS["bob"])
        await bob.start("local-pulser", pulser(json.dumps(hostile.examples.load("pulser")["sequence"])))
        idle = await latency(bob, calls)
        big = [asyncio.ensure_future(alice.start("local-qiskit", qiskit("sampler", hostile.qasm(0.64))))
               for _ in range(6)]
        await asyncio.sleep(1.0)
        loaded = await latency(bob, calls)
        console.print(f"small sampler StartTask, median of {calls}: idle {idle * 1000:.1f} ms, with another user's six "
                      f"640 kB circuits in validation {loaded * 1000:.1f} ms: ratio {loaded / idle:.2f}")
        for call in big:
            call.cancel()
        await asyncio.gather(*big, return_exceptions=True)
        rows = []
        if with_hostile:
            before = peak(process)
            for name, build in HOSTILE.items():
                started = time.perf_counter()
                try:
                    await alice.start(*build())
                    code, details = "OK", ""
                except grpc.aio.AioRpcError as exc:
                    code, details = exc.code().name, exc.details() or ""
                rows.append((name, code, time.perf_counter() - started, (peak(process) - before) / MIB, details))
                console.print(f"{name}: {code} after {rows[-1][2]:.1f} s, daemon peak RSS +{rows[-1][3]:.0f} MiB")
        return rows


@click.command()
@click.option("--calls", default=20, show_default=True, help="small StartTask calls timed in each phase")
@click.option("--hostile", "with_hostile", is_flag=True, help="also send each hostile input (takes GiBs unbounded)")
def main(calls: int, with_hostile: bool) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="qb"))
    tokens = scratch / "tokens.toml"
    tokens.touch(mode=0o600)
    tokens.write_text("".join(f'[[token]]\nname = "{name}"\ntoken = "{token}"\n' for name, token in TOKENS.items()))
    config = scratch / "qrmid.toml"
    config.write_text(f'[daemon]\nsocket = "{scratch / "qrmid.sock"}"\nauth = "token"\nlog_level = "warning"\n'
                      f'[auth]\ntokens_file = '
                      f'"{tokens}"\n[journal]\npath = "{scratch / "journal.db"}"\n[limits]\ncalls_per_second = 0\n'
                      '[[resources]]\ntype = "local-qiskit"\nname = "local-qiskit"\nslots = 1\nmax_qubits = 4\n'
                      '[[resources]]\ntype = "local-pulser"\nname = "local-pulser"\nslots = 1\n')
    process = QrmidProcess(config, scratch / "qrmid.sock")
    process.start()
    console = Console(width=150)  # never cut a figure, in a terminal or a pipe
    try:
        rows = asyncio.run(measure(process, calls, with_hostile, console))
    finally:
        process.stop(grace=10)
    if rows:
        table = Table("hostile input", "answer", "seconds", "daemon peak RSS rise (MiB)", "message")
        for name, code, seconds, rise, details in rows:
            table.add_row(name, code, f"{seconds:.1f}", f"{rise:.0f}", details[:70])
        console.print(table)


if __name__ == "__main__":
    main()
