"""Times and durations as admins write them, on the command line and in the config file.

A time is ISO 8601 (``2026-12-24T08:00``, ``2026-12-24 08:00:00+01:00``, ``2026-12-24T07:00Z``); without a zone it
is local time, as Slurm reads one. ``now`` and ``now+DURATION`` are times too. A duration is whole days, hours,
minutes and seconds in that order: ``90s``, ``30m``, ``2h``, ``1h30m``, ``1d12h``.
"""

from __future__ import annotations

import re
import time
from datetime import datetime

DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")
UNITS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
TIME_FORMS = "ISO 8601 such as 2026-12-24T08:00 (local time) or 2026-12-24T08:00+01:00, now, or now+DURATION"
DURATION_FORMS = "90s, 30m, 2h, 1h30m or 1d"


def parse_duration(text: str) -> float:
    """Seconds of ``text`` (e.g. ``1h30m``); ValueError saying what is accepted when it is not a duration, or zero."""
    found = DURATION.match(text.strip().lower())
    if not text.strip() or found is None:
        raise ValueError(f"{text!r} is not a duration: write it as {DURATION_FORMS}")
    seconds = sum(int(value) * UNITS[unit] for unit, value in found.groupdict().items() if value)
    if seconds <= 0:
        raise ValueError(f"{text!r} is no time at all: a duration must be at least 1s")
    return float(seconds)


def parse_time(text: str, now: float | None = None) -> float:
    """Epoch seconds of ``text``: ISO 8601 (local time when it names no zone), ``now`` or ``now+DURATION``;
    ValueError saying what is accepted otherwise."""
    word = text.strip().lower()
    current = time.time() if now is None else now
    if word == "now":
        return current
    if word.startswith("now+"):
        return current + parse_duration(word.removeprefix("now+"))
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a time: write it as {TIME_FORMS}") from None
    return moment.timestamp()  # a naive datetime is local time


def clock(seconds: float, now: float | None = None) -> str:
    """``seconds`` as local time for a message: ``14:00`` (``14:00:05`` with seconds) when it is today, else with its
    date (``2026-12-24 14:00``)."""
    moment = datetime.fromtimestamp(seconds)
    shown = moment.strftime("%H:%M:%S" if moment.second else "%H:%M")
    today = datetime.fromtimestamp(time.time() if now is None else now).date()
    return shown if moment.date() == today else f"{moment.date().isoformat()} {shown}"
