"""Lane scheduling against the IBM Quantum System API emulator: ``python -m qrmid.bench.ibm``.

N tasks, each a job of emulated duration T, on a backend with L execution lanes for the HPC workload manager, run
three ways, interleaved round by round (each on its own backend of one emulator, so none sees another's jobs):

- **qrmid**: one daemon admits jobs per lane and deletes each as soon as its end is journaled and its results read.
- **QRMI's policy**: every task an independent client as QRMI's IBM Quantum System resource and task runner do it
  (qiskit-community/qrmi): HTTP 429 on submit retried without end, waiting a uniform draw between 1 s and 1 s
  doubling per retry, capped at 60 s (``dependencies/direct_access_client/src/client.rs``: ``ExponentialBackoff``
  with ``retry_bounds(1 s, 60 s)``, ``Jitter::Bounded``, no retry limit); the job's status read every second
  (``bin/task_runner/src/main.rs``: ``POLLING_INTERVAL = 1000`` ms); once it ended, ``task_result`` (the job read
  again, then the results object) and ``task_stop`` (the status read again, then DELETE).
- **tuned client**: the same independent clients with a well-tuned policy: 429 retried after a jittered wait from
  0.25 s doubling to 4 s, the status read every 0.25 s, results read, then DELETE.

The clients are coroutines of this process, not N processes: the same requests on the wire, less load here. On an
older server (``--server older-405``/``older-404``: no ``GET /v1/jobs/{id}``) the clients fall back to the job list
on every read, as the spec tells a client to.

qrmid paces its polls by the run time of the jobs it saw complete, so each T starts with L untimed tasks through
qrmid (a steady workload, as a hybrid loop's); the clients learn nothing and need no warm-up.

Printed per T, as min–median–max over the rounds: makespan, lane utilization N·T / (L·makespan), the HTTP 429s each
way drew, and the API requests per task the emulator counted (status checks and token requests included).

The makespan is measured the same way for every way: the clock starts once the way is set up (qrmid's channel
connected; the clients' HTTP pool and S3 signers built), and stops once every task's result is in its caller's hands
and every lane is free again (the last DELETE, from the emulator's record).

T is a job's run time on the service, from its admission to its end: the emulator reads the input, simulates, writes
the results and logs, and sleeps out the rest of T (its own work fits within T unless the machine is loaded).

What the figures show: how long each way holds a lane beyond T (seeing the end, reading results, the DELETE, the
next POST) and how hard it hits the service. What they do not show: a real service's or S3's latency (everything
here is on 127.0.0.1), a real QPU, many client processes competing for CPU (a loaded machine stretches qrmid's
path, which does more per task: gRPC, the journal, validation), or correctness under failures (the tests cover it).
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import random
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Console
from rich.table import Table

from qrmid.backends.ibm_quantum_system.api import ApiError, Iam, QuantumSystemApi
from qrmid.backends.ibm_quantum_system.storage import Storage, object_key
from qrmid.bench.timing import spread
from qrmid.client import AsyncClient, sampler_payload
from qrmid.emulators.launch import Proc, start_emulator, start_moto, start_qrmid

KEY, CRN, BUCKET = "bench-key", "crn:v1:local:bench", "bench"
CIRCUIT = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nbit[1] c;\nx $0;\nc[0] = measure $0;\n'
INPUT = {"pubs": [[CIRCUIT, None, 8]], "version": 2, "support_qiskit": True}
WAYS = ("qrmid", "QRMI's policy", "tuned client")
# A way, set up: the context yields the run of its tasks, which the clock times
Way = Callable[[], AbstractAsyncContextManager[Callable[[], Awaitable[object]]]]
BACKENDS = {"qrmid": "qrmid", "QRMI's policy": "qrmi", "tuned client": "tuned"}


@dataclass(frozen=True)
class Policy:
    """How an independent client retries 429 and polls: waits of ``first`` s doubling up to ``cap`` s."""

    first: float
    cap: float
    poll: float
    bounded_jitter: bool  # a uniform draw between ``first`` and the doubled wait; else between half of it and it
    reads_twice: bool  # QRMI's task_result and task_stop read the job again before the results and the DELETE

    def backoff(self, retry: int) -> float:
        ceiling = min(self.cap, self.first * 2 ** retry)
        return random.uniform(self.first if self.bounded_jitter else ceiling / 2, ceiling)


POLICIES = {"QRMI's policy": Policy(1.0, 60.0, 1.0, bounded_jitter=True, reads_twice=True),
            "tuned client": Policy(0.25, 4.0, 0.25, bounded_jitter=False, reads_twice=False)}


class Service:
    """The emulator and moto, with a job bucket, for the whole benchmark."""

    def __init__(self, scratch: Path, lanes: int, server: str) -> None:
        config = scratch / "emulator.toml"
        config.write_text(f'api_keys = ["{KEY}"]\nservice_crn = "{CRN}"\nserver = "{server}"\n' + "".join(
            f'[[backends]]\nname = "{name}"\ndevice = "perth"\nnoise = false\nadmission_order = "lanes-first"\n'
            f'lanes = {{ hpc_workload_manager = {lanes}, ibm_quantum_compute = 0 }}\n' for name in BACKENDS.values()))
        self.s3, self.emulator = start_moto(), start_emulator(config, "--log-level", "warning")
        import boto3

        boto3.client("s3", endpoint_url=self.s3.url, region_name="us-east-1", aws_access_key_id="k",
                     aws_secret_access_key="s").create_bucket(Bucket=BUCKET)

    def stop(self) -> None:
        self.emulator.stop()
        self.s3.stop()

    async def record(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as http:
            return dict((await http.get(f"{self.emulator.url}/_emulator/record")).json())

    async def freed(self, backend: str) -> dict[str, Any]:
        """The record once ``backend`` stores no job: every lane free again."""
        for _ in range(500):
            record = await self.record()
            if not record["backends"][backend]["stored"]:
                return record
            await asyncio.sleep(0.01)
        raise RuntimeError(f"backend {backend} still stores jobs 5 s after its tasks ended")

    async def set_duration(self, seconds: float) -> None:
        async with httpx.AsyncClient() as http:
            for backend in BACKENDS.values():
                response = await http.post(f"{self.emulator.url}/_emulator/backends/{backend}",
                                           json={"job_duration_s": seconds})
                response.raise_for_status()


def start_daemon(service: Service, lanes: int, scratch: Path) -> Proc:
    """qrmid serving the ``qrmid`` backend; its config holds secrets, so it is private whatever the umask."""
    socket = scratch / "qrmid.sock"
    config = scratch / "qrmid.toml"
    config.touch(mode=0o600)
    config.chmod(0o600)
    config.write_text(
        f'[daemon]\nsocket = "{socket}"\nlog_level = "warning"\n[journal]\npath = "{scratch / "journal.db"}"\n'
        f'[[resources]]\ntype = "ibm-quantum-system"\nname = "qrmid"\nlanes = {lanes}\n'
        f'QRMI_IBM_QS_ENDPOINT = "{service.emulator.url}"\nQRMI_IBM_QS_IAM_ENDPOINT = "{service.emulator.url}"\n'
        f'QRMI_IBM_QS_IAM_APIKEY = "{KEY}"\nQRMI_IBM_QS_SERVICE_CRN = "{CRN}"\n'
        f'QRMI_IBM_QS_AWS_ACCESS_KEY_ID = "k"\nQRMI_IBM_QS_AWS_SECRET_ACCESS_KEY = "s"\n'
        f'QRMI_IBM_QS_S3_ENDPOINT = "{service.s3.url}"\nQRMI_IBM_QS_S3_BUCKET = "{BUCKET}"\n'
        f'QRMI_IBM_QS_S3_REGION = "us-east-1"\n')
    return start_qrmid(config, socket)


async def through_qrmid(daemon: Proc, tasks: int) -> None:
    async with qrmid_way(daemon, tasks) as run:
        await run()


@asynccontextmanager
async def qrmid_way(daemon: Proc, tasks: int) -> AsyncIterator[Callable[[], Awaitable[object]]]:
    """A connected client; its run: ``tasks`` tasks through qrmid, all at once."""
    async with AsyncClient(daemon.url, timeout=3600) as qrmid:
        await qrmid.list_resources()  # the channel connected before the clock starts
        yield lambda: asyncio.gather(*(qrmid.run("qrmid", sampler_payload(INPUT)) for _ in range(tasks)))


@asynccontextmanager
async def independent_clients(service: Service, policy: Policy, backend: str,
                              tasks: int) -> AsyncIterator[Callable[[], Awaitable[object]]]:
    """An HTTP pool and S3 signers; its run: ``tasks`` clients, each submitting one job, retrying 429 and polling by
    ``policy``, then deleting it."""
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=None)) as http:
        url = service.emulator.url
        storage = Storage(http, endpoint=service.s3.url, service_endpoint=service.s3.url, bucket=BUCKET,
                          region="us-east-1", access_key="k", secret_key="s", deadline=60)
        await storage.start()

        async def status(api: QuantumSystemApi, job_id: str) -> str:
            try:
                return str((await api.get(f"/v1/jobs/{job_id}"))["status"])
            except ApiError as exc:
                if exc.status not in (404, 405) or exc.code == "1291":
                    raise
            jobs = (await api.get("/v1/jobs"))["jobs"]  # an older server: find the job in the list
            return str(next(job for job in jobs if job["id"] == job_id)["status"])

        async def one() -> None:
            api = QuantumSystemApi(http, url, Iam(http, url, KEY, 60), CRN, 60)
            job_id = str(uuid.uuid4())
            await storage.put(object_key("input", job_id), json.dumps(INPUT).encode())
            urls = {kind: {"type": "s3_compatible", "presigned_url": storage.service_url(
                "GET" if kind == "input" else "PUT", object_key(kind, job_id), 3600)} for kind in
                ("input", "results", "logs")}
            job = {"id": job_id, "backend": backend, "program_id": "sampler", "timeout_secs": 3600, "storage": urls}
            retry = 0
            while True:
                try:
                    await api.call("POST", "/v1/jobs", json=job, ok=(204,))
                    break
                except ApiError as exc:
                    if exc.status not in (423, 429):
                        raise
                    await asyncio.sleep(policy.backoff(retry))
                    retry += 1
            while await status(api, job_id) == "Running":
                await asyncio.sleep(policy.poll)
            if policy.reads_twice:
                await status(api, job_id)
            await storage.get(object_key("results", job_id))
            if policy.reads_twice:
                await status(api, job_id)
            await api.call("DELETE", f"/v1/jobs/{job_id}", ok=(204,))

        yield lambda: asyncio.gather(*(one() for _ in range(tasks)))


@dataclass
class Figures:
    """One way's figures over the rounds."""

    makespans: list[float]
    rejected: list[float]
    requests: list[float]


