"""Windows in cluster mode, on real members sharing one PostgreSQL database: a reservation created on one member is
listed by every member and held to by the member that dispatches the resource; deleting it on another member frees
the waiting task everywhere; a member started later reads the windows from the store."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from cluster import Cluster
from google.protobuf.timestamp_pb2 import Timestamp
from postgres import Database

from qrmid.v1 import admin_pb2 as admin_pb
from qrmid.v1 import admin_pb2_grpc as admin_grpc
from qrmid.v1 import quantum_resources_pb2 as pb
from qrmid.v1 import quantum_resources_pb2_grpc as pb_grpc

NOOP = '[[resources]]\ntype = "noop"\nname = "noop"\nslots = 2\npoll_interval = 0.05\n'
RUN = pb.Payload(pulser_sequence=pb.PulserSequence(sequence='{"version": "1"}', job_runs=1))


def stamp(seconds: float) -> Timestamp:
    value = Timestamp()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def eventually(check, what: str, timeout: float = 30) -> object:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"not {what} after {timeout} s"
        time.sleep(0.1)
    return value


def test_a_reservation_made_on_one_member_holds_everywhere_and_its_deletion_too(database: Database,
                                                                                tmp_path: Path) -> None:
    with Cluster(database, NOOP, members=2, tmp=tmp_path) as cluster:
        channels = {name: grpc.insecure_channel(cluster.member(name).address) for name in cluster.names}
        try:
            admin = {name: admin_grpc.AdminServiceStub(channel) for name, channel in channels.items()}
            api = {name: pb_grpc.QuantumResourcesStub(channel) for name, channel in channels.items()}
            now = time.time()
            made = admin["m2"].CreateWindow(admin_pb.CreateWindowRequest(window=pb.Window(
                resource="noop", kind="reservation", start_time=stamp(now), end_time=stamp(now + 3600),
                accounts=["physics"], reason="beam time")), timeout=30)
            for name in cluster.names:
                eventually(lambda name=name: [w.id for w in admin[name].ListWindows(
                    admin_pb.ListWindowsRequest(), timeout=30).windows] == [made.id], f"listed on {name}")
                eventually(lambda name=name: api[name].GetResource(pb.GetResourceRequest(name="noop"), timeout=30)
                           .active_window.id == made.id, f"in force on {name}")
            task = api["m1"].StartTask(pb.StartTaskRequest(resource="noop", payload=RUN), timeout=30)
            time.sleep(1.0)  # a dispatch would have happened by now
            for name in cluster.names:
                seen = eventually(lambda name=name: api[name].GetTask(pb.GetTaskRequest(task_id=task.id), timeout=30),
                                  f"task known on {name}")
                assert seen.state == pb.TASK_STATE_QUEUED, "held by the dispatcher, whichever member it is"
            reason = api["m1"].GetTask(pb.GetTaskRequest(task_id=task.id), timeout=30).wait_reason
            assert reason.startswith("resource noop is reserved for accounts physics until ")
            assert reason.endswith(f"(reservation {made.id})")
            cluster.stop("m2")
            cluster.start("m2")  # reads the windows back from the store
            channels["m2"].close()
            channels["m2"] = grpc.insecure_channel(cluster.member("m2").address)
            admin["m2"] = admin_grpc.AdminServiceStub(channels["m2"])
            assert [w.id for w in admin["m2"].ListWindows(admin_pb.ListWindowsRequest(), timeout=30).windows] == \
                [made.id]
            admin["m2"].DeleteWindow(admin_pb.DeleteWindowRequest(id=made.id), timeout=30)
            eventually(lambda: not admin["m1"].ListWindows(admin_pb.ListWindowsRequest(), timeout=30).windows,
                       "deleted on m1")
            eventually(lambda: api["m1"].GetTask(pb.GetTaskRequest(task_id=task.id), timeout=30).state ==
                       pb.TASK_STATE_COMPLETED, "the waiting task run once the reservation was deleted")
        finally:
            for channel in channels.values():
                channel.close()


def test_two_members_asked_at_once_for_overlapping_windows_create_one(database: Database, tmp_path: Path) -> None:
    """The store decides, not each member's view of it: the other member's answer names the window it overlaps."""
    with Cluster(database, NOOP, members=2, tmp=tmp_path) as cluster:
        channels = [grpc.insecure_channel(cluster.member(name).address) for name in cluster.names]
        admins = [admin_grpc.AdminServiceStub(channel) for channel in channels]
        start = threading.Barrier(len(admins))

        def create(admin: admin_grpc.AdminServiceStub, begin: float, reason: str) -> str:
            start.wait(timeout=30)
            try:
                return admin.CreateWindow(admin_pb.CreateWindowRequest(window=pb.Window(
                    resource="noop", kind="maintenance", start_time=stamp(begin), end_time=stamp(begin + 1800),
                    reason=reason)), timeout=30).id
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc
                return exc.details()

        try:
            with ThreadPoolExecutor(len(admins)) as pool:
                for round_ in range(8):
                    begin = time.time() + 3600 * (round_ + 1)
                    answers = list(pool.map(create, admins, [begin, begin + 900], ["first", "second"]))
                    made = [answer for answer in answers if "overlaps" not in answer]
                    assert len(made) == 1, f"round {round_}: {answers}"
                    refusal = next(answer for answer in answers if "overlaps" in answer)
                    assert "maintenance" in refusal and "of resource noop: choose times outside it" in refusal
            with database.connect() as conn:
                assert conn.execute("SELECT count(*) FROM windows").fetchone() == (8,)
            for admin in admins:
                eventually(lambda admin=admin: len(admin.ListWindows(admin_pb.ListWindowsRequest(), timeout=30)
                                                   .windows) == 8, "every window listed on every member")
        finally:
            for channel in channels:
                channel.close()
