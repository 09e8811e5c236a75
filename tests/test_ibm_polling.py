"""How qrmid follows IBM jobs, counted from the emulator's own request log: on an older server without
``GET /v1/jobs/{id}`` one job list per round covers every running job and the missing routes are asked for once;
on a current server a job is looked at when it is expected to end, not at every poll interval, and its output is
read as that look goes out (counted from S3's own record)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from daemons import config, running
from ibm_services import emulator, ibm_services, s3_requests
from test_ibm_quantum_system import API_KEY, BUCKET, CRN, isa_bell, resource

from qrmid.client import AsyncClient
from qrmid.emulators.launch import Proc
from qrmid.v1 import quantum_resources_pb2 as pb

LANES = 5


def services_for(server: str, tmp_path_factory: pytest.TempPathFactory,
                 front: bool = False) -> Iterator[tuple[Proc, Proc]]:
    path = tmp_path_factory.mktemp("ibm") / "emulator.toml"
    path.write_text(f'api_keys = ["{API_KEY}"]\nservice_crn = "{CRN}"\nserver = "{server}"\n'
                    '[[backends]]\nname = "perth"\ndevice = "perth"\nseed = 7\nnoise = false\n'
                    f'admission_order = "lanes-first"\nlanes = {{ hpc_workload_manager = {LANES}, '
                    'ibm_quantum_compute = 0 }\n')
    with ibm_services(path, BUCKET, front=front) as services:
        yield services


@pytest.fixture(scope="module", params=["older-405", "older-404"])
def older(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc]]:
    yield from services_for(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def current(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc]]:
    """A current server, its S3 behind the recording front."""
    yield from services_for("current", tmp_path_factory, front=True)


async def requests(services: tuple[Proc, Proc]) -> Counter[str]:
    """The emulator's count of API requests by ``METHOD /route STATUS``."""
    return Counter((await emulator(services, "GET", "/_emulator/record"))["requests"])


def answered(counts: Counter[str], route: str) -> int:
    """Requests to ``route`` (``METHOD /route``), whatever their status."""
    return sum(n for key, n in counts.items() if key.rsplit(" ", 1)[0] == route)


async def test_an_older_server_lacks_the_job_route_lanes_and_versions(older: tuple[Proc, Proc]) -> None:
    """The emulator's switch: the routes an older server lacks answer in the web framework's body, not IBM's."""
    async with httpx.AsyncClient(base_url=older[0].url) as http:
        missing = await http.get("/v1/jobs/some-job")
        assert missing.status_code in (404, 405) and "detail" in missing.json()
        assert (await http.get("/versions")).status_code == 404
        token = (await http.post("/identity/token", data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey",
                                                           "apikey": API_KEY})).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}", "Service-CRN": CRN}
        assert (await http.get("/v1/backends/perth/lanes", headers=headers)).status_code == 404
        assert (await http.get("/v1/jobs", headers=headers)).json() == {"jobs": []}
    counts = await requests(older)
    assert counts[f"GET /v1/jobs/{{id}} {missing.status_code}"] >= 1 and counts["GET /versions 404"] >= 1


async def test_one_job_list_per_round_covers_every_running_job(older: tuple[Proc, Proc]) -> None:
    poll = 0.2
    await emulator(older, "POST", "/_emulator/backends/perth", {"job_duration_s": 60})
    before = await requests(older)
    cfg = config([resource("perth", older, poll_interval=poll, status_interval=0.5, lanes=LANES)])
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as client:
        tasks = [await client.start_task("perth", isa_bell(shots=10)) for _ in range(LANES)]
        for task in tasks:
            async for update in client.watch(task.id):
                if update.state == pb.TASK_STATE_RUNNING:
                    break
        start = await requests(older)
        window = 2.0
        await asyncio.sleep(window)
        end = await requests(older)
        lists = answered(end, "GET /v1/jobs") - answered(start, "GET /v1/jobs")
        assert 1 <= lists <= window / poll + 2, \
            f"{lists} job lists in {window} s for {LANES} running jobs: one list per round, never one per job"
        for task in tasks:
            assert (await client.stop_task(task.id)).state == pb.TASK_STATE_CANCELLED
    seen = Counter(end) - before
    assert answered(seen, "GET /v1/jobs/{id}") == 1, "the missing job route is asked for once, then never again"
    assert answered(Counter(await requests(older)) - before, "GET /v1/backends/{name}/lanes") == 1, \
        "the missing /lanes route is asked for once, however many status checks follow"


async def test_jobs_are_looked_at_when_they_are_expected_to_end(current: tuple[Proc, Proc]) -> None:
    """With a 0.025 s poll interval, a job of 1 s would be looked at 40 times; once the run time is known, each job
    is looked at a few times on the way to its expected end and just after it."""
    await emulator(current, "POST", "/_emulator/backends/perth", {"job_duration_s": 1.0})
    cfg = config([resource("perth", current, poll_interval=0.025, status_interval=0.5, lanes=LANES)])
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as client:
        first, _ = await client.run("perth", isa_bell(shots=10))  # teaches the run time
        assert first.state == pb.TASK_STATE_COMPLETED
        before = await requests(current)
        outcomes = await asyncio.gather(*(client.run("perth", isa_bell(shots=10)) for _ in range(LANES)))
        assert all(task.state == pb.TASK_STATE_COMPLETED for task, _ in outcomes)
        looks = answered(Counter(await requests(current)) - before, "GET /v1/jobs/{id}")
    assert looks / LANES <= 20, f"{looks / LANES:.1f} looks per job of 1 s, where polling every 0.025 s makes 40"


