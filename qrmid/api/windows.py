"""AdminService's time windows: CreateWindow, ListWindows and DeleteWindow over the broker's window table."""

from __future__ import annotations

import logging

from qrmid.api import convert
from qrmid.api.requests import required
from qrmid.core.broker import Broker
from qrmid.v1 import admin_pb2 as admin_pb
from qrmid.v1 import quantum_resources_pb2 as pb

log = logging.getLogger(__name__)


async def create_window(broker: Broker, request: admin_pb.CreateWindowRequest, who: str) -> pb.Window:
    message = request.window
    required(message.resource, "window.resource")
    required(message.kind, "window.kind")
    window = await broker.windows.create(convert.window_request(message))
    log.info("%s window %s of %s created by %s", window.kind, window.id, window.resource, who)
    return convert.window(window)


def list_windows(broker: Broker, request: admin_pb.ListWindowsRequest) -> admin_pb.ListWindowsResponse:
    if request.resource:
        broker.resource(request.resource)  # NotFound naming the resources served
    return admin_pb.ListWindowsResponse(windows=[convert.window(window)
                                                 for window in broker.windows.listing(request.resource)])


async def delete_window(broker: Broker, request: admin_pb.DeleteWindowRequest, who: str) -> pb.Window:
    window = await broker.windows.delete(required(request.id, "id"))
    log.info("%s window %s of %s deleted by %s", window.kind, window.id, window.resource, who)
    return convert.window(window)
