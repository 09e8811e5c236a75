"""Recent usage of a resource per account, decaying exponentially: the fair-share ledger.

An account's usage is ``qpu_second_weight * seconds + shot_weight * shots`` summed over its finished tasks,
each charge halving every ``half_life`` seconds after it was made.

A finished task is charged what it used: the seconds it held a backend slot (none if it never started, all of
them if it failed or was cancelled while running), and its shots only if it completed. A failed or cancelled
task delivered no result, and no backend reports how many of its shots ran before it stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from qrmid.core.tasks import Task, TaskState

FORGOTTEN = 1e-9  # usage below this is dropped from the ledger


@dataclass(frozen=True, slots=True)
class UsageWeights:
    """How a task's usage is measured and how fast it is forgotten."""

    qpu_second: float = 1.0
    shot: float = 0.0
    half_life: float = 3600.0

    def cost(self, seconds: float, shots: int) -> float:
        return self.qpu_second * seconds + self.shot * shots


def shots_used(task: Task) -> int:
    """The shots a finished task is charged: a completed task's, none otherwise."""
    return task.shots if task.state is TaskState.COMPLETED else 0


class UsageLedger:
    """Decayed usage per account. ``clock`` is monotonic seconds (``time.monotonic`` unless a test sets it)."""

    def __init__(self, weights: UsageWeights = UsageWeights(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.weights = weights
        self.clock = clock
        self._usage: dict[str, tuple[float, float]] = {}  # account -> (usage, when it was last charged)

    def usage(self, account: str, now: float | None = None) -> float:
        """``account``'s usage as of ``now``, decayed."""
        value, stamp = self._usage.get(account, (0.0, 0.0))
        if not value:
            return 0.0
        now = self.clock() if now is None else now
        return value * math.exp2(-(now - stamp) / self.weights.half_life)

    def charge(self, account: str, seconds: float, shots: int, ago: float = 0.0) -> None:
        """Add a finished task's usage to ``account``; ``ago``: how long since it was used (for a task that
        finished before a restart), decayed for that long already."""
        now = self.clock()
        cost = self.weights.cost(seconds, shots) * math.exp2(-max(ago, 0.0) / self.weights.half_life)
        value = self.usage(account, now) + cost
        self._usage[account] = (value, now)
        if len(self._usage) > 1024:  # forget accounts whose usage has decayed away
            for name in [name for name in self._usage if self.usage(name, now) < FORGOTTEN]:
                del self._usage[name]

    def snapshot(self) -> dict[str, float]:
        """Every account's current usage."""
        now = self.clock()
        return {account: self.usage(account, now) for account in self._usage}
