"""The log of refused calls, bounded: one client sending bad credentials in a loop cannot flood it.

Within each interval, the first refusal of each (peer, reason) is logged at once; later ones are only counted,
and one summary line at the end of the interval gives their counts per peer and reason. A TCP peer is its
host (its port changes with every connection); a Unix socket peer is the socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

log = logging.getLogger("qrmid.api.auth")

MAX_KEYS = 1_000  # (peer, reason) pairs remembered per interval; past it, refusals are counted together
MAX_REASON = 200  # characters of a reason kept
SUMMARY_ITEMS = 10  # (peer, reason) counts named in a summary line; the rest are summed
OTHERS = ("other peers", "other reasons")


class RefusalLog:
    """Logs refused calls: each (peer, reason) once per ``interval`` seconds, the rest in a summary line."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._logged: set[tuple[str, str]] = set()
        self._counts = Counter[tuple[str, str]]()
        self._summary: asyncio.TimerHandle | None = None

    def refused(self, peer: str, reason: str) -> None:
        """Record one refused call from ``peer`` (as gRPC names it) for ``reason``."""
        key = (_host(peer), reason[:MAX_REASON])
        if self._summary is None:
            self._summary = asyncio.get_running_loop().call_later(self.interval, self._summarize)
        if key in self._logged:
            self._counts[key] += 1
        elif len(self._logged) < MAX_KEYS:
            self._logged.add(key)
            log.warning("refused a call from %s: %s", *key)
        else:
            self._counts[OTHERS] += 1

    def _summarize(self) -> None:
        """Log what was counted in the interval that ends, and start afresh."""
        self._summary = None
        counts, self._counts = self._counts, Counter()
        self._logged.clear()
        if not counts:
            return
        top = counts.most_common(SUMMARY_ITEMS)
        rest = sum(counts.values()) - sum(count for _, count in top)
        parts = [f"{count} from {peer}: {reason}" for (peer, reason), count in top]
        if rest:
            parts.append(f"{rest} more from {len(counts) - len(top)} other peer(s) and reason(s)")
        log.warning("refused %d more call(s) in the last %g s (each peer and reason is logged once per interval): "
                    "%s", sum(counts.values()), self.interval, "; ".join(parts))


def _host(peer: str) -> str:
    """``peer`` without its port: ``ipv4:10.0.0.7:51234`` -> ``ipv4:10.0.0.7``; other peers as they are."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rpartition(":")[0]
    return peer
