"""The systemd notification protocol (sd_notify): one datagram to ``$NOTIFY_SOCKET`` per state change, and
watchdog pings."""

from __future__ import annotations

import asyncio
import os
import socket


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to the service manager; False when not run under one."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto(state.encode(), address)
    return True


def watchdog_interval() -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``$WATCHDOG_USEC``), or None when no watchdog is asked
    for this process (unset, or ``$WATCHDOG_PID`` names another process)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


async def watchdog(interval: float) -> None:
    """Ping the service manager every ``interval`` seconds from the event loop, forever: when the loop stalls,
    the pings stop and systemd restarts the service."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
