"""The default fabric: in-process, synchronous, deterministic.

``publish`` queues a message; the queue is drained in FIFO order, each message handed to
its topic's subscribers in subscription order. A handler that publishes adds to the end
of the queue, so delivery order is a pure function of the modules' code: no threads, no
broker, the same ledger every time.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

Handler = Callable[[Any], None]


class InProcessFabric:
    def __init__(self) -> None:
        self._subscribers: dict[str, list[Handler]] = {}
        self._queue: deque[tuple[str, Any]] = deque()
        self._draining = False

    def subscribe(self, topic: str, handler: Handler) -> None:
        self._subscribers.setdefault(topic, []).append(handler)

    def publish(self, topic: str, message: Any) -> None:
        self._queue.append((topic, message))
        if not self._draining:
            self._drain()

    def settle(self) -> None:
        """Nothing to wait for: ``publish`` has already handled everything (networked fabrics wait here)."""

    def _drain(self) -> None:
        self._draining = True
        try:
            queue = self._queue
            subscribers = self._subscribers
            while queue:
                topic, message = queue.popleft()
                for handler in subscribers.get(topic, ()):
                    handler(message)
        finally:
            self._draining = False
            self._queue.clear()
