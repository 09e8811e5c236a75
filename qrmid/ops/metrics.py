"""Prometheus metrics: task, lease, usage, backend-retry and RPC figures, and an HTTP endpoint to scrape.

Every daemon has its own ``CollectorRegistry``. Counters and histograms follow the broker's events;
queue depths, busy slots and live leases are read from the broker at scrape time, on the event loop.
Labels carry resource, a pool's member, owner, account, state, gRPC method and code only: never tokens or payloads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from qrmid.backends import retry
from qrmid.core.events import Listener
from qrmid.core.tasks import TaskState
from qrmid.core.usage import shots_used
from qrmid.ops.accounting import account_of

if TYPE_CHECKING:
    from qrmid.core.broker import Broker
    from qrmid.core.leases import Lease
    from qrmid.core.tasks import Task

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT = 10.0
# Queue waits and run times range from milliseconds (local simulators) to hours (busy QPUs).
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600)
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics(Listener):
    """The daemon's metrics registry, fed by core events, backend retries and the RPC interceptor."""

    def __init__(self, broker: Broker) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.queue_wait = Histogram("qrmid_task_queue_wait_seconds", "Time tasks waited in the queue before "
                                    "running (or before ending unstarted)", ["resource"], buckets=TASK_BUCKETS,
                                    registry=registry)
        self.run_time = Histogram("qrmid_task_run_seconds", "Time tasks held a backend slot, started to ended",
                                  ["resource"], buckets=TASK_BUCKETS, registry=registry)
        self.queued = Counter("qrmid_tasks_queued", "Tasks accepted", ["resource"], registry=registry)
        self.outcomes = Counter("qrmid_tasks_finished", "Tasks that ended, by final state", ["resource", "state"],
                                registry=registry)
        self.pool_outcomes = Counter("qrmid_pool_tasks_finished", "Tasks of pools that ended, by the member that ran "
                                     "them and final state", ["resource", "member", "state"], registry=registry)
        usage = ["owner", "account", "resource"]
        self.usage_tasks = Counter("qrmid_usage_tasks", "Finished tasks per owner, account and resource", usage,
                                   registry=registry)
        self.usage_shots = Counter("qrmid_usage_shots", "Shots of completed tasks per owner, account and resource",
                                   usage, registry=registry)
        self.usage_qpu = Counter("qrmid_usage_qpu_seconds", "Backend slot time of finished tasks per owner, "
                                 "account and resource", usage, registry=registry)
        self.leases_granted = Counter("qrmid_leases_granted", "Leases granted", ["resource"], registry=registry)
        self.leases_ended = Counter("qrmid_leases_ended", "Leases ended, by reason", ["resource", "reason"],
                                    registry=registry)
        self.backend_retries = Counter("qrmid_backend_retries", "Vendor calls retried after a transient failure",
                                       ["error"], registry=registry)
        self.backend_errors = Counter("qrmid_backend_errors", "Vendor calls that failed after all their retries",
                                      ["error"], registry=registry)
        self.rpc_latency = Histogram("qrmid_rpc_duration_seconds", "gRPC handling time by method and status code",
                                     ["method", "code"], buckets=RPC_BUCKETS, registry=registry)
        self._live = _LiveGauges(broker)
        registry.register(self._live)
        self._server: WSGIServer | None = None

    def task_queued(self, task: Task) -> None:
        self.queued.labels(task.resource).inc()

    def task_changed(self, task: Task) -> None:
        view = task.view
        if view.state is TaskState.RUNNING and view.started_at is not None:
            self.queue_wait.labels(task.resource).observe(view.started_at - view.created_at)
            return
        if not view.state.terminal or view.ended_at is None:
            return
        self.outcomes.labels(task.resource, view.state.value).inc()
        if task.member:
            self.pool_outcomes.labels(task.resource, task.member, view.state.value).inc()
        labels = (task.owner, account_of(task), task.resource)
        self.usage_tasks.labels(*labels).inc()
        self.usage_shots.labels(*labels).inc(shots_used(task))
        if view.started_at is None:
            self.queue_wait.labels(task.resource).observe(view.ended_at - view.created_at)
        else:
            self.run_time.labels(task.resource).observe(view.ended_at - view.started_at)
            self.usage_qpu.labels(*labels).inc(view.ended_at - view.started_at)

    def lease_granted(self, lease: Lease) -> None:
        self.leases_granted.labels(lease.resource).inc()

    def lease_ended(self, lease: Lease, reason: str) -> None:
        self.leases_ended.labels(lease.resource, reason).inc()

    def backend_retry(self, event: str, error: BaseException) -> None:
        """The hook ``qrmid.backends.retry`` calls on each retry and each give-up."""
        counter = self.backend_retries if event == "retry" else self.backend_errors
        counter.labels(type(error).__name__).inc()

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        """The hook the RPC interceptor calls as each call ends."""
        self.rpc_latency.labels(method, code).observe(seconds)

    def serve(self, address: str) -> tuple[str, int]:
        """Serve ``/metrics`` over HTTP on ``HOST:PORT`` (port 0 picks a free one); returns the bound address.
        Also starts counting backend retries. OSError when the address cannot be bound."""
        host, _, port = address.rpartition(":")
        self._live.loop = asyncio.get_running_loop()
        self._server, _ = start_http_server(int(port), host.strip("[]"), self.registry)
        retry.hooks.append(self.backend_retry)
        bound = self._server.server_address
        log.info("metrics on http://%s:%d/metrics", host, bound[1])
        return host, bound[1]

    async def close(self) -> None:
        """Stop the HTTP endpoint and the retry hook."""
        if self.backend_retry in retry.hooks:
            retry.hooks.remove(self.backend_retry)
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.shutdown)
            server.server_close()


