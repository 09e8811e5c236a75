"""``qrmid-task-runner NAME INPUT [OUTPUT]``: QRMI's ``task_runner`` with the same arguments, run through qrmid.

NAME must be one of the job's resources (``QRMI_JOB_QPU_RESOURCES``); INPUT is QRMI's task-runner JSON
(``{"program_id", "parameters"}`` or ``{"sequence", "job_runs"}``). The result goes to OUTPUT or stdout; SIGTERM
or SIGCONT (``scancel``) cancel the task. Unlike ``task_runner``, the task is not deleted at exit: its result
and logs stay with qrmid (``qrmid result ID``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

import grpc

from qrmid.client import Client, TaskFailed, payload_from_task_input
from qrmid.integrations.job_env import lease_token
from qrmid.qrmi.resource import get_job_qpu_resources_and_types
from qrmid.v1 import quantum_resources_pb2 as pb

logger = logging.getLogger("qrmid.task_runner")

POLL_SECONDS = 1.0  # how often the wait wakes to notice a cancelling signal


def _log_level() -> int:
    """From ``SRUN_DEBUG`` as ``task_runner`` reads it: 2 (``--quiet``) errors only, 4+ debug, else info."""
    try:
        level = int(os.environ.get("SRUN_DEBUG", "3"))
    except ValueError:
        return logging.INFO
    return logging.ERROR if level == 2 else logging.DEBUG if level >= 4 else logging.INFO


def run(name: str, input_path: Path, output: Path | None) -> int:
    """Run one task to its end; the exit status (0 when it completed)."""
    if output is not None and not os.access(output.parent, os.W_OK):
        raise RuntimeError(f"{output} cannot be created.")
    names, _ = get_job_qpu_resources_and_types()
    if name not in names:
        raise ValueError(f"{name} is not available")
    payload = payload_from_task_input(json.loads(input_path.read_text(encoding="utf-8")))
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGCONT, stop)
    qrmid = Client()
    run = qrmid.launch(name, payload, lease_token=lease_token(name))  # one RunTask call follows the task
    logger.info("Task ID: %s", run.id)
    cancelling = False
    while True:
        try:
            _, result = run.outcome(timeout=POLL_SECONDS)
            break
        except TimeoutError:
            if stopping and not cancelling:
                logger.info("cancelling task %s", run.id)
                qrmid.stop_task(run.id)
                cancelling = True
        except TaskFailed as failed:
            logger.error("%s: %s", pb.TaskState.Name(failed.task.state).removeprefix("TASK_STATE_"),
                         failed.task.reason)
            return 1
    if output is None:
        sys.stdout.buffer.write(result + b"\n")
    else:
        output.write_bytes(result)
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="qrmid-task-runner", description="Run a QRMI task through qrmid")
    parser.add_argument("name", help="QPU resource name")
    parser.add_argument("input", type=Path, help="Input file")
    parser.add_argument("output", type=Path, nargs="?", help="Write output to <file> instead of stdout")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=_log_level(), format="%(asctime)s %(levelname)s %(message)s")
    try:
        code = run(args.name, args.input, args.output)
    except (grpc.RpcError, OSError, ValueError, RuntimeError) as exc:
        detail = f"{exc.code().name}: {exc.details()}" if isinstance(exc, grpc.RpcError) else str(exc)
        logger.error("%s", detail)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