async def measure(service: Service, backend: str, tasks: int, way: Way) -> tuple[float, ...]:
    """Makespan, 429s drawn and API requests per task of one run of ``tasks`` tasks on ``backend``: from the start of
    the set-up way's run until every result is in hand and every lane free again (the last DELETE)."""
    before = await service.record()
    async with way() as run:
        started = time.time()  # wall clock, as the emulator's record of DELETEs
        await run()
        returned = time.time()
    after = await service.freed(backend)
    known = {delete["id"] for delete in before["backends"][backend]["deleted"]}
    deleted = [delete["time"] for delete in after["backends"][backend]["deleted"] if delete["id"] not in known]
    makespan = max(returned, *deleted) - started
    rejected = after["backends"][backend]["rejected_429"] - before["backends"][backend]["rejected_429"]
    requests = sum((Counter(after["requests"]) - Counter(before["requests"])).values())
    return makespan, rejected, requests / tasks


async def bench(tasks: int, lanes: int, durations: list[float], rounds: int, server: str, ways: tuple[str, ...],
                console: Console) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="qb"))
    service = Service(scratch, lanes, server)
    daemon = None
    try:
        daemon = start_daemon(service, lanes, scratch)
        await service.set_duration(0.0)
        await through_qrmid(daemon, lanes)  # warm: the backend described, the validation workers up
        runs: dict[str, Way] = {
            "qrmid": functools.partial(qrmid_way, daemon, tasks),
            **{way: functools.partial(independent_clients, service, policy, BACKENDS[way], tasks)
               for way, policy in POLICIES.items()}}
        for seconds in durations:
            await service.set_duration(seconds)
            await through_qrmid(daemon, lanes)
            figures = {way: Figures([], [], []) for way in ways}
            for index in range(rounds):
                order = ways[index % len(ways):] + ways[:index % len(ways)]  # each way goes first in turn
                for way in order:
                    makespan, rejected, requests = await measure(service, BACKENDS[way], tasks, runs[way])
                    figures[way].makespans.append(makespan)
                    figures[way].rejected.append(rejected)
                    figures[way].requests.append(requests)
                    console.print(f"T={seconds:g} s round {index + 1}/{rounds}: {way}: {makespan:.1f} s, "
                                  f"{rejected:.0f} HTTP 429, {requests:.1f} requests per task")
            console.print(table(figures, tasks, lanes, seconds, rounds, server, ways))
    finally:
        if daemon is not None:
            daemon.stop()
        service.stop()


