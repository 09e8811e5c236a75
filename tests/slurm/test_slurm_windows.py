"""A maintenance window on the real one-node Slurm: while it is open, qrmid's license-only reservation
``qrmid-<resource>`` holds the resource's license until the window's end (slurmctld ends it by itself then), so a
new job asking for it waits PENDING (reason Licenses); deleting the window deletes the reservation and the job runs."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from conftest import Cluster
from google.protobuf.timestamp_pb2 import Timestamp
from test_slurm_gate import admin_call, gates, pending_reason, reservations, wait_until

from qrmid.v1 import admin_pb2
from qrmid.v1 import quantum_resources_pb2 as pb


def test_a_maintenance_window_holds_the_license_until_its_end(cluster: Cluster) -> None:
    now = int(time.time())
    window = pb.Window(resource="slow-qpu", kind="maintenance", start_time=Timestamp(seconds=now),
                       end_time=Timestamp(seconds=now + 3600), reason="cryostat service")
    made = admin_call(cluster.qrmid_address, "CreateWindow", admin_pb2.CreateWindowRequest(window=window),
                      cluster.munge_socket)
    waiting = None
    try:
        wait_until(lambda: "qrmid-slow-qpu" in reservations(cluster), "reserved")
        held = reservations(cluster)["qrmid-slow-qpu"]
        assert datetime.fromisoformat(held["EndTime"]).astimezone(UTC) == datetime.fromtimestamp(now + 3600, UTC)
        gate = gates(cluster.qrmid_address, cluster.munge_socket)["slow-qpu"]
        assert gate.state == "held" and gate.detail.startswith("maintenance until ")
        waiting = cluster.sbatch("echo ran\n", "-L", "slow-qpu", "--time=5")
        assert pending_reason(cluster, waiting) == ("PENDING", "Licenses")
    finally:
        admin_call(cluster.qrmid_address, "DeleteWindow", admin_pb2.DeleteWindowRequest(id=made.id),
                   cluster.munge_socket)
    wait_until(lambda: "qrmid-slow-qpu" not in reservations(cluster), "released")
    assert cluster.wait_job(waiting, {"COMPLETED", "FAILED", "CANCELLED"}).state == "COMPLETED"
