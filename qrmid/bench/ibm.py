"""Lane scheduling against the IBM Quantum System API emulator: ``python -m qrmid.bench.ibm``.

N tasks, each a job of fixed emulated duration T, on a backend with L lanes for the HPC workload manager:

- through qrmid, which admits jobs per lane and deletes each as soon as its results are stored;
- the way today's QRMI clients do it, in the same run: every task an independent client that submits,
  retries HTTP 429 with exponential backoff (1 s doubling to 60 s), polls every second, reads the results
  and deletes the job. (The clients are coroutines of one process, not N processes: same wire behaviour,
  less load on the machine.)

Printed: makespan against the ideal ceil(N/L)*T and lane utilization N*T / (L * makespan).
"""

from __future__ import annotations

import asyncio
import json
import math
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Console
from rich.table import Table

from qrmid.backends.ibm_quantum_system.api import ApiError, Iam, QuantumSystemApi
from qrmid.backends.ibm_quantum_system.storage import Storage, object_key
from qrmid.client import AsyncClient, sampler_payload
from qrmid.emulators.launch import Proc, start_emulator, start_moto, start_qrmid

KEY, CRN, BUCKET = "bench-key", "crn:v1:local:bench", "bench"
CIRCUIT = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nbit[1] c;\nx $0;\nc[0] = measure $0;\n'
INPUT = {"pubs": [[CIRCUIT, None, 8]], "version": 2, "support_qiskit": True}


async def _through_qrmid(emulator: Proc, s3: Proc, backend: str, tasks: int, scratch: Path) -> float:
    socket = scratch / "qrmid.sock"
    config = scratch / "qrmid.toml"
    config.write_text(f'[daemon]\nsocket = "{socket}"\nlog_level = "warning"\n[[resources]]\n'
                      f'type = "ibm-quantum-system"\nname = "{backend}"\nQRMI_IBM_QS_ENDPOINT = "{emulator.url}"\n'
                      f'QRMI_IBM_QS_IAM_ENDPOINT = "{emulator.url}"\nQRMI_IBM_QS_IAM_APIKEY = "{KEY}"\n'
                      f'QRMI_IBM_QS_SERVICE_CRN = "{CRN}"\nQRMI_IBM_QS_AWS_ACCESS_KEY_ID = "k"\n'
                      f'QRMI_IBM_QS_AWS_SECRET_ACCESS_KEY = "s"\nQRMI_IBM_QS_S3_ENDPOINT = "{s3.url}"\n'
                      f'QRMI_IBM_QS_S3_BUCKET = "{BUCKET}"\nQRMI_IBM_QS_S3_REGION = "us-east-1"\n')
    daemon = start_qrmid(config, socket)
    try:
        async with AsyncClient(daemon.url) as qrmid:
            started = time.perf_counter()
            await asyncio.gather(*(qrmid.run(backend, sampler_payload(INPUT)) for _ in range(tasks)))
            return time.perf_counter() - started
    finally:
        daemon.stop()


async def _qrmi_style(emulator: Proc, s3: Proc, backend: str, tasks: int) -> float:
    async with httpx.AsyncClient(timeout=60) as http:
        storage = Storage(http, endpoint=s3.url, service_endpoint=s3.url, bucket=BUCKET, region="us-east-1",
                          access_key="k", secret_key="s", deadline=60)
        await storage.start()

        async def one() -> None:
            api = QuantumSystemApi(http, emulator.url, Iam(http, emulator.url, KEY, 60), CRN, 60)
            job_id = str(uuid.uuid4())
            await storage.put(object_key("input", job_id), json.dumps(INPUT).encode())
            urls = {kind: {"type": "s3_compatible", "presigned_url": storage.service_url(
                "GET" if kind == "input" else "PUT", object_key(kind, job_id), 3600)} for kind in
                ("input", "results", "logs")}
            job = {"id": job_id, "backend": backend, "program_id": "sampler", "timeout_secs": 3600, "storage": urls}
            backoff = 1.0
            while True:
                try:
                    await api.call("POST", "/v1/jobs", json=job, ok=(204,))
                    break
                except ApiError as exc:
                    if exc.status not in (423, 429):
                        raise
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 60.0)
            while (await api.get(f"/v1/jobs/{job_id}"))["status"] == "Running":
                await asyncio.sleep(1.0)
            await storage.get(object_key("results", job_id))
            await api.call("DELETE", f"/v1/jobs/{job_id}", ok=(204,))

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(tasks)))
        return time.perf_counter() - started


@click.command()
@click.option("--tasks", "-n", default=64, help="number of tasks N")
@click.option("--lanes", "-l", default=4, help="execution lanes L")
@click.option("--job-seconds", "-t", default=2.0, help="emulated job duration T")
def main(tasks: int, lanes: int, job_seconds: float) -> None:
    """Makespan and lane utilization: qrmid against QRMI-style clients retrying 429."""
    import boto3

    scratch = Path(tempfile.mkdtemp(prefix="qb"))
    config = scratch / "emulator.toml"
    config.write_text(f'api_keys = ["{KEY}"]\nservice_crn = "{CRN}"\n' + "".join(
        f'[[backends]]\nname = "{name}"\ndevice = "perth"\nnoise = false\njob_duration_s = {job_seconds}\n'
        f'lanes = {{ hpc_workload_manager = {lanes}, ibm_quantum_compute = 0 }}\n' for name in ("qrmid", "qrmi")))
    s3, emulator = start_moto(), start_emulator(config, "--log-level", "warning")
    try:
        boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1", aws_access_key_id="k",
                     aws_secret_access_key="s").create_bucket(Bucket=BUCKET)
        ours = asyncio.run(_through_qrmid(emulator, s3, "qrmid", tasks, scratch))
        theirs = asyncio.run(_qrmi_style(emulator, s3, "qrmi", tasks))
        record: dict[str, Any] = httpx.get(f"{emulator.url}/_emulator/record").json()["backends"]
    finally:
        emulator.stop()
        s3.stop()
    ideal = math.ceil(tasks / lanes) * job_seconds
    table = Table("submission", "makespan", "ideal ceil(N/L)*T", "makespan / ideal", "lane utilization",
                  "most jobs stored", "429 answers", title=f"N={tasks} tasks, L={lanes} lanes, T={job_seconds:g} s")
    for label, makespan, name in (("qrmid", ours, "qrmid"), ("QRMI-style clients", theirs, "qrmi")):
        table.add_row(label, f"{makespan:.1f} s", f"{ideal:.1f} s", f"{makespan / ideal:.2f}",
                      f"{tasks * job_seconds / (lanes * makespan):.2f}", str(record[name]["max_stored"]),
                      str(record[name]["rejected_429"]))
    Console().print(table)


if __name__ == "__main__":
    main()
