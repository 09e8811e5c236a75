"""One resource through the QRMI ``QuantumResource`` interface, as a job would drive it: status, a lease, the target,
metadata, a task polled to its end with its result and logs; with ``--stop SLOW_INPUT``, two slow tasks stopped while
one runs and one waits. Prints one JSON report.

    python resource_lifecycle.py NAME TYPE INPUT [--stop SLOW_INPUT]

TYPE is a ``ResourceType`` member name; INPUT is task-runner JSON (``{"program_id", "parameters"}`` or
``{"sequence", "job_runs"}``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from qrmid.qrmi import Payload, QuantumResource, ResourceStatusCode, ResourceType, TaskNotReadyError, TaskStatus

UNFINISHED = (TaskStatus.Queued, TaskStatus.Running)


def payload(path: str) -> Any:
    """The task-runner input in ``path`` as a QRMI payload."""
    task = json.loads(Path(path).read_text(encoding="utf-8"))
    if "sequence" in task:
        return Payload.PasqalCloud(sequence=json.dumps(task["sequence"]), job_runs=task["job_runs"])
    return Payload.QiskitPrimitive(input=json.dumps(task["parameters"]), program_id=task["program_id"])


def poll(resource: QuantumResource, task_id: str) -> list[str]:
    """Every status the task shows until it ends, without repeats."""
    seen: list[str] = []
    while True:
        status = resource.task_status(task_id)
        if not seen or seen[-1] != str(status):
            seen.append(str(status))
        if status not in UNFINISHED:
            return seen
        time.sleep(0.1)


def stop_two(resource: QuantumResource, slow: Any) -> dict[str, Any]:
    """Start two slow tasks, stop the waiting one, then the running one; what each then shows."""
    first, second = resource.task_start(slow), resource.task_start(slow)
    while resource.task_status(first) == TaskStatus.Queued:
        time.sleep(0.05)
    waiting_before = str(resource.task_status(second))
    resource.task_stop(second)
    running_before = str(resource.task_status(first))
    resource.task_stop(first)
    outcome: dict[str, Any] = {"waiting": [waiting_before, str(resource.task_status(second))],
                               "running": [running_before, poll(resource, first)[-1]]}
    try:
        resource.task_result(second)
    except TaskNotReadyError as error:
        outcome["result_of_stopped"] = type(error).__name__
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("type", choices=[member for member in dir(ResourceType) if member[0].isupper()])
    parser.add_argument("input")
    parser.add_argument("--stop", metavar="SLOW_INPUT")
    args = parser.parse_args()

    resource = QuantumResource(args.name, getattr(ResourceType, args.type))
    status = resource.status()
    report: dict[str, Any] = {
        "repr": repr(resource), "id": resource.resource_id(), "type": str(resource.resource_type()),
        "accessible": resource.is_accessible(), "online": status.status == ResourceStatusCode.Online,
        "status": status.to_dict(),
    }
    token = resource.acquire()
    report["lease"] = len(token)
    report["target_keys"] = sorted(json.loads(resource.target().value))
    report["metadata"] = resource.metadata()

    task_id = resource.task_start(payload(args.input))
    report["statuses"] = poll(resource, task_id)
    report["result"] = resource.task_result(task_id).value
    report["logs"] = resource.task_logs(task_id)
    resource.task_stop(task_id)  # a finished task keeps its result
    report["after_stop"] = str(resource.task_status(task_id))
    if args.stop:
        report["stopped"] = stop_two(resource, payload(args.stop))
    resource.release(token)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
