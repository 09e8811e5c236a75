"""``python -m qrmid.emulators.ibm_quantum_compute [--host 127.0.0.1] [--port 0] [--api-key KEY] [--crn CRN]
[--backend NAME ...] [--job-seconds S]``; prints ``listening on http://HOST:PORT`` once it serves."""

from __future__ import annotations

import argparse
import asyncio
import logging

from qrmid.emulators.ibm_quantum_compute.app import Settings, build_app
from qrmid.emulators.serving import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m qrmid.emulators.ibm_quantum_compute",
                                     description="Emulator of the IBM Quantum Platform REST API (/api/v1).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default="emulator-key", help="the IAM API key it accepts")
    parser.add_argument("--crn", default="crn:v1:local:emulator", help="the Service-CRN it requires")
    parser.add_argument("--backend", action="append", help="backend names (repeatable; default: fake_perth)")
    parser.add_argument("--job-seconds", type=float, default=0.2, help="how long a job stays queued and running")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(api_key=args.api_key, crn=args.crn, backends=tuple(args.backend or ["fake_perth"]),
                        job_seconds=args.job_seconds)
    asyncio.run(serve(build_app(settings), args))


if __name__ == "__main__":
    main()
