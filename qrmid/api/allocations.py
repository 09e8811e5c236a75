"""Allocations over the API: the admins' SetAllocation, ListAllocations and DeleteAllocation, and a user's
ListMyAllocations, mapped between messages and :mod:`qrmid.core.allocations`."""

from __future__ import annotations

from qrmid.api import convert
from qrmid.api.requests import required
from qrmid.core.allocations import AllocationView, allocation
from qrmid.core.broker import Broker
from qrmid.v1 import admin_pb2 as admin_pb
from qrmid.v1 import quantum_resources_pb2 as pb


async def set_allocation(broker: Broker, request: admin_pb.SetAllocationRequest) -> pb.Allocation:
    """Check the allocation asked for and put it in force once recorded."""
    asked = request.allocation
    value = allocation(asked.account, asked.resources, asked.limit, asked.qpu_seconds, asked.shots, asked.period,
                       broker.resources)
    return message(await broker.allocations.put(value))


def list_allocations(broker: Broker, request: admin_pb.ListAllocationsRequest) -> pb.ListAllocationsResponse:
    accounts = [request.account] if request.account else None
    return pb.ListAllocationsResponse(allocations=[message(view) for view in broker.allocations.views(accounts)])


async def delete_allocation(broker: Broker, request: admin_pb.DeleteAllocationRequest) -> pb.Allocation:
    return message(await broker.allocations.delete(required(request.account, "account"), request.resources))


def my_allocations(broker: Broker, user: str) -> pb.ListAllocationsResponse:
    """The allocations charging ``user``'s tasks: the user's own, and those of the Slurm accounts of their leases."""
    accounts = {user, *(lease.account for lease in broker.leases.matching("", user) if lease.account)}
    return pb.ListAllocationsResponse(allocations=[message(view) for view in broker.allocations.views(accounts)])


def message(view: AllocationView) -> pb.Allocation:
    value = view.allocation
    return pb.Allocation(account=value.account, resources=value.resources, limit=value.limit,
                         qpu_seconds=value.qpu_seconds, shots=value.shots, period=value.period,
                         used_qpu_seconds=view.used_seconds, used_shots=view.used_shots,
                         reset_time=convert.timestamp(view.reset_at))