async def test_a_job_output_is_read_as_its_end_is_looked_for(current: tuple[Proc, Proc]) -> None:
    """Once the run time is known, a job's results and logs are read as the look at its expected end goes out, and
    that reading is used when the job is seen Completed: each object is read once. An object not found by that
    reading is read again then."""
    await emulator(current, "POST", "/_emulator/backends/perth", {"job_duration_s": 1.5})
    cfg = config([resource("perth", current, poll_interval=0.05, status_interval=0.5, lanes=LANES)])
    async with running(cfg) as daemon, AsyncClient(f"unix:{daemon.socket}") as client:
        await client.run("perth", isa_bell(shots=10))  # teaches the run time
        outcomes = await asyncio.gather(*(client.run("perth", isa_bell(shots=10)) for _ in range(LANES)))
        reads = Counter(seen["path"] for seen in await s3_requests(current) if seen["method"] == "GET")
        for task, result in outcomes:
            assert task.state == pb.TASK_STATE_COMPLETED and result and await client.logs(task.id)
            assert [reads[f"/{BUCKET}/{kind}_{task.id}.json"] for kind in ("results", "logs")] == [1, 1]

        async with httpx.AsyncClient(base_url=current[1].url) as s3_front:  # the early reading finds no results
            rule = {"status": 404, "method": "GET", "path_prefix": f"/{BUCKET}/results_", "count": 1}
            (await s3_front.post("/_emulator/faults", json={"rules": [rule]})).raise_for_status()
        task, result = await client.run("perth", isa_bell(shots=10))
        assert task.state == pb.TASK_STATE_COMPLETED and result and await client.logs(task.id)
        reads = Counter(seen["path"] for seen in await s3_requests(current) if seen["method"] == "GET")
        assert reads[f"/{BUCKET}/results_{task.id}.json"] == 1, "read again (the answer of the first was injected)"


def test_the_follower_schedules_looks_by_the_expected_end() -> None:
    """Halfway while more than two intervals remain, at the expected end, then short steps growing by half up to
    the interval."""
    from qrmid.backends.ibm_quantum_system.follow import Followed, Follower

    async def nothing(refs: list[str]) -> dict[str, Any]:
        return {}

    async def check() -> None:
        follower = Follower(nothing, interval=0.25)
        job = Followed(started=100.0, due=0.0)
        assert follower._next_look(job, 100.0) == 100.25, "no run time known yet: every interval"
        follower.expected = 2.0
        assert follower._next_look(job, 100.0) == 101.0
        assert follower._next_look(job, 101.0) == 101.5
        assert follower._next_look(job, 101.5) == 102.0, "two intervals or less remain: at the expected end"
        steps = [follower._next_look(job, 102.0) - 102.0 for _ in range(9)]
        assert steps == pytest.approx([0.01, 0.015, 0.0225, 0.03375, 0.050625, 0.0759375, 0.11390625, 0.170859375,
                                       0.25]), "from 0.5 % of the run time"

    asyncio.run(check())


def test_the_follower_tells_once_when_a_job_is_looked_for_at_its_expected_end() -> None:
    """Not at the looks halfway, not again at the looks past the end."""
    from qrmid.backends.ibm_quantum_system.follow import Follower

    told: list[str] = []
    looks: list[int] = []  # how many times the follower had told, as each look went out

    async def look(refs: list[str]) -> dict[str, Any]:
        looks.append(len(told))
        return {ref: {"id": ref, "status": "Running" if len(looks) < 4 else "Completed"} for ref in refs}

    async def check() -> None:
        follower = Follower(look, interval=0.05, reaching_end=told.append)
        follower.expected = 0.2
        follower.follow("job")
        assert await follower.ended("job", 5.0) is not None
        await follower.close()

    asyncio.run(check())
    assert looks == [0, 1, 1, 1], "halfway (0.1 s), at the end (0.2 s), then two steps past it"
    assert told == ["job"]


def test_a_job_in_an_unknown_status_is_followed_until_it_ends() -> None:
    """A status the client does not know is taken as still running (looked at again), never as an end."""
    from qrmid.backends.ibm_quantum_system.follow import Follower

    statuses = iter(["Queued", "Queued", "Completed"])

    async def look(refs: list[str]) -> dict[str, Any]:
        return {ref: {"id": ref, "status": next(statuses)} for ref in refs}

    async def check() -> None:
        follower = Follower(look, interval=0.01)
        follower.follow("job")
        job = None
        for _ in range(500):
            job = await follower.ended("job", 0.01)
            if job is not None:
                break
        assert job is not None and job["status"] == "Completed"
        await follower.close()

    asyncio.run(check())


def test_a_slow_answer_about_one_job_holds_no_other_job_s_look() -> None:
    """Rounds do not wait for one another: a job is seen ended while the look at another is still unanswered."""
    from qrmid.backends.ibm_quantum_system.follow import Follower

    async def check() -> None:
        asked, answer = asyncio.Event(), asyncio.Event()

        async def look(refs: list[str]) -> dict[str, Any]:
            if "slow" in refs:
                asked.set()
                await answer.wait()
            return {ref: {"id": ref, "status": "Completed"} for ref in refs}

        async def seen(job_id: str) -> dict[str, Any] | None:
            """The job once ended, within 500 waits of one interval (0.01 s) each."""
            for _ in range(500):
                job = await follower.ended(job_id, 0.01)
                if job is not None:
                    return job
            return None

        follower = Follower(look, interval=0.01)
        follower.follow("slow")
        await asked.wait()
        fast = await seen("fast")
        assert fast is not None and fast["id"] == "fast", "seen while the look at the slow job is unanswered"
        assert await follower.ended("slow", 0.05) is None
        answer.set()
        slow = await seen("slow")
        assert slow is not None and slow["id"] == "slow"
        await follower.close()

    asyncio.run(check())