def table(figures: dict[str, Figures], tasks: int, lanes: int, seconds: float, rounds: int, server: str,
          ways: tuple[str, ...]) -> Table:
    ideal = math.ceil(tasks / lanes) * seconds
    result = Table("submission", "makespan", "makespan / ideal", "lane utilization N·T/(L·makespan)",
                   "HTTP 429 drawn", "API requests per task", "median vs qrmid",
                   title=f"N={tasks} tasks, L={lanes} lanes, T={seconds:g} s (ideal ceil(N/L)·T = {ideal:.1f} s), "
                         f"{server} server, min–median–max of {rounds} interleaved rounds")
    ours = statistics.median(figures[ways[0]].makespans)
    for way in ways:
        found = figures[way]
        utilization = [tasks * seconds / (lanes * makespan) for makespan in found.makespans]
        result.add_row(way, spread(found.makespans, "s", digits=1),
                       spread([makespan / ideal for makespan in found.makespans], "", digits=2),
                       spread(utilization, "", digits=3), spread(found.rejected, ""),
                       spread(found.requests, "", digits=1),
                       f"{statistics.median(found.makespans) / ours:.2f}x makespan of {ways[0]}")
    return result


@click.command()
@click.option("--tasks", "-n", default=64, show_default=True, help="number of tasks N")
@click.option("--lanes", "-l", default=4, show_default=True, help="execution lanes L")
@click.option("--duration", "-t", "durations", multiple=True, type=float, default=(2.0, 0.5), show_default=True,
              help="emulated job duration T in seconds; repeat for several")
@click.option("--rounds", "-r", default=3, show_default=True, help="interleaved rounds of each way per T")
@click.option("--server", type=click.Choice(["current", "older-405", "older-404"]), default="current",
              show_default=True, help="the emulated server: older ones have no GET /v1/jobs/{id}")
@click.option("--way", "ways", multiple=True, type=click.Choice(WAYS), default=WAYS, show_default=True,
              help="the ways to compare; repeat for several")
def main(tasks: int, lanes: int, durations: tuple[float, ...], rounds: int, server: str,
         ways: tuple[str, ...]) -> None:
    """Makespan, lane utilization, 429s and requests per task: qrmid against QRMI's policy and a tuned client."""
    console = Console(width=160)  # never cut a figure, in a terminal or a pipe
    ordered = tuple(way for way in WAYS if way in ways)
    asyncio.run(bench(tasks, lanes, list(durations), rounds, server, ordered, console))


if __name__ == "__main__":
    main()
