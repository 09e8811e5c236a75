"""A blocking connection to qrmid for framework adapters, and where a job's lease token comes from.

Plain synchronous gRPC, with no helper thread: Qiskit, Pulser and QRMI code is synchronous, creates
connections freely and never closes them, and a process must still exit when its script ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import grpc

from qrmid.client import TERMINAL, TaskFailed, resolve_address
from qrmid.v1 import quantum_resources_pb2 as pb
from qrmid.v1 import quantum_resources_pb2_grpc as pb_grpc

__all__ = ["Connection", "TaskFailed", "lease_token"]


def lease_token(resource: str) -> str:
    """The lease the job holds on ``resource``: ``$<resource>_QRMI_JOB_ACQUISITION_TOKEN`` as the Slurm plugin
    exports it, else ``$QRMI_JOB_ACQUISITION_TOKEN``, else none ("")."""
    return os.environ.get(f"{resource}_QRMI_JOB_ACQUISITION_TOKEN") or os.environ.get(
        "QRMI_JOB_ACQUISITION_TOKEN", "")


class Connection:
    """The calls of ``qrmid.client.Client`` that framework adapters need, on a synchronous channel."""

    def __init__(self, address: str | None = None, *, timeout: float = 60.0) -> None:
        self.address = resolve_address(address)
        self.timeout = timeout
        self._channel = grpc.insecure_channel(self.address, options=[
            ("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)])
        self._stub = pb_grpc.QuantumResourcesStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def resource(self, name: str) -> pb.Resource:
        return self._stub.GetResource(pb.GetResourceRequest(name=name), timeout=self.timeout)

    def target(self, resource: str) -> str:
        return self._stub.GetTarget(pb.GetTargetRequest(resource=resource), timeout=self.timeout).value

    def metadata(self, resource: str) -> dict[str, str]:
        return dict(self._stub.GetMetadata(pb.GetMetadataRequest(resource=resource), timeout=self.timeout).values)

    def acquire(self, resource: str, slurm_job_id: str = "") -> pb.Lease:
        return self._stub.Acquire(pb.AcquireRequest(resource=resource, slurm_job_id=slurm_job_id),
                                  timeout=self.timeout)

    def release(self, token: str) -> None:
        self._stub.Release(pb.ReleaseRequest(token=token), timeout=self.timeout)

    def start_task(self, resource: str, payload: pb.Payload, lease_token: str = "") -> pb.Task:
        request = pb.StartTaskRequest(resource=resource, payload=payload, lease_token=lease_token)
        return self._stub.StartTask(request, timeout=self.timeout)

    def stop_task(self, task_id: str) -> pb.Task:
        return self._stub.StopTask(pb.StopTaskRequest(task_id=task_id), timeout=self.timeout)

    def task(self, task_id: str) -> pb.Task:
        return self._stub.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=self.timeout)

    def watch(self, task_id: str, timeout: float | None = None) -> Iterator[pb.Task]:
        """The task now, then each state change until a terminal one (or ``timeout`` seconds)."""
        yield from self._stub.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=timeout)

    def wait(self, task_id: str, timeout: float | None = None) -> pb.Task:
        """The task's terminal state; TimeoutError when it has none after ``timeout`` seconds."""
        last = self.task(task_id)
        if last.state not in TERMINAL:
            try:
                for last in self.watch(task_id, timeout):
                    pass
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
                raise TimeoutError(f"task {task_id} has not finished after {timeout} s") from None
        return last

    def result(self, task_id: str) -> bytes:
        chunks = self._stub.GetTaskResult(pb.GetTaskResultRequest(task_id=task_id), timeout=self.timeout)
        return b"".join(chunk.data for chunk in chunks)

    def logs(self, task_id: str) -> str:
        return self._stub.GetTaskLogs(pb.GetTaskLogsRequest(task_id=task_id), timeout=self.timeout).text
