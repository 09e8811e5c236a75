"""The ``pasqal-cloud`` adapter: Pulser sequences checked against the device spec, packed into open batches,
followed by one shared poll per batch, results read through each job's results link."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from qrmid.backends.base import (
    Adapter,
    BackendState,
    BackendStatus,
    BackendUnavailable,
    Busy,
    CredentialsRefused,
    InvalidPayload,
    JobState,
    JobStatus,
    NotDispatching,
    Output,
)
from qrmid.backends.checks import Check
from qrmid.backends.pasqal_cloud.api import ApiError, PasqalApi
from qrmid.backends.pasqal_cloud.auth import Tokens, grant_of
from qrmid.backends.pasqal_cloud.packer import Limits, Packer
from qrmid.backends.pasqal_cloud.settings import Settings
from qrmid.backends.payloads import Payload, PayloadKind, PulserSequence
from qrmid.backends.redact import Redactor, redacting
from qrmid.backends.settings import given

if TYPE_CHECKING:
    from qrmid.backends.pulser_jobs import Limits as SequenceLimits


@dataclass(frozen=True)
class Spec:
    """The device spec the service publishes for the resource's device type."""

    text: str  # pulser device abstract representation (JSON text)
    name: str
    max_atoms: int | None
    limits: SequenceLimits  # runs and duration


