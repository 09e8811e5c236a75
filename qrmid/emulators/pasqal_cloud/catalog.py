"""Device listings and specs (two of them open to anonymous callers) and the account API's project list."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .access import authenticated, state
from .auth import Principal
from .envelope import ApiError, success


async def list_devices_open(request: Request) -> Response:
    wanted = request.query_params.getlist("device_type")
    devices = state(request).devices.values()
    return success([d.describe() for d in devices if not wanted or d.device_type in wanted])


@authenticated
async def list_devices(request: Request, principal: Principal) -> Response:
    wanted = {name: request.query_params.getlist(name) for name in ("device_type", "status", "availability")}
    described = [device.describe() for device in state(request).devices.values()]
    return success([d for d in described if all(not values or d[name] in values for name, values in wanted.items())])


async def public_specs(request: Request) -> Response:
    return success([{"device_type": d.device_type, "specs": d.specs} for d in state(request).devices.values()])


@authenticated
async def all_specs(request: Request, principal: Principal) -> Response:
    return success({d.device_type: d.specs for d in state(request).devices.values()})


@authenticated
async def device_specs(request: Request, principal: Principal) -> Response:
    device_type = request.path_params["device_type"]
    device = state(request).devices.get(device_type)
    if device is None:
        raise ApiError(404, f"Device type {device_type} not found")
    return success({"device_type": device.device_type, "specs": device.specs})


@authenticated
async def projects(request: Request, principal: Principal) -> Response:
    device_types = sorted(state(request).devices)
    return success(
        [
            {
                "id": project,
                "project_id": project,
                "name": f"Project {project[:8]}",
                "project_status": "ACTIVE",
                "allowed_device_types": device_types,
                "queue_priority": "MEDIUM",
            }
            for project in principal.projects
        ]
    )


ROUTES = [
    Route("/api/v1/devices", list_devices_open, methods=["GET"]),
    Route("/api/v2/devices", list_devices, methods=["GET"]),
    Route("/api/v1/devices/public-specs", public_specs, methods=["GET"]),
    Route("/api/v1/devices/specs", all_specs, methods=["GET"]),
    Route("/api/v1/devices/specs/{device_type}", device_specs, methods=["GET"]),
]
