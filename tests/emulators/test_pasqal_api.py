"""The Pasqal Cloud emulator over plain HTTP: auth, envelope, bodies, pagination, validation and the device model."""

from __future__ import annotations

import gzip
import json
import time
import uuid
from typing import Any

import httpx
import jwt
from pulser import Pulse, Register, Sequence
from pulser.devices import DigitalAnalogDevice

from . import pasqal_fixtures
from .pasqal_fixtures import (
    AUDIENCE,
    CLIENT_ID,
    CLIENT_SECRET,
    OTHER_PROJECT,
    PROJECT,
    Emulator,
    batch_status,
    data,
    fetch_device,
    password_grant,
    sequence,
    wait_batch,
    wait_for,
)

# The shared fixtures, bound here so that tests can request them by name.
emulator = pasqal_fixtures.emulator
api = pasqal_fixtures.api


def _create(api: httpx.Client, device_type: str, jobs: list[dict[str, Any]], seq: str, **extra: Any) -> dict[str, Any]:
    body = {"sequence_builder": seq, "jobs": jobs, "device_type": device_type, "project_id": PROJECT} | extra
    return data(api.post("/api/v1/batches", json=body))


def _seq(emulator: Emulator, device_type: str = "FRESNEL", **kwargs: Any) -> str:
    return sequence(fetch_device(emulator.url, device_type), **kwargs).to_abstract_repr()


# ---- auth ----


def test_password_grant_issues_a_jwt_with_exp_sub_aud(emulator: Emulator) -> None:
    body = password_grant(emulator.url).json()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert claims["sub"] == "alice" and claims["aud"] == AUDIENCE
    assert 3590 <= claims["exp"] - time.time() <= 3600


