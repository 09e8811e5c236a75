"""Job routes: list, read (with its sequence), status, cancel, results link; and the result objects it points to."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .access import authenticated, find_job, state
from .auth import Principal
from .envelope import ApiError, paginate, success
from .filters import job_filter
from .store import Store

ORDER = {
    "created_at": lambda j: j.order,
    "creation_order": lambda j: j.order,
    "updated_at": lambda j: (j.updated_at, j.order),
    "runs": lambda j: (j.runs, j.order),
}


@authenticated
async def list_jobs(request: Request, principal: Principal) -> Response:
    store: Store = state(request).store
    keep = job_filter(request, store.batches)
    jobs = [j for j in store.jobs.values() if j.project_id in principal.projects and keep(j)]
    return paginate(request, jobs, ORDER, lambda j: j.to_json())


@authenticated
async def get_job(request: Request, principal: Principal) -> Response:
    return success(find_job(request, principal).to_json(with_sequence=True))


@authenticated
async def job_status(request: Request, principal: Principal) -> Response:
    job = find_job(request, principal)
    return success({"id": job.id, "status": job.status})


@authenticated
async def cancel_job(request: Request, principal: Principal) -> Response:
    job = find_job(request, principal)
    if job.status not in ("PENDING", "RUNNING"):
        raise ApiError(400, f"Job {job.id} cannot be cancelled: its status is {job.status}")
    job.move("CANCELED")
    state(request).store.batches[job.batch_id].touch()
    return success(job.to_json())


@authenticated
async def results_link(request: Request, principal: Principal) -> Response:
    job = find_job(request, principal)
    link = None
    if job.result is not None:
        link = f"{request.url.scheme}://{request.url.netloc}/results/{job.id}"
    return success({"results_link": link})


async def download_result(request: Request) -> Response:
    """The object behind a ``results_link``: plain JSON, no envelope, no auth."""
    job = state(request).store.jobs.get(request.path_params["job_id"])
    if job is None or job.result is None:
        return JSONResponse({"error": "NoSuchKey"}, status_code=404)
    return JSONResponse(job.result)


ROUTES = [
    Route("/api/v2/jobs", list_jobs, methods=["GET"]),
    Route("/api/v2/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/api/v1/jobs/{job_id}/status", job_status, methods=["GET"]),
    Route("/api/v2/jobs/{job_id}/cancel", cancel_job, methods=["PATCH"]),
    Route("/api/v1/jobs/{job_id}/results_link", results_link, methods=["GET"]),
]