class _LiveGauges(Collector):
    """Queue depth, slots, leases and dispatch per resource, read on the broker's event loop at each scrape (the HTTP
    endpoint answers from its own thread, so it asks the loop for a snapshot rather than reading the broker
    while the loop changes it)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.loop: asyncio.AbstractEventLoop | None = None

    def describe(self) -> list[GaugeMetricFamily]:
        return list(self._families({}))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.loop is None or _running_loop() is self.loop:
            yield from self._families(self._snapshot())
            return
        future = asyncio.run_coroutine_threadsafe(self._snapshot_async(), self.loop)
        yield from self._families(future.result(SCRAPE_TIMEOUT))

    async def _snapshot_async(self) -> dict[str, tuple[int, int, int, int, str, bool]]:
        return self._snapshot()

    def _snapshot(self) -> dict[str, tuple[int, int, int, int, str, bool]]:
        leases: dict[str, int] = {}
        for lease in self.broker.leases.live():
            leases[lease.resource] = leases.get(lease.resource, 0) + 1
        return {name: (view.queue_length, view.running_tasks, view.slots_total, leases.get(name, 0),
                       view.status.value, r.scheduler.leading)
                for name, r, view in ((name, r, r.view()) for name, r in self.broker.resources.items())}

    @staticmethod
    def _families(snapshot: dict[str, tuple[int, int, int, int, str, bool]]) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("qrmid_queue_depth", "Tasks waiting in the queue", labels=["resource"])
        busy = GaugeMetricFamily("qrmid_slots_busy", "Backend slots (lanes, workers) in use", labels=["resource"])
        total = GaugeMetricFamily("qrmid_slots_total", "Backend slots (lanes, workers)", labels=["resource"])
        leases = GaugeMetricFamily("qrmid_leases_active", "Live leases", labels=["resource"])
        status = GaugeMetricFamily("qrmid_resource_status", "1 for the resource's current status",
                                   labels=["resource", "status"])
        dispatching = GaugeMetricFamily("qrmid_resource_dispatching", "1 when this daemon dispatches the resource "
                                        "(always on a single daemon; in a cluster, on its elected member), else 0",
                                        labels=["resource"])
        for name, (queued, running, slots, held, state, leading) in snapshot.items():
            depth.add_metric([name], queued)
            busy.add_metric([name], running)
            total.add_metric([name], slots)
            leases.add_metric([name], held)
            status.add_metric([name, state], 1)
            dispatching.add_metric([name], int(leading))
        yield from (depth, busy, total, leases, status, dispatching)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