def test_client_credentials_with_a_json_body(emulator: Emulator) -> None:
    grant = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    response = httpx.post(f"{emulator.url}/oauth/token", json=grant | {"audience": AUDIENCE})
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "qrmid"
    wrong = httpx.post(f"{emulator.url}/oauth/token", json=grant | {"client_secret": "nope"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "access_denied"


def test_auth0_style_errors(emulator: Emulator) -> None:
    wrong = password_grant(emulator.url, password="wrong")
    assert wrong.status_code == 403
    assert wrong.json() == {"error": "invalid_grant", "error_description": "Wrong email or password."}
    assert password_grant(emulator.url, grant_type="implicit").json()["error"] == "unsupported_grant_type"
    assert password_grant(emulator.url, audience="https://elsewhere").status_code == 403
    assert password_grant(emulator.url, username="").json()["error"] == "invalid_request"


def test_bearer_required_except_open_device_routes(emulator: Emulator) -> None:
    core = f"{emulator.url}/core-fast"
    assert data(httpx.get(f"{core}/api/v1/devices", params={"device_type": "FRESNEL"}))[0]["availability"] == "ACTIVE"
    assert len(data(httpx.get(f"{core}/api/v1/devices/public-specs"))) == 11
    for response in (
        httpx.get(f"{core}/api/v1/devices/specs"),
        httpx.get(f"{core}/api/v2/jobs", headers={"Authorization": "Bearer not-a-jwt"}),
    ):
        assert response.status_code == 401
        assert response.json()["status"] == "fail" and response.json()["code"] == "401"


def test_expired_token_is_rejected_and_a_new_grant_works(emulator: Emulator, api: httpx.Client) -> None:
    emulator.settings(token_lifetime_s=1)
    token = password_grant(emulator.url).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert api.get("/api/v2/jobs", headers=headers).status_code == 200
    time.sleep(2.1)
    expired = api.get("/api/v2/jobs", headers=headers)
    assert expired.status_code == 401 and "expired" in expired.json()["data"]["description"]
    renewed = {"Authorization": f"Bearer {password_grant(emulator.url).json()['access_token']}"}
    assert api.get("/api/v2/jobs", headers=renewed).status_code == 200


def test_expire_hook_revokes_issued_tokens(emulator: Emulator, api: httpx.Client) -> None:
    assert api.get("/api/v2/jobs").status_code == 200
    assert emulator.control("POST", "tokens/expire")["expired"] >= 1
    assert api.get("/api/v2/jobs").status_code == 401
    grants = emulator.record()["token_grants"]
    assert grants and {"grant_type", "subject", "issued_at", "expires_at"} <= set(grants[-1])


# ---- transport ----


def test_gzip_and_plain_bodies_create_batches(emulator: Emulator, api: httpx.Client) -> None:
    body = {"sequence_builder": _seq(emulator), "jobs": [{"runs": 5, "variables": {"omega": 1.0}}]}
    body |= {"device_type": "EMU_FREE", "project_id": PROJECT}
    zipped = api.post(
        "/api/v1/batches",
        content=gzip.compress(json.dumps(body).encode()),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    plain = api.post("/api/v1/batches", json=body)
    for response in (zipped, plain):
        batch = data(response)
        assert batch["status"] == "PENDING" and batch["open"] is False and batch["complete"] is True
        assert [job["runs"] for job in batch["jobs"]] == [5]
    added = api.post(
        f"/api/v2/batches/{data(plain)['id']}/jobs",
        content=gzip.compress(b'[{"runs": 3}]'),
        headers={"Content-Encoding": "gzip"},
    )
    assert added.status_code == 400 and added.json()["status"] == "fail"


def test_pagination_and_ordering(emulator: Emulator, api: httpx.Client) -> None:
    seq = _seq(emulator)
    batch = _create(api, "EMU_SV", [{"runs": r, "variables": {"omega": 1.0}} for r in (1, 2, 3)], seq)
    params = {"batch_id": batch["id"], "order_by": "creation_order", "order_by_direction": "ASC", "limit": 2}
    first = api.get("/api/v2/jobs", params=params)
    assert first.headers["content-range"] == "1-2/3"
    assert first.json()["pagination"] == {"total": 3, "start": 0, "end": 2}
    second = api.get("/api/v2/jobs", params=params | {"offset": 2})
    assert [j["runs"] for j in data(first) + data(second)] == [1, 2, 3]
    newest = data(api.get("/api/v2/jobs", params={"batch_id": batch["id"], "limit": 1}))
    assert newest[0]["runs"] == 3  # default order is creation time, newest first
    assert api.get("/api/v2/jobs", params={"limit": 0}).status_code == 422
    listing = api.get("/api/v1/batches", params={"id": batch["id"]})
    assert [b["job_ids"] for b in data(listing)] == [[j["id"] for j in batch["jobs"]]]


def test_unknown_ids_give_404_in_the_envelope(api: httpx.Client) -> None:
    for path in ("/api/v2/batches/nope", "/api/v2/jobs/nope", "/api/v1/devices/specs/NOPE", "/api/v9/nothing"):
        response = api.get(path)
        assert response.status_code == 404 and response.json()["status"] == "fail", path


# ---- validation ----


def test_validation_errors_are_422(emulator: Emulator, api: httpx.Client) -> None:
    seq = _seq(emulator)
    base = {"sequence_builder": seq, "device_type": "FRESNEL", "project_id": PROJECT}
    cases = [
        base | {"jobs": [{"runs": 2001, "variables": {"omega": 1.0}}]},
        base | {"jobs": [{"runs": 0, "variables": {"omega": 1.0}}]},
        base | {"jobs": [{"runs": 5, "variables": {"omega": 1.0}, "sequence": seq}]},
        base | {"jobs": [{"runs": 5}]},  # a parametrized sequence needs its variables
        base | {"jobs": [{"runs": 5, "variables": {"omega": 1.0}}], "device_type": "FRESNEL_XL"},
        base | {"jobs": [{"runs": 5, "variables": {"omega": 1.0}}], "sequence_builder": "{not a sequence"},
        base | {"jobs": []},
    ]
    for body in cases:
        response = api.post("/api/v1/batches", json=body)
        assert response.status_code == 422, body
        assert response.json()["status"] == "fail" and response.json()["data"]["description"]


def test_atom_count_is_checked_against_the_target_device(api: httpx.Client) -> None:
    grid = Register.from_coordinates([(5.0 * (i % 9), 5.0 * (i // 9)) for i in range(81)], prefix="q")
    big = Sequence(grid, DigitalAnalogDevice)
    big.declare_channel("ryd", "rydberg_global")
    big.add(Pulse.ConstantPulse(100, 1.0, 0.0, 0.0), "ryd")
    body = {"sequence_builder": big.to_abstract_repr(), "jobs": [{"runs": 5}], "project_id": PROJECT}
    response = api.post("/api/v1/batches", json=body | {"device_type": "FRESNEL"})
    assert response.status_code == 422 and "81 atoms" in response.json()["data"]["description"]


def test_project_membership(emulator: Emulator, api: httpx.Client) -> None:
    body = {"sequence_builder": _seq(emulator), "jobs": [{"runs": 1, "variables": {"omega": 1.0}}]}
    response = api.post("/api/v1/batches", json=body | {"device_type": "EMU_FREE", "project_id": OTHER_PROJECT})
    assert response.status_code == 403


def test_device_type_defaults_to_the_sequence_device(emulator: Emulator, api: httpx.Client) -> None:
    body = {"sequence_builder": _seq(emulator, "EMU_MPS"), "jobs": [{"runs": 4, "variables": {"omega": 1.0}}]}
    assert data(api.post("/api/v1/batches", json=body | {"project_id": PROJECT}))["device_type"] == "EMU_MPS"


# ---- execution and results ----


def test_results_link_and_full_results(emulator: Emulator, api: httpx.Client) -> None:
    exact = _seq(emulator, atoms=2)
    drawn = _seq(emulator, atoms=3, parametrized=False)  # above max_exact_atoms: a seeded draw
    batch = _create(
        api, "EMU_FREE", [{"runs": 40, "variables": {"omega": 2.0}}, {"runs": 25, "sequence": drawn}], exact
    )
    wait_batch(api, batch["id"])
    full = data(api.get(f"/api/v1/batches/{batch['id']}/full_results"))
    for job, (runs, width) in zip(batch["jobs"], [(40, 2), (25, 3)], strict=True):
        link = data(api.get(f"/api/v1/jobs/{job['id']}/results_link"))["results_link"]
        result = httpx.get(link).json()  # unauthenticated, like a presigned URL
        assert result == full[job["id"]]
        assert sum(result["counter"].values()) == runs and len(result["raw"]) == runs
        assert {len(bits) for bits in result["counter"]} == {width}
    assert data(api.get(f"/api/v2/jobs/{batch['jobs'][1]['id']}"))["sequence"] == drawn


def test_a_pi_pulse_is_really_simulated(emulator: Emulator, api: httpx.Client) -> None:
    device = fetch_device(emulator.url, "EMU_FREE")
    seq = Sequence(Register.from_coordinates([(0.0, 0.0)], prefix="q"), device)
    seq.declare_channel("ryd", "rydberg_global")
    seq.add(Pulse.ConstantPulse(1000, 3.14159, 0.0, 0.0), "ryd")  # area pi: ground -> Rydberg
    seq.measure("ground-rydberg")
    batch = _create(api, "EMU_FREE", [{"runs": 200}], seq.to_abstract_repr())
    wait_batch(api, batch["id"])
    counter = data(api.get(f"/api/v1/batches/{batch['id']}/full_results"))[batch["jobs"][0]["id"]]["counter"]
    assert counter.get("1", 0) >= 190


def test_results_link_is_null_until_done(emulator: Emulator, api: httpx.Client) -> None:
    emulator.settings(batch_overhead_s=30)
    batch = _create(api, "EMU_C", [{"runs": 3, "variables": {"omega": 1.0}}], _seq(emulator))
    assert data(api.get(f"/api/v1/jobs/{batch['jobs'][0]['id']}/results_link")) == {"results_link": None}
    assert data(api.get(f"/api/v1/jobs/{batch['jobs'][0]['id']}/status"))["status"] == "PENDING"


def test_injected_execution_error(emulator: Emulator, api: httpx.Client) -> None:
    emulator.control("POST", "devices/EMU_TN", {"error_jobs": 1})
    batch = _create(api, "EMU_TN", [{"runs": 3, "variables": {"omega": 1.0}}], _seq(emulator))
    assert wait_batch(api, batch["id"], ("ERROR",))["jobs_count_per_status"]["ERROR"] == 1
    job = data(api.get(f"/api/v2/jobs/{batch['jobs'][0]['id']}"))
    assert job["status"] == "ERROR" and job["errors"]
    assert data(api.get("/api/v2/jobs", params={"batch_id": batch["id"], "errors": "true"}))[0]["id"] == job["id"]


# ---- batches: open, cancel, time-out ----


def test_open_batch_packs_jobs_and_completes(emulator: Emulator, api: httpx.Client) -> None:
    seq = _seq(emulator, "FRESNEL_CAN1")
    batch = _create(api, "FRESNEL_CAN1", [{"runs": 5, "variables": {"omega": 1.0}}], seq, open=True)
    for omega in (2.0, 3.0):
        added = data(api.post(f"/api/v2/batches/{batch['id']}/jobs", json=[{"runs": 5, "variables": {"omega": omega}}]))
        assert added["open"] is True
    wait_for(lambda: data(api.get(f"/api/v1/batches/{batch['id']}/status"))["jobs_count_per_status"]["DONE"] == 3)
    assert batch_status(api, batch["id"]) == "RUNNING"  # open with nothing left to run
    closed = data(api.patch(f"/api/v2/batches/{batch['id']}/complete"))
    assert closed["open"] is False and closed["complete"] is True and len(closed["jobs"]) == 3
    wait_batch(api, batch["id"])
    recorded = [b for b in emulator.record()["batches"] if b["id"] == batch["id"]]
    assert recorded[0]["job_count"] == 3 and recorded[0]["ended_at"]
    fingerprints = [j["fingerprint"] for j in emulator.record()["jobs"] if j["batch_id"] == batch["id"]]
    assert len(set(fingerprints)) == 3


def test_idle_open_batch_times_out(emulator: Emulator, api: httpx.Client) -> None:
    emulator.settings(open_batch_timeout_s=0.5)
    seq = _seq(emulator, "EMU_FRESNEL")
    batch = _create(api, "EMU_FRESNEL", [{"runs": 5, "variables": {"omega": 1.0}}], seq, open=True)
    timed_out = wait_batch(api, batch["id"], ("TIMED_OUT",))
    assert timed_out["open"] is False and timed_out["jobs_count_per_status"]["DONE"] == 1
    late = api.post(f"/api/v2/batches/{batch['id']}/jobs", json=[{"runs": 1, "variables": {"omega": 1.0}}])
    assert late.status_code == 400


def test_cancel_one_job_leaves_the_others_running(emulator: Emulator, api: httpx.Client) -> None:
    emulator.settings(job_duration_s=0.6)
    jobs = [{"runs": 5, "variables": {"omega": float(i)}} for i in (1, 2, 3)]
    batch = _create(api, "EMU_SV", jobs, _seq(emulator))
    first, second, third = (job["id"] for job in batch["jobs"])
    wait_for(lambda: data(api.get(f"/api/v1/jobs/{first}/status"))["status"] == "RUNNING")
    assert data(api.patch(f"/api/v2/jobs/{first}/cancel"))["status"] == "CANCELED"
    assert data(api.patch(f"/api/v2/jobs/{third}/cancel"))["status"] == "CANCELED"
    assert api.patch(f"/api/v2/jobs/{third}/cancel").status_code == 400  # already terminal
    done = wait_batch(api, batch["id"])
    assert done["jobs_count_per_status"] == {"PENDING": 0, "RUNNING": 0, "DONE": 1, "ERROR": 0, "CANCELED": 2}
    assert data(api.get(f"/api/v1/jobs/{second}/status"))["status"] == "DONE"
    assert data(api.get(f"/api/v1/jobs/{first}/results_link"))["results_link"] is None


def test_cancel_shapes(emulator: Emulator, api: httpx.Client) -> None:
    emulator.settings(batch_overhead_s=30)
    seq = _seq(emulator)
    one = _create(api, "EMU_FREE", [{"runs": r, "variables": {"omega": 1.0}} for r in (10, 20)], seq)
    cancelled = data(api.patch(f"/api/v2/batches/{one['id']}/cancel/jobs", params={"min_runs": 15}))
    assert [job["runs"] for job in cancelled["jobs"]] == [20] and cancelled["errors"] == {}
    again = data(api.patch(f"/api/v2/batches/{one['id']}/cancel/jobs", params={"id": one["jobs"][1]["id"]}))
    assert again["jobs"] == [] and list(again["errors"]) == [one["jobs"][1]["id"]]
    whole = data(api.patch(f"/api/v2/batches/{one['id']}/cancel"))
    assert whole["status"] == "CANCELED" and {job["status"] for job in whole["jobs"]} == {"CANCELED"}
    assert api.patch(f"/api/v2/batches/{one['id']}/cancel").status_code == 400
    two = _create(api, "EMU_FREE", [{"runs": 1, "variables": {"omega": 1.0}}], seq)
    missing = str(uuid.uuid4())
    bulk = data(api.patch("/api/v1/batches/cancel", json={"batch_ids": [two["id"], one["id"], missing]}))
    assert [b["id"] for b in bulk["batches"]] == [two["id"]] and set(bulk["errors"]) == {one["id"], missing}
    assert api.patch("/api/v1/batches/cancel", json={"batch_ids": ["not-a-uuid"]}).status_code == 422
    assert data(api.patch("/api/v2/batches/cancel", json={"batch_ids": []})) == {"batches": [], "errors": {}}


# ---- device model ----


def test_one_batch_at_a_time_on_a_qpu_and_parallel_emulators(emulator: Emulator, api: httpx.Client) -> None:
    emulator.settings(batch_overhead_s=0.3)
    qpu = [_create(api, "FRESNEL8", [{"runs": 2, "variables": {"omega": 1.0}}] * 2, _seq(emulator)) for _ in range(3)]
    emu = [_create(api, "EMU_C", [{"runs": 2, "variables": {"omega": 1.0}}], _seq(emulator)) for _ in range(2)]
    for batch in qpu + emu:
        wait_batch(api, batch["id"])
    record = emulator.record()
    spans = {b["id"]: (b["started_at"], b["ended_at"]) for b in record["batches"]}
    ordered = [spans[b["id"]] for b in qpu]
    assert all(ordered[i][1] <= ordered[i + 1][0] for i in range(2))  # FIFO, never overlapping
    assert record["devices"]["FRESNEL8"]["max_batches_at_once"] == 1
    assert record["devices"]["FRESNEL8"]["max_unfinished_batches"] == 3
    assert record["devices"]["EMU_C"]["max_batches_at_once"] == 2
    assert record["max_qpu_batches_at_once"] == 1
    qpu_ids = {b["id"] for b in qpu}
    fingerprints = {j["fingerprint"] for j in record["jobs"] if j["batch_id"] in qpu_ids}
    assert len(fingerprints) == 1  # six identical jobs: duplicates show in the record


def test_an_open_batch_holds_the_qpu_until_completed(emulator: Emulator, api: httpx.Client) -> None:
    seq = _seq(emulator, "FRESNEL_RD")
    holder = _create(api, "FRESNEL_RD", [{"runs": 2, "variables": {"omega": 1.0}}], seq, open=True)
    waiting = _create(api, "FRESNEL_RD", [{"runs": 2, "variables": {"omega": 1.0}}], seq)
    wait_for(lambda: data(api.get(f"/api/v1/batches/{holder['id']}/status"))["jobs_count_per_status"]["DONE"] == 1)
    time.sleep(0.5)
    assert batch_status(api, waiting["id"]) == "PENDING"
    assert emulator.record()["devices"]["FRESNEL_RD"]["queued_batches"] == [waiting["id"]]
    api.patch(f"/api/v2/batches/{holder['id']}/complete")
    wait_batch(api, waiting["id"])
    assert batch_status(api, holder["id"]) == "DONE"


def test_device_availability_and_status_switches(emulator: Emulator, api: httpx.Client) -> None:
    seq = _seq(emulator, "FRESNEL_SA1")
    jobs = [{"runs": 2, "variables": {"omega": 1.0}}]
    try:
        emulator.control("POST", "devices/FRESNEL_SA1", {"availability": "INACTIVE"})
        public = data(httpx.get(f"{emulator.url}/core-fast/api/v1/devices", params={"device_type": "FRESNEL_SA1"}))
        assert public[0]["availability"] == "INACTIVE"
        body = {"sequence_builder": seq, "jobs": jobs, "device_type": "FRESNEL_SA1", "project_id": PROJECT}
        assert api.post("/api/v1/batches", json=body).status_code == 400
        emulator.control("POST", "devices/FRESNEL_SA1", {"availability": "ACTIVE", "status": "DOWN"})
        batch = _create(api, "FRESNEL_SA1", jobs, seq)
        time.sleep(0.5)
        assert batch_status(api, batch["id"]) == "PENDING"  # a device that is down still queues
        assert data(api.get(f"/api/v2/batches/{batch['id']}"))["device_status"] == "DOWN"
        emulator.control("POST", "devices/FRESNEL_SA1", {"status": "UP"})
        wait_batch(api, batch["id"])
        assert data(api.get("/api/v2/devices", params={"device_type": "FRESNEL_SA1"}))[0]["status"] == "UP"
    finally:
        emulator.control("POST", "devices/FRESNEL_SA1", {"availability": "ACTIVE", "status": "UP"})


# ---- faults ----


def test_outage_window_then_recovery(emulator: Emulator, api: httpx.Client) -> None:
    emulator.control("POST", "faults", {"rules": [{"status": 503, "seconds": 0.6, "path_prefix": "/core-fast"}]})
    try:
        down = api.get("/api/v2/jobs")
        assert down.status_code == 503 and down.json()["status"] == "error" and down.json()["code"] == "503"
        time.sleep(0.7)
        assert api.get("/api/v2/jobs").status_code == 200
        emulator.control("POST", "faults", {"rules": [{"status": 429, "count": 1, "path_prefix": "/core-fast"}]})
        limited = api.get("/api/v2/jobs")
        assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
        assert api.get("/api/v2/jobs").status_code == 200
    finally:
        emulator.control("DELETE", "faults")
