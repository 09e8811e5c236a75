"""The ``ibm-quantum-system`` adapter: lanes as slots, the S3 data flow, jobs polled to the end, then DELETE."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, TypeVar

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
from qrmid.backends.ibm_quantum_system.api import ApiError, Iam, QuantumSystemApi
from qrmid.backends.ibm_quantum_system.follow import Follower
from qrmid.backends.ibm_quantum_system.settings import Settings
from qrmid.backends.ibm_quantum_system.storage import OBJECTS, Storage, object_key
from qrmid.backends.payloads import Payload, PayloadKind, QiskitPrimitive
from qrmid.backends.redact import Redactor, redacting
from qrmid.backends.settings import given

log = logging.getLogger(__name__)

JOB_ROUTE, LANES_ROUTE = "GET /v1/jobs/{id}", "GET /v1/backends/{name}/lanes"  # missing on older servers
_STATES = {"Running": JobState.RUNNING, "Completed": JobState.COMPLETED, "Failed": JobState.FAILED,
           "Cancelled": JobState.CANCELLED}


class IbmQuantumSystem(Adapter):
    """One IBM backend. ``slots`` is the lane count the service grants the HPC workload manager."""

    payload_kinds = frozenset({PayloadKind.QISKIT_PRIMITIVE})
    remote = True
    stages_ahead = True  # the next job's input is stored and presigned while the lanes are busy

    def __init__(self, settings: Settings) -> None:
        from qrmid.backends import qiskit_jobs  # Qiskit loads only when a resource of this type exists

        self.settings = settings
        self.jobs = qiskit_jobs
        self.backend = settings.backend or settings.name
        self._lanes = settings.lanes
        self._configuration: dict[str, Any] | None = None
        self._target = ""
        self._isa: Any = None
        self._removals: set[asyncio.Task[Any]] = set()
        self._unsure: set[str] = set()  # jobs that may be stored: looked up before they are posted again
        self._orphans: set[str] = set()  # jobs of failed tasks that may be stored: removed when they turn up
        self._staged: dict[str, dict[str, Any]] = {}  # job id -> its JobRequest, input stored, URLs presigned
        self._early: dict[str, asyncio.Task[tuple[bytes | None, bytes | None]]] = {}  # job id -> its objects' reading
        self._resolving: asyncio.Task[None] | None = None
        self.follower = Follower(self._look, settings.poll_interval, self._read_early)
        self.redact = Redactor()
        self._http: httpx.AsyncClient | None = None
        self._api: QuantumSystemApi | None = None
        self._storage: Storage | None = None
        if settings.dispatch:  # else the member holds no credentials: the target comes through adopt_target
            self._connect()

    def _connect(self) -> None:
        """The service's and S3's clients, with the resource's credentials."""
        settings = self.settings
        apikey, key_id, secret_key = (given(secret).get_secret_value() for secret in (
            settings.iam_apikey, settings.aws_access_key_id, settings.aws_secret_access_key))
        self._http = httpx.AsyncClient(timeout=settings.request_timeout_seconds)
        deadline = settings.retry_deadline_seconds
        self.redact = Redactor(apikey, key_id, secret_key)
        iam = Iam(self._http, str(settings.iam_endpoint), apikey, deadline, self.redact)
        self._api = QuantumSystemApi(self._http, str(settings.endpoint), iam, given(settings.service_crn), deadline)
        self._storage = Storage(
            self._http, endpoint=str(settings.s3_endpoint),
            service_endpoint=str(settings.s3_endpoint_for_qsapi or settings.s3_endpoint),
            bucket=given(settings.s3_bucket), region=given(settings.s3_region), access_key=key_id,
            secret_key=secret_key, deadline=deadline)

    @property
    def api(self) -> QuantumSystemApi:
        if self._api is None:
            raise NotDispatching(self.settings.name)
        return self._api

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            raise NotDispatching(self.settings.name)
        return self._storage

    @property
    def slots(self) -> int:
        return min(self._lanes, self.settings.max_lanes) if self.settings.max_lanes else self._lanes

    async def start(self) -> None:
        if self._storage is not None:
            await self._storage.start()  # the description is read by the first status check, off the start-up path

    async def close(self) -> None:
        if self._resolving is not None:
            self._resolving.cancel()
        for ref in list(self._early):
            self._drop_early(ref)
        await self.follower.close()
        await asyncio.gather(*self._removals, *filter(None, [self._resolving]), return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()

    @redacting
    async def status(self) -> BackendStatus:
        backend = await self.api.get(f"/v1/backends/{self.backend}")
        if self._orphans and (self._resolving is None or self._resolving.done()):  # in the background: a status check never waits on it
            self._resolving = asyncio.create_task(self._resolve_orphans())
        await self._read_lanes()
        if self._configuration is None:
            await self._describe()
        state = {"online": BackendState.ONLINE, "paused": BackendState.PAUSED}.get(backend.get("status"),
                                                                                  BackendState.OFFLINE)
        if state is BackendState.ONLINE and backend.get("locked"):
            return BackendStatus(BackendState.PAUSED, "reserved: the backend runs only its reservation's jobs",
                                 reserved=True)
        return BackendStatus(state, backend.get("message", "") if state is not BackendState.ONLINE else "")

    @redacting
    async def target(self) -> str:
        if not self._target:
            try:
                await self._describe()
            except BackendUnavailable:  # credentials refused, or not this member's to read
                raise
            except ApiError as exc:
                if exc.status in (401, 403):
                    raise CredentialsRefused(f"the IBM Quantum System API at {self.settings.endpoint} refused "
                                             f"qrmid's credentials ({exc}); check QRMI_IBM_QS_IAM_APIKEY and "
                                             f"QRMI_IBM_QS_SERVICE_CRN") from None
                raise BackendUnavailable(f"the IBM Quantum System API at {self.settings.endpoint} could not "
                                         f"describe backend {self.backend}: {exc}") from None
            except Exception as exc:
                raise BackendUnavailable(f"the IBM Quantum System API at {self.settings.endpoint} cannot be "
                                         f"reached: {exc}") from None
        return self._target

    def metadata(self) -> dict[str, str]:
        return {"backend_name": self.backend}

    def validate(self, payload: Payload) -> Check:
        if not isinstance(payload, QiskitPrimitive):
            raise InvalidPayload("ibm-quantum-system runs Qiskit primitive payloads only")
        configuration = self._configuration
        if configuration is None:  # read by the status check: until then no circuit can be checked against it
            raise Busy(f"the configuration of backend {self.backend} has not been read yet (the resource's status "
                       f"says why); retry once the resource is online")
        limits = self.jobs.Limits(max_qubits=int(configuration.get("n_qubits", 10_000)),
                                  max_shots=int(configuration.get("max_shots", 10**7)),
                                  max_task_shots=self.settings.max_task_shots)
        from qrmid.backends.ibm_quantum_system.isa import check_input  # loaded with Qiskit by __init__

        return Check(check_input, (payload.program_id, payload.input, limits, self._isa))

    @redacting
    async def submit(self, task_id: str, payload: Payload) -> str:
        """Store the input, then POST the job. The job id is the task id, so a POST repeated after a lost answer
        or a restart can never make a twin; and as the service may answer 429 before it looks for a duplicate id,
        no refusal is taken to mean the job did not land: the job is looked up first. A job's S3 objects are
        removed only once it is known not to exist, or released."""
        assert isinstance(payload, QiskitPrimitive)
        job_id = task_id
        if job_id in self._unsure:  # an earlier attempt may have landed: post again only if it surely did not
            try:
                stored = await self._stored(job_id)
            except Exception as exc:
                raise Busy(f"cannot tell whether job {job_id} is stored on the service ({exc})") from None
            self._unsure.discard(job_id)
            if stored:
                self.follower.follow(job_id)
                return job_id
        job = self._staged.pop(job_id, None) or await self._stage(job_id, payload)
        try:
            await self.api.call("POST", "/v1/jobs", json=job, ok=(204,))
        except ApiError as exc:
            if exc.status == 409 and exc.code == "1231":
                self.follower.follow(job_id)
                return job_id  # already stored by an earlier attempt of this very task
            return await self._refused(job_id, exc)
        except Exception as exc:  # retries ran out or the connection broke: the POST may have landed
            return await self._unanswered(job_id, exc)
        self.follower.follow(job_id, time.monotonic())
        return job_id

    @redacting
    async def stage(self, task_id: str, payload: Payload) -> None:
        """Store the input and presign the job's URLs now, so that the POST goes out as soon as a lane frees."""
        assert isinstance(payload, QiskitPrimitive)
        self._staged[task_id] = await self._stage(task_id, payload)

    @redacting
    async def unstage(self, task_id: str) -> None:
        if self._staged.pop(task_id, None) is not None:
            await self._delete_objects(task_id)

    async def _stage(self, job_id: str, payload: QiskitPrimitive) -> dict[str, Any]:
        """The JobRequest of ``job_id``, its input stored in S3 and its URLs presigned."""
        expires = self.settings.job_timeout_seconds
        await self.storage.put(object_key("input", job_id), payload.input.encode())
        storage = {kind: {"type": "s3_compatible",
                          "presigned_url": self.storage.service_url("GET" if kind == "input" else "PUT",
                                                                    object_key(kind, job_id), expires)}
                   for kind in OBJECTS}
        return {"id": job_id, "backend": self.backend, "program_id": payload.program_id,
                "log_level": self.settings.log_level, "timeout_secs": expires, "storage": storage}

    async def _refused(self, job_id: str, refusal: ApiError) -> str:
        """The service refused a POST; an earlier attempt of it may have stored the job all the same."""
        try:
            stored = await self._stored(job_id)
        except Exception as exc:
            self._unsure.add(job_id)  # looked up again before the next POST; its objects stay
            raise Busy(f"job {job_id} was refused ({refusal}), and whether an earlier attempt stored it cannot be "
                       f"told now ({exc})") from None
        if stored:
            return job_id
        await self._delete_objects(job_id)
        if refusal.status == 429 or refusal.code == "1232":
            raise Busy(f"execution lanes full ({refusal.message})") from None
        if refusal.status == 423 or refusal.code == "1233":
            raise Busy(f"backend reserved ({refusal.message})") from None
        raise refusal

    async def _unanswered(self, job_id: str, failure: Exception) -> str:
        """A POST got no answer: follow the job if it landed; fail the task if it surely did not. When that cannot
        be told either, the task fails and the job is resolved later: removed if it turns up, its objects with it."""
        try:
            stored = await self._stored(job_id)
        except Exception:
            self._orphans.add(job_id)
            raise RuntimeError(f"{failure}; whether job {job_id} reached the service is unknown: it is cancelled "
                               f"and deleted if it turns up") from None
        if stored:
            return job_id
        await self._delete_objects(job_id)
        raise failure

    @redacting
    async def attach(self, task_id: str, ref: str | None) -> str | None:
        """A journaled job is followed again. A task caught mid-submission is looked up by its job id (the task
        id): followed if the service stores the job, submitted again only if it surely does not; when the
        service cannot tell now, the task is queued again and looked up once more before it is posted."""
        if ref is not None:
            return ref
        try:
            stored = await self._stored(task_id)
        except Exception as exc:
            log.warning("%s: cannot tell whether job %s is stored on the service (%s); it is looked up again "
                        "before it is submitted", self.settings.name, task_id, self.redact(str(exc)))
            self._unsure.add(task_id)
            return None
        if not stored:  # its input may have been staged before the stop: stored again when it is submitted
            try:
                await self._delete_objects(task_id)
            except Exception as exc:  # left for the next submission to overwrite
                log.info("%s: the objects of job %s, never posted, stay for now: %s", self.settings.name, task_id,
                         self.redact(str(exc)))
            return None
        self.follower.follow(task_id)
        return task_id

    @redacting
    async def poll(self, ref: str) -> JobStatus:
        return self._status(ref, await self._job(ref))

    @redacting
    async def wait(self, ref: str, timeout: float) -> JobStatus:
        """The job's state once it ended or ``timeout`` passed; the follower looks at it when it is due to end."""
        try:
            job = await self.follower.ended(ref, timeout)
        except asyncio.CancelledError:
            self.follower.forget(ref)
            self._drop_early(ref)
            raise
        return JobStatus(JobState.RUNNING) if job is None else self._status(ref, job)

    def _status(self, ref: str, job: dict[str, Any]) -> JobStatus:
        state = _STATES.get(job.get("status", ""))
        if state is None:
            log.warning("%s: job %s has unknown status %s", self.settings.name, ref,
                        self.redact(repr(job.get("status"))))
            return JobStatus(JobState.RUNNING)
        if state is JobState.FAILED:
            code = job.get("reason_code")
            return JobStatus(state, f"IBM job failed (reason code {code}): {job.get('reason_message', '')}".strip())
        if state is JobState.CANCELLED:
            return JobStatus(state, job.get("reason_message") or "cancelled on the backend")
        return JobStatus(state)

    @redacting
    async def cancel(self, ref: str) -> None:
        try:
            await self.api.call("POST", f"/v1/jobs/{ref}/cancel", ok=(204,))
        except ApiError as exc:
            if exc.status not in (404, 409):  # already gone or already terminal
                raise

    @redacting
    async def output(self, ref: str) -> Output:
        """The job's results and logs: those read as its end was looked for, the others now."""
        early_results, early_logs = await self._early_objects(ref)
        results, logs = await asyncio.gather(
            _ready(early_results) if early_results is not None else self.storage.get(object_key("results", ref)),
            _ready(early_logs) if early_logs is not None else self._logs(ref))
        if results is None:
            raise RuntimeError(f"job {ref} completed but wrote no results object")
        return Output(data=results, logs=logs.decode(errors="replace"))

    async def _logs(self, ref: str) -> bytes:
        """The job's log text; a job can read Completed a moment before its log object lands."""
        for _ in range(10):
            logs = await self.storage.get(object_key("logs", ref))
            if logs is not None:
                return logs
            await asyncio.sleep(0.2)
        return b""

    def _read_early(self, ref: str) -> None:
        """Start reading a job's results and logs as the look for its end goes out, so that they are in hand when
        the job is seen Completed: the service writes each object once, before it reports the end (one not there
        yet is read again then). Objects of a job that did not complete are never used."""
        if ref not in self._early and self._storage is not None:
            reading = asyncio.create_task(self._objects(ref))
            reading.add_done_callback(_retrieve)
            self._early[ref] = reading

    async def _objects(self, ref: str) -> tuple[bytes | None, bytes | None]:
        results, logs = await asyncio.gather(*(self.storage.get(object_key(kind, ref)) for kind in ("results", "logs")))
        return results, logs

    async def _early_objects(self, ref: str) -> tuple[bytes | None, bytes | None]:
        """The objects read early for ``ref``, (None, None) when none were or the reading failed (read again)."""
        reading = self._early.pop(ref, None)
        if reading is None:
            return None, None
        try:
            return await reading
        except Exception as exc:
            log.info("%s: reading the output of job %s early failed (%s); it is read again", self.settings.name, ref,
                     self.redact(str(exc)))
            return None, None

    def _drop_early(self, ref: str) -> None:
        reading = self._early.pop(ref, None)
        if reading is not None:
            reading.cancel()

    @redacting
    async def cleanup(self, ref: str) -> None:
        """DELETE the job, which frees its lane (cancelling it first if it still runs), then its objects."""
        self.follower.forget(ref)
        self._drop_early(ref)
        for _ in range(5):
            try:
                await self.api.call("DELETE", f"/v1/jobs/{ref}", ok=(204, 404))
                break
            except ApiError as exc:
                if not (exc.status == 409 and exc.code == "1337"):
                    raise
                await self.cancel(ref)
                await asyncio.sleep(0.5)
        if self.settings.delete_objects:  # the lane is free already; the objects can go in the background
            removal = asyncio.create_task(self._delete_objects(ref))
            self._removals.add(removal)
            removal.add_done_callback(self._removals.discard)

    async def _job(self, ref: str) -> dict[str, Any]:
        job = await self._lookup(ref)
        if job is None:
            raise RuntimeError(f"job {ref} is no longer stored on the backend")
        return job

    async def _stored(self, job_id: str) -> bool:
        """Whether the service stores job ``job_id``, in any state; raises when it cannot tell."""
        return await self._lookup(job_id) is not None

    async def _lookup(self, ref: str) -> dict[str, Any] | None:
        """The stored job, or None when the service says it has no such job."""
        return (await self._look([ref])).get(ref)

    async def _look(self, refs: list[str]) -> dict[str, dict[str, Any] | None]:
        """The stored jobs ``refs`` (None for those the service does not have): each by GET /v1/jobs/{id}, or, on
        an older server without that route, all from one GET /v1/jobs, which then answers for every job it lists."""
        if JOB_ROUTE not in self.api.lacks:
            found: dict[str, dict[str, Any] | None] = {}
            if JOB_ROUTE not in self.api.has and len(refs) > 1:  # learn with one call whether the route exists
                found = await self._look(refs[:1])
                if JOB_ROUTE in self.api.lacks:  # that call fell back to the job list, which answers for all
                    return {**dict.fromkeys(refs), **found}
                refs = refs[1:]
            looks = await asyncio.gather(*(self._get_job(ref) for ref in refs), return_exceptions=True)
            for ref, look in zip(refs, looks, strict=True):
                if isinstance(look, BaseException):
                    if not isinstance(look, _NoJobRoute):
                        raise look
                else:
                    found[ref] = look
            if JOB_ROUTE not in self.api.lacks:
                return found
        listed = {job.get("id"): dict(job) for job in (await self.api.get("/v1/jobs")).get("jobs", [])}
        return {**dict.fromkeys(refs), **listed}

    async def _get_job(self, ref: str) -> dict[str, Any] | None:
        try:
            job: dict[str, Any] = await self.api.get(f"/v1/jobs/{ref}")
            self.api.has.add(JOB_ROUTE)
            return job
        except ApiError as exc:
            if exc.status == 404 and exc.code == "1291":
                self.api.has.add(JOB_ROUTE)
                return None
            if exc.status not in (404, 405):
                raise
            if JOB_ROUTE not in self.api.lacks:
                log.info("%s: the service has no %s (HTTP %d): jobs are looked up in GET /v1/jobs from now on",
                         self.settings.name, JOB_ROUTE, exc.status)
                self.api.lacks.add(JOB_ROUTE)
        raise _NoJobRoute

    async def _resolve_orphans(self) -> None:
        """Jobs whose POST went unanswered while their task failed: gone ones leave their objects behind to
        remove; stored ones are cancelled and DELETEd, which frees their lanes."""
        for job_id in list(self._orphans):
            try:
                job = await self._lookup(job_id)
                if job is not None:
                    await self.cleanup(job_id)  # cancels a running job, DELETEs it, then removes its objects
                else:
                    await self._delete_objects(job_id)
            except Exception as exc:  # tried again at the next status check
                log.info("%s: job %s of a failed submission is not resolved yet: %s", self.settings.name, job_id,
                         self.redact(str(exc)))
                continue
            self._orphans.discard(job_id)

    async def _describe(self) -> None:
        configuration = await self.api.get(f"/v1/backends/{self.backend}/configuration")
        properties = await self.api.get(f"/v1/backends/{self.backend}/properties")
        isa = await asyncio.to_thread(_isa_of, configuration)
        self._hold(json.dumps({"configuration": configuration, "properties": properties}), configuration, isa)

    async def adopt_target(self, target: str) -> None:
        configuration, isa = await asyncio.to_thread(self._read_target, target)
        self._hold(target, configuration, isa)

    def _read_target(self, text: str) -> tuple[dict[str, Any], Any]:
        """The configuration and instruction set in a published target; ValueError when it holds none."""
        where = f"the target published for resource {self.settings.name}"
        try:
            target = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ValueError(f"{where} is not JSON: {exc}") from None
        if not (isinstance(target, dict) and isinstance(target.get("configuration"), dict)
                and isinstance(target.get("properties"), dict)):
            raise ValueError(f"{where} is not an IBM backend description: a JSON object with "  # noqa: TRY004 - bad text
                             "a 'configuration' and a 'properties' object")
        configuration = target["configuration"]
        for key in ("n_qubits", "max_shots"):
            if key in configuration and not (type(configuration[key]) is int and configuration[key] > 0):
                raise ValueError(f"{where}: configuration.{key} must be a positive integer, not "
                                 f"{str(configuration[key])[:40]!r}")
        try:
            return configuration, _isa_of(configuration)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: its configuration has no usable instruction set "
                             f"(basis_gates, supported_instructions, coupling_map): {exc}") from None

    def _hold(self, target: str, configuration: dict[str, Any], isa: Any) -> None:
        """Keep the backend's description: ``validate`` checks payloads against it, ``target`` returns it."""
        self._isa = isa
        self._target = target
        self._configuration = configuration

    async def _read_lanes(self) -> None:
        if LANES_ROUTE in self.api.lacks:
            return
        try:
            lanes = await self.api.get(f"/v1/backends/{self.backend}/lanes")
        except ApiError as exc:
            if exc.status == 404 and exc.code != "1216":
                self.api.lacks.add(LANES_ROUTE)  # an older server without /lanes: keep the configured count
                return
            raise
        self._lanes = int(lanes["hpc_workload_manager"]["lanes"])

    async def _delete_objects(self, job_id: str) -> None:
        """Remove the job's S3 objects; a staging of it is then void (its input is gone)."""
        self._staged.pop(job_id, None)
        await asyncio.gather(*(self.storage.delete(object_key(kind, job_id)) for kind in OBJECTS))


class _NoJobRoute(Exception):
    """The service has no GET /v1/jobs/{id} (an older server)."""


_T = TypeVar("_T")


async def _ready(value: _T) -> _T:
    return value


def _retrieve(reading: asyncio.Task[Any]) -> None:
    """Mark a failed early reading as seen: one dropped unread never reports it."""
    if not reading.cancelled():
        reading.exception()


def _isa_of(configuration: dict[str, Any]) -> Any:
    from qrmid.backends.ibm_quantum_system.isa import Isa

    return Isa(configuration)
