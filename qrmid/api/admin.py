"""``qrmid.v1.AdminService``: operator controls over resources, queues, leases and the daemon itself.

Every RPC requires an admin caller (uid 0, or a member of ``[auth] admin_group``); others get
PERMISSION_DENIED.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from qrmid.api import allocations, convert, windows
from qrmid.api.identity import caller
from qrmid.api.requests import Context, required
from qrmid.api.status import unary
from qrmid.core.broker import Broker
from qrmid.core.cluster import Dispatch, Membership, MemberView
from qrmid.core.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from qrmid.core.reload import Changes
from qrmid.core.slurm_gate import SlurmGate
from qrmid.core.tasks import Task
from qrmid.ops import logging as logs
from qrmid.store.journal import Quarantined
from qrmid.v1 import admin_pb2 as admin_pb
from qrmid.v1 import admin_pb2_grpc as admin_grpc
from qrmid.v1 import quantum_resources_pb2 as pb

log = logging.getLogger(__name__)


class Quarantine(Protocol):
    """Where the stored rows that could not be read are listed (the SQLite journal or the PostgreSQL store)."""

    @property
    def location(self) -> str: ...

    quarantined: list[Quarantined]


class AdminService(admin_grpc.AdminServiceServicer):
    """The admin RPCs over one broker; ``reload`` re-reads the daemon's config file; ``quarantine`` lists the
    store's unreadable rows (None: the daemon keeps no record); ``gate`` keeps Slurm's view of the resources."""

    def __init__(self, broker: Broker, reload: Callable[[], Awaitable[Changes]], admin_group: str = "",
                 quarantine: Quarantine | None = None, gate: SlurmGate | None = None) -> None:
        self.broker = broker
        self.reload = reload
        self.quarantine = quarantine
        self.gate = gate
        group = f", a member of group {admin_group}" if admin_group else ""
        self.admins = f"uid 0{group} or a service token marked admin"

    def _admin(self, context: Context, what: str) -> str:
        """The admin caller's name; PermissionDenied for anyone else."""
        who = caller(context)
        if not who.admin:
            raise PermissionDenied(f"{what} requires an admin ({self.admins}); {who.name} is not one")
        return who.name

    @unary
    async def DrainResource(self, request: admin_pb.DrainResourceRequest, context: Context) -> pb.Resource:
        who = self._admin(context, "DrainResource")
        name = required(request.resource, "resource")
        resource = await self.broker.drain(name, request.reason or
                                           f"drained by {who}: running tasks finish, queued ones wait")
        log.info("resource %s drained by %s: %s", resource.name, who, resource.drain_reason)
        return convert.resource(resource.view())

    @unary
    async def ResumeResource(self, request: admin_pb.ResumeResourceRequest, context: Context) -> pb.Resource:
        who = self._admin(context, "ResumeResource")
        resource = await self.broker.resume(required(request.resource, "resource"))
        log.info("resource %s resumed by %s", resource.name, who)
        return convert.resource(resource.view())

    @unary
    async def ReloadConfig(self, request: admin_pb.ReloadConfigRequest, context: Context
                           ) -> admin_pb.ReloadConfigResponse:
        who = self._admin(context, "ReloadConfig")
        log.info("config reload asked by %s", who)
        changes = await self.reload()
        return admin_pb.ReloadConfigResponse(added=changes.added, removed=changes.removed, changed=changes.changed)

    @unary
    async def ListQueues(self, request: admin_pb.ListQueuesRequest, context: Context) -> admin_pb.ListQueuesResponse:
        self._admin(context, "ListQueues")
        names = [self.broker.resource(request.resource).name] if request.resource else list(self.broker.resources)
        tasks = [self._task(task) for name in names for task in self.broker.unfinished(name)
                 if not request.owner or task.owner == request.owner]
        return admin_pb.ListQueuesResponse(tasks=tasks)

    @unary
    async def CancelTask(self, request: admin_pb.CancelTaskRequest, context: Context) -> pb.Task:
        who = self._admin(context, "CancelTask")
        task, _ = await self.broker.cancel(required(request.task_id, "task_id"), request.reason or "cancelled by an admin")
        log.info("task %s of %s cancelled by %s", task.id, task.owner, who)  # answered once recorded, as StopTask is
        return self._task(task)

    @unary
    async def ListAllLeases(self, request: admin_pb.ListAllLeasesRequest, context: Context) -> pb.ListLeasesResponse:
        self._admin(context, "ListAllLeases")
        leases = self.broker.leases.matching(request.resource, request.owner or None)
        return pb.ListLeasesResponse(leases=[convert.lease(lease, with_token=False) for lease in leases])

    @unary
    async def RevokeLease(self, request: admin_pb.RevokeLeaseRequest, context: Context) -> pb.ReleaseResponse:
        who = self._admin(context, "RevokeLease")
        lease, cancelled = await self.broker.revoke(required(request.lease_id, "lease_id"), request.reason)
        log.info("lease %s of %s revoked by %s", lease.id, lease.owner, who)
        return pb.ReleaseResponse(lease=convert.lease(lease, with_token=False), cancelled_tasks=cancelled)

    @unary
    async def SetLogLevel(self, request: admin_pb.SetLogLevelRequest, context: Context
                          ) -> admin_pb.SetLogLevelResponse:
        who = self._admin(context, "SetLogLevel")
        try:
            previous = logs.set_level(required(request.level, "level"))
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        log.warning("log level set to %s by %s (was %s)", request.level.lower(), who, previous)
        return admin_pb.SetLogLevelResponse(previous=previous)

    @unary
    async def ListQuarantine(self, request: admin_pb.ListQuarantineRequest, context: Context
                             ) -> admin_pb.ListQuarantineResponse:
        self._admin(context, "ListQuarantine")
        if self.quarantine is None:
            raise FailedPrecondition("this daemon keeps no record of its tasks ([journal] enabled = false and no "
                                     "[cluster]): there is no quarantine to list")
        rows = [admin_pb.QuarantinedRow(id=row.id, source=row.source, row_id=row.row_id, key=row.key,
                                        reason=row.reason, quarantine_time=convert.timestamp(row.at))
                for row in self.quarantine.quarantined]
        return admin_pb.ListQuarantineResponse(journal=self.quarantine.location, rows=rows)

    @unary
    async def ListMembers(self, request: admin_pb.ListMembersRequest, context: Context
                          ) -> admin_pb.ListMembersResponse:
        self._admin(context, "ListMembers")
        cluster = self._cluster("ListMembers")
        members, dispatchers = await cluster.members(), await cluster.dispatchers()
        return admin_pb.ListMembersResponse(member=cluster.member, members=[_member(view) for view in members],
                                            dispatchers=[_dispatcher(dispatch) for dispatch in dispatchers])

    @unary
    async def Handover(self, request: admin_pb.HandoverRequest, context: Context) -> admin_pb.ClusterMember:
        who = self._admin(context, "Handover")
        cluster = self._cluster("Handover")
        name = required(request.member, "member")
        known = [view.name for view in await cluster.members()]
        if name not in known:
            raise NotFound(f"no member {name!r} ever joined this cluster; its members are: {', '.join(known)}")
        view = await cluster.handover(name, back=request.back)
        log.warning("member %s told by %s to %s", name, who,
                    "take resources again" if request.back else "hand over its resources and take none")
        return _member(view)

    @unary
    async def ListSlurmGates(self, request: admin_pb.ListSlurmGatesRequest, context: Context
                             ) -> admin_pb.ListSlurmGatesResponse:
        self._admin(context, "ListSlurmGates")
        views = self.gate.views() if self.gate is not None else []
        return admin_pb.ListSlurmGatesResponse(gates=[
            admin_pb.SlurmGate(resource=view.resource, license=view.license, reservation=view.reservation,
                               state=view.state, detail=view.detail) for view in views])

    @unary
    async def SetAllocation(self, request: admin_pb.SetAllocationRequest, context: Context) -> pb.Allocation:
        who = self._admin(context, "SetAllocation")
        answer = await allocations.set_allocation(self.broker, request)
        log.info("allocation of account %s on %s set by %s: %s %g QPU-seconds, %d shots per %s", answer.account,
                 ",".join(answer.resources) or "every resource", who, answer.limit, answer.qpu_seconds, answer.shots,
                 answer.period)
        return answer

    @unary
    async def ListAllocations(self, request: admin_pb.ListAllocationsRequest, context: Context
                              ) -> pb.ListAllocationsResponse:
        self._admin(context, "ListAllocations")
        return allocations.list_allocations(self.broker, request)

    @unary
    async def DeleteAllocation(self, request: admin_pb.DeleteAllocationRequest, context: Context) -> pb.Allocation:
        who = self._admin(context, "DeleteAllocation")
        answer = await allocations.delete_allocation(self.broker, request)
        log.info("allocation of account %s on %s deleted by %s", answer.account,
                 ",".join(answer.resources) or "every resource", who)
        return answer

    @unary
    async def CreateWindow(self, request: admin_pb.CreateWindowRequest, context: Context) -> pb.Window:
        return await windows.create_window(self.broker, request, self._admin(context, "CreateWindow"))

    @unary
    async def ListWindows(self, request: admin_pb.ListWindowsRequest, context: Context
                          ) -> admin_pb.ListWindowsResponse:
        self._admin(context, "ListWindows")
        return windows.list_windows(self.broker, request)

    @unary
    async def DeleteWindow(self, request: admin_pb.DeleteWindowRequest, context: Context) -> pb.Window:
        return await windows.delete_window(self.broker, request, self._admin(context, "DeleteWindow"))

    def _cluster(self, what: str) -> Membership:
        """The cluster this daemon is a member of; FailedPrecondition on a single daemon."""
        if self.broker.cluster is None:
            raise FailedPrecondition(f"this daemon is not a cluster member (its config has no [cluster] section): "
                                     f"{what} applies to daemons sharing one PostgreSQL database (docs/cluster.md)")
        return self.broker.cluster

    def _task(self, task: Task) -> pb.Task:
        resource = self.broker.resources.get(task.resource)
        return convert.task(task, task.view, resource.scheduler if resource else None)


def _member(view: MemberView) -> admin_pb.ClusterMember:
    return admin_pb.ClusterMember(name=view.name, start_time=convert.timestamp(view.started_at),
                                  heartbeat_time=convert.timestamp(view.heartbeat_at), healthy=view.healthy,
                                  handing_over=view.handing_over, dispatches=view.dispatches)


def _dispatcher(dispatch: Dispatch) -> admin_pb.Dispatcher:
    return admin_pb.Dispatcher(resource=dispatch.resource, member=dispatch.member, epoch=dispatch.epoch,
                               since_time=convert.timestamp(dispatch.since))
