"""Talks to slurmctld: checks that a lease's Slurm job exists, is running and belongs to the lease's owner
(``SlurmJobs``), and holds or frees a resource's licenses with reservations (``Scontrol``).

``squeue --json`` (Slurm 22.05 and later) gives every job slurmctld knows, with its state, uid and account;
Slurm 22.05's ``squeue`` ignores job filters when asked for JSON, so one snapshot answers every job id and
is shared by the checks of the next ``cache_seconds``. A job that is missing from, or not running in, a
cached snapshot is looked up again in a fresh one before the lease is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from qrmid.core.errors import InvalidArgument, PermissionDenied, Unavailable

log = logging.getLogger(__name__)

ACTIVE = frozenset({"RUNNING", "CONFIGURING"})  # the job holds its allocation
WAITING = frozenset({"PENDING"})  # admins may acquire for a job that has not started yet (e.g. from a prolog)


@dataclass(frozen=True, slots=True)
class SlurmJob:
    """What qrmid needs to know of a Slurm job."""

    id: str
    state: str
    uid: int
    user: str
    account: str


class SlurmJobs:
    """Looks Slurm jobs up with ``squeue --json``, never blocking the event loop."""

    def __init__(self, squeue: str = "squeue", *, cache_seconds: float = 5.0, timeout: float = 20.0,
                 slurm_conf: Path | None = None) -> None:
        self.squeue = squeue
        self.cache_seconds = cache_seconds
        self.timeout = timeout
        self.slurm_conf = slurm_conf
        self._snapshot: dict[str, SlurmJob] = {}
        self._taken = float("-inf")
        self._fetching: asyncio.Future[dict[str, SlurmJob]] | None = None

    async def verify(self, job_id: str, uid: int | None, admin: bool = False) -> SlurmJob:
        """The job ``job_id`` when a lease for the user ``uid`` may be bound to it: the job exists, is running
        (or, for an ``admin`` caller, still pending) and is that user's. PermissionDenied says why not;
        Unavailable when slurmctld cannot be asked."""
        if not job_id.isdigit():
            raise InvalidArgument(f"slurm_job_id {job_id!r} is not a Slurm job id (digits, e.g. $SLURM_JOB_ID)")
        if uid is None:
            raise PermissionDenied(f"cannot check that Slurm job {job_id} is yours: your identity has no uid "
                                   "(authenticate with MUNGE, or acquire without slurm_job_id)")
        allowed = ACTIVE | WAITING if admin else ACTIVE
        job = (await self._jobs(fresh=False)).get(job_id)
        if job is None or job.state not in allowed:
            job = (await self._jobs(fresh=True)).get(job_id)
        if job is None:
            raise PermissionDenied(f"Slurm job {job_id} does not exist (or ended long ago)")
        if job.state not in allowed:
            raise PermissionDenied(f"Slurm job {job_id} is {job.state}, not running")
        if job.uid != uid:
            raise PermissionDenied(f"Slurm job {job_id} belongs to {job.user} (uid {job.uid}), not to uid {uid}")
        return job

    async def _jobs(self, fresh: bool) -> dict[str, SlurmJob]:
        """The latest snapshot: reused within ``cache_seconds`` unless ``fresh``; one squeue at a time."""
        if self._fetching is not None:
            return await asyncio.shield(self._fetching)
        if not fresh and time.monotonic() - self._taken < self.cache_seconds:
            return self._snapshot
        self._fetching = asyncio.get_running_loop().create_future()
        try:
            self._snapshot = await self._fetch()
            self._taken = time.monotonic()
            self._fetching.set_result(self._snapshot)
            return self._snapshot
        except asyncio.CancelledError:
            self._fetching.cancel()
            raise
        except Exception as exc:
            self._fetching.set_exception(exc)
            self._fetching.exception()  # retrieved here: waiters, if any, get it too
            raise
        finally:
            self._fetching = None

    async def _fetch(self) -> dict[str, SlurmJob]:
        env = {**os.environ, "SLURM_CONF": str(self.slurm_conf)} if self.slurm_conf else None
        try:
            process = await asyncio.create_subprocess_exec(
                self.squeue, "--json", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env)
        except OSError as exc:
            raise Unavailable(f"cannot run {self.squeue!r} to check Slurm jobs: {exc.strerror}; "
                              "set [slurm] squeue to its path") from None
        try:
            async with asyncio.timeout(self.timeout):
                out, err = await process.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise Unavailable(f"slurmctld did not answer within {self.timeout:g} s; retry later") from None
        if process.returncode != 0:
            detail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
            raise Unavailable(f"squeue failed ({process.returncode}): {detail[0]}; retry later")
        doc = await asyncio.to_thread(_parse, out)
        if doc.get("errors"):
            first = doc["errors"][0]
            raise Unavailable(f"slurmctld cannot be asked about jobs: {first.get('description') or first}; "
                              "retry later")
        return {str(job["job_id"]): _job(job) for job in doc.get("jobs", [])}


def _parse(out: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(out)
    except ValueError as exc:
        raise Unavailable(f"squeue --json gave no JSON ({exc}); is this Slurm 22.05 or later?") from None
    if not isinstance(doc, dict):
        raise Unavailable("squeue --json gave no JSON object; is this Slurm 22.05 or later?")
    return doc


def _job(doc: dict[str, Any]) -> SlurmJob:
    state = doc.get("job_state", "")
    if isinstance(state, list):  # later Slurm releases give a list of state flags
        state = state[0] if state else ""
    return SlurmJob(id=str(doc["job_id"]), state=str(state), uid=int(doc.get("user_id", -1)),
                    user=str(doc.get("user_name") or doc.get("user_id")), account=str(doc.get("account") or ""))


@dataclass(frozen=True, slots=True)
class SlurmLicense:
    """A license as ``scontrol show license`` reports it."""

    name: str
    total: int
    reserved: int


class Scontrol:
    """Reads and changes slurmctld's reservations and licenses with ``scontrol``, never blocking the event loop."""

    def __init__(self, scontrol: str = "scontrol", *, timeout: float = 20.0, slurm_conf: Path | None = None) -> None:
        self.scontrol = scontrol
        self.timeout = timeout
        self.slurm_conf = slurm_conf

    async def reservations(self) -> dict[str, dict[str, str]]:
        """Every reservation slurmctld holds, by name, with its fields (``Licenses``, ``EndTime``, ...)."""
        out = await self._run("show", "reservation", "--oneliner")
        return {fields["ReservationName"]: fields for fields in map(_fields, out.splitlines())
                if "ReservationName" in fields}

    async def license(self, name: str) -> SlurmLicense:
        """License ``name`` as slurm.conf declares it; SlurmRefused when slurmctld has none so named."""
        out = await self._run("show", "license", "--oneliner")
        for fields in map(_fields, out.splitlines()):
            if fields.get("LicenseName") == name:
                return SlurmLicense(name, int(fields.get("Total", 0)), int(fields.get("Reserved", 0)))
        raise SlurmRefused(f"slurmctld has no license {name!r}: declare it in slurm.conf (Licenses={name}:COUNT), "
                           "then run scontrol reconfigure")

    async def hold(self, reservation: str, license: SlurmLicense, user: str, until: datetime | None = None) -> int:
        """Create ``reservation``, taking every unit of ``license`` that other reservations leave, from now on
        (until ``until``, else without end), for ``user`` alone: jobs asking for the license wait PENDING with
        reason Licenses. The units taken."""
        units = license.total - license.reserved
        if units <= 0:
            raise SlurmRefused(f"every unit of license {license.name} is reserved already, by reservations qrmid "
                               "does not manage: nothing left to hold")
        end = f"EndTime={until.astimezone().strftime('%Y-%m-%dT%H:%M:%S')}" if until else "Duration=infinite"
        await self._run("create", "reservation", f"ReservationName={reservation}", "Flags=LICENSE_ONLY",
                        f"Licenses={license.name}:{units}", "StartTime=now", end, f"Users={user}")
        return units

    async def delete(self, reservation: str) -> None:
        """Delete ``reservation``; one gone already (ended at its end time, or deleted by hand) is no fault."""
        try:
            await self._run("delete", f"ReservationName={reservation}")
        except SlurmRefused as exc:
            if "Requested reservation is invalid" not in str(exc):
                raise

    async def _run(self, *args: str) -> str:
        env = {**os.environ, "SLURM_CONF": str(self.slurm_conf)} if self.slurm_conf else None
        try:
            process = await asyncio.create_subprocess_exec(
                self.scontrol, *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env)
        except OSError as exc:
            raise Unavailable(f"cannot run {self.scontrol!r}: {exc.strerror}; set [slurm] scontrol to its path") from None
        try:
            async with asyncio.timeout(self.timeout):
                out, err = await process.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise Unavailable(f"slurmctld did not answer scontrol {args[0]} within {self.timeout:g} s") from None
        except asyncio.CancelledError:  # the daemon stops: scontrol is not left behind
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            raise
        if process.returncode != 0:
            detail = (err or out).decode(errors="replace").strip().splitlines()[:1] or ["no message"]
            if "Unable to contact slurm controller" in detail[0] or "Socket timed out" in detail[0]:
                raise Unavailable(f"slurmctld is unreachable: {detail[0]}")
            raise SlurmRefused(f"scontrol {' '.join(args[:2])} failed ({process.returncode}): {detail[0]}")
        return out.decode(errors="replace")


class SlurmRefused(Unavailable):
    """slurmctld answered, and refused (or has no such license); retrying alone will not help."""


def _fields(line: str) -> dict[str, str]:
    """``Key=Value`` pairs of one ``scontrol --oneliner`` line."""
    return dict(part.split("=", 1) for part in line.split() if "=" in part)
