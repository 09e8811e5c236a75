"""The waiting line of one resource: round-robin across owners, first come first served within an owner.

One caller's thousand queued tasks therefore never shut out another caller's five: each turn takes the
next task of the next owner in rotation.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator

from qrmid.core.tasks import Task


class FairQueue:
    """Tasks waiting for a slot."""

    def __init__(self) -> None:
        self._owners: OrderedDict[str, deque[Task]] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def __iter__(self) -> Iterator[Task]:
        """Tasks in the order they would be taken."""
        lines = [list(line) for line in self._owners.values()]
        for turn in range(max(map(len, lines), default=0)):
            for line in lines:
                if turn < len(line):
                    yield line[turn]

    def push(self, task: Task) -> None:
        """Queue at the back of its owner's line."""
        self._owners.setdefault(task.owner, deque()).append(task)
        self._size += 1

    def push_front(self, task: Task) -> None:
        """Put back a task that was taken and refused: it is taken next."""
        line = self._owners.setdefault(task.owner, deque())
        line.appendleft(task)
        self._owners.move_to_end(task.owner, last=False)
        self._size += 1

    def pop(self) -> Task:
        """The next task: the head of the first owner's line; that owner then waits for a full rotation."""
        owner, line = next(iter(self._owners.items()))
        task = line.popleft()
        if line:
            self._owners.move_to_end(owner)
        else:
            del self._owners[owner]
        self._size -= 1
        return task

    def remove(self, task: Task) -> None:
        line = self._owners[task.owner]
        line.remove(task)
        if not line:
            del self._owners[task.owner]
        self._size -= 1

    def position(self, task: Task) -> int:
        """1-based place of ``task`` in the taking order; 0 when it is not queued."""
        for index, queued in enumerate(self, 1):
            if queued is task:
                return index
        return 0
