"""The job's resources through ``QRMIService``, as the Slurm plugin's environment describes them: the lists it read,
the resources it kept (accessible ones of known types), and for the resource named on the command line a lease held
while its metadata and target are read. Prints one JSON report.

    python service_discovery.py [NAME]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from qrmid.qrmi import QRMIService, get_job_qpu_resources_and_types


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?")
    args = parser.parse_args()

    names, types = get_job_qpu_resources_and_types()
    service = QRMIService()
    report: dict[str, Any] = {
        "job": dict(zip(names, types, strict=True)),
        "kept": {resource.resource_id(): str(resource.resource_type()) for resource in service.resources()},
        "unknown_is_none": service.resource("not-a-resource-of-this-job") is None,
    }
    if args.name:
        resource = service.resource(args.name)
        if resource is None:
            raise SystemExit(f"{args.name} is not among this job's accessible resources")
        token = resource.acquire()
        report["metadata"] = resource.metadata()
        report["target"] = json.loads(resource.target().value)
        resource.release(token)
        report["released"] = True
    print(json.dumps(report))


if __name__ == "__main__":
    main()