class PasqalCloud(Adapter):
    """One Pasqal Cloud device type. ``slots`` bounds the tasks in flight; the packer decides the batches."""

    payload_kinds = frozenset({PayloadKind.PULSER_SEQUENCE})
    remote = True

    def __init__(self, settings: Settings) -> None:
        from qrmid.backends import pulser_jobs  # Pulser loads only when a resource of this type exists

        self.settings = settings
        self.jobs = pulser_jobs
        self.device_type = settings.device
        self.redact = Redactor()
        self._http: httpx.AsyncClient | None = None
        self._api: PasqalApi | None = None
        self._packer: Packer | None = None
        self._spec: Spec | None = None
        self._describing = asyncio.Lock()
        if settings.dispatch:  # else the member holds no credentials: the spec comes through adopt_target
            self._connect()

    def _connect(self) -> None:
        """The service's client and the batch packer, with the resource's credentials."""
        settings = self.settings
        self._http = httpx.AsyncClient(timeout=settings.request_timeout_seconds)
        deadline = settings.retry_deadline_seconds
        token = settings.auth_token.get_secret_value() if settings.auth_token else ""
        self.redact = Redactor(token, settings.client_id,
                               *(secret.get_secret_value() for secret in (settings.client_secret, settings.password)
                                 if secret is not None))
        tokens = Tokens(self._http, grant_of(settings), token, deadline, self.redact)
        self._api = PasqalApi(self._http, str(settings.base_url), tokens, deadline)
        limits = Limits(window=settings.batch_window_seconds, max_jobs=settings.max_jobs_per_batch,
                        max_runs=settings.max_runs_per_batch, close_when_idle=settings.close_when_idle)
        self._packer = Packer(self._api, self.device_type, given(settings.project_id), limits, settings.poll_interval,
                              record=lambda refs: self.record_refs(refs), redact=self.redact,
                              min_poll_interval=settings.min_poll_interval)

    @property
    def api(self) -> PasqalApi:
        if self._api is None:
            raise NotDispatching(self.settings.name)
        return self._api

    @property
    def packer(self) -> Packer:
        if self._packer is None:
            raise NotDispatching(self.settings.name)
        return self._packer

    @property
    def slots(self) -> int:
        return self.settings.slots

    async def start(self) -> None:
        if self._packer is not None:
            self._packer.start()  # the device spec is read by the status check, off the start-up path

    async def close(self) -> None:
        if self._packer is not None:
            await self._packer.stop()
        if self._http is not None:
            await self._http.aclose()

    @redacting
    async def status(self) -> BackendStatus:
        # one attempt: an unreachable service reads OFFLINE now and is asked again on the status interval
        devices = await self.api.once("/api/v1/devices", {"device_type": self.device_type}, auth=False)
        if self._spec is None:
            try:
                await self._describe()
            except Exception as exc:  # without the spec no payload can be checked, so nothing can run
                return BackendStatus(BackendState.OFFLINE, f"cannot read the spec of device {self.device_type} "
                                                           f"from Pasqal Cloud: {exc}")
        device = next((d for d in devices or [] if d.get("device_type") == self.device_type), None)
        if device is None:
            return BackendStatus(BackendState.OFFLINE, f"Pasqal Cloud lists no device of type {self.device_type}")
        availability = device.get("availability")
        if availability == "ACTIVE":
            up = device.get("status", "UP") == "UP"
            return BackendStatus(BackendState.ONLINE, "" if up else
                                 f"device is {device.get('status')}: its jobs wait on Pasqal Cloud until it is up")
        if availability == "INACTIVE":
            return BackendStatus(BackendState.PAUSED, f"device {self.device_type} is INACTIVE on Pasqal Cloud")
        return BackendStatus(BackendState.OFFLINE, f"device {self.device_type} is {availability} on Pasqal Cloud")

    @redacting
    async def target(self) -> str:
        try:
            spec = self._spec or await self._describe()
        except BackendUnavailable:  # credentials refused, or not this member's to read
            raise
        except ApiError as exc:
            if exc.status in (401, 403):
                raise CredentialsRefused(f"Pasqal Cloud at {self.settings.base_url} refused qrmid's credentials "
                                         f"({exc}); check the resource's QRMI_PASQAL_CLOUD_* credentials") from None
            raise BackendUnavailable(f"Pasqal Cloud at {self.settings.base_url} could not give the spec of device "
                                     f"{self.device_type}: {exc}") from None
        except Exception as exc:
            raise BackendUnavailable(f"Pasqal Cloud at {self.settings.base_url} cannot be reached: {exc}") from None
        return json.dumps([{"device_type": self.device_type, "specs": spec.text}])

    def metadata(self) -> dict[str, str]:
        return {"backend_name": self.device_type, "device_type": self.device_type}

    def validate(self, payload: Payload) -> Check:
        if not isinstance(payload, PulserSequence):
            raise InvalidPayload("pasqal-cloud runs Pulser sequence payloads only")
        spec = self._spec
        if spec is None:
            raise Busy(f"the spec of device {self.device_type} has not been read from Pasqal Cloud yet (the "
                       f"resource's status says why); retry once the resource is online")
        limits = dataclasses.replace(spec.limits, max_atoms=spec.max_atoms or sys.maxsize)
        return Check(self.jobs.check, (payload.sequence, payload.job_runs, limits, spec.name))

    @redacting
    async def submit(self, task_id: str, payload: Payload) -> str:
        assert isinstance(payload, PulserSequence)
        self.packer.add(task_id, payload.sequence, payload.job_runs)
        return task_id  # the job is placed in a batch in the background; wait() reports a failure to place it

    @redacting
    async def attach(self, task_id: str, ref: str | None) -> str | None:
        """A task whose placement was journaled is followed in its batch; one whose placing write was
        interrupted is looked up (by the new batch's tag, or in the open batch); one that never got as far as
        that write is submitted again (the packer journals where a job will land before creating it)."""
        if ref is None or not ref.startswith("{"):
            return None
        placement = json.loads(ref)
        found = (str(placement["batch"]), str(placement["job"])) if "job" in placement else \
            await self.packer.find(placement)
        if found is None:
            return None
        await self.packer.adopt(task_id, *found)
        return task_id

    @redacting
    async def wait(self, ref: str, timeout: float) -> JobStatus:
        job = self.packer.jobs.get(ref)
        if job is None:
            return await self.poll(ref)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await job.settled.wait()
        return job.status or JobStatus(JobState.RUNNING)

    @redacting
    async def poll(self, ref: str) -> JobStatus:
        job = self.packer.jobs.get(ref)
        if job is None:
            return JobStatus(JobState.FAILED, "this daemon does not follow the task's job (was it restarted?)")
        return job.status or JobStatus(JobState.RUNNING)

    @redacting
    async def cancel(self, ref: str) -> None:
        await self.packer.cancel(ref)

    @redacting
    async def output(self, ref: str) -> Output:
        job = self.packer.jobs.get(ref)
        if job is None:
            raise RuntimeError("this daemon does not follow the task's job (was it restarted?)")
        link = None
        for _ in range(10):  # a job can read DONE a moment before its results are stored
            link = (await self.api.call("GET", f"/api/v1/jobs/{job.id}/results_link")).get("results_link")
            if link:
                break
            await asyncio.sleep(0.2)
        if not link:
            raise RuntimeError(f"job {job.id} is DONE but Pasqal Cloud gives no results link for it")
        results = await self.api.download(str(link))
        counter = results.get("counter") if isinstance(results, dict) else None
        if not isinstance(counter, dict):
            raise RuntimeError(f"the results of job {job.id} have no counter")  # noqa: TRY004 - a backend fault
        batch = job.batch.id if job.batch else "?"
        logs = f"Pasqal Cloud job {job.id} in batch {batch} on {self.device_type}: {sum(counter.values())} runs\n"
        return Output(json.dumps({"counter": counter}).encode(), logs=logs)

    @redacting
    async def cleanup(self, ref: str) -> None:
        self.packer.forget(ref)

    def flush(self) -> None:
        if self._packer is not None:
            self._packer.idle()

    async def _describe(self) -> Spec:
        """Read and cache the device spec (``devices/specs/{type}``, else the public specs)."""
        async with self._describing:
            if self._spec is not None:
                return self._spec
            try:
                specs = (await self.api.call("GET", f"/api/v1/devices/specs/{self.device_type}"))["specs"]
            except ApiError as exc:
                if exc.status not in (404, 405):
                    raise
                listing = await self.api.call("GET", "/api/v1/devices/public-specs", auth=False)
                specs = next((e["specs"] for e in listing if e.get("device_type") == self.device_type), None)
                if specs is None:
                    raise RuntimeError(f"Pasqal Cloud publishes no spec for device type {self.device_type}") from None
            self._spec = await asyncio.to_thread(self._parse_spec, _spec_text(specs))
            return self._spec

    async def adopt_target(self, target: str) -> None:
        self._spec = await asyncio.to_thread(self._read_target, target)

    def _read_target(self, text: str) -> Spec:
        """The spec of the resource's device type in a published target; ValueError when it holds none."""
        where = f"the target published for resource {self.settings.name}"
        try:
            entries = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ValueError(f"{where} is not JSON: {exc}") from None
        if not (isinstance(entries, list) and all(isinstance(entry, dict) for entry in entries)):
            raise ValueError(f"{where} is not a Pasqal device list: a JSON array of "
                             f'{{"device_type": ..., "specs": ...}} objects')
        specs = next((entry.get("specs") for entry in entries if entry.get("device_type") == self.device_type), None)
        if specs is None:
            listed = ", ".join(str(entry.get("device_type")) for entry in entries) or "none"
            raise ValueError(f"{where} has no spec of device type {self.device_type} (it lists {listed}); is "
                             f"device_type the same on every member?")
        try:
            return self._parse_spec(_spec_text(specs))
        except Exception as exc:  # pulser's deserializer raises many kinds (schema, key, type errors)
            raise ValueError(f"{where}: the spec of device type {self.device_type} is not a Pulser device: "
                             f"{str(exc)[:500]}") from None

    def _parse_spec(self, text: str) -> Spec:
        from pulser.abstract_repr import deserialize_device

        device = deserialize_device(text)
        # validate() checks the atom count itself, so that its message names the device
        limits = self.jobs.Limits(max_atoms=sys.maxsize, max_runs=device.max_runs or sys.maxsize,
                                  max_duration_ns=device.max_sequence_duration)
        return Spec(text, device.name, device.max_atom_num, limits)


def _spec_text(specs: object) -> str:
    """A device spec as published (JSON text, or its object), as the JSON text Pulser reads."""
    return specs if isinstance(specs, str) else json.dumps(specs)
