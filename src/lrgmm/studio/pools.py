"""Bounded worker pools: the studio's CPU-bound work (encoding, fitting, sampling, decoding) runs
in threads, never on the event loop, and new work past a bounded queue is refused."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from ..errors import BusyError


class WorkPool:
    """At most ``workers`` tasks run at once in threads; the rest wait in order, up to
    ``max_queue`` of them (beyond that, ``BusyError``). ``state()`` is what the page shows."""

    def __init__(self, name: str, workers: int, max_queue: int):
        self.name = name
        self.workers = workers
        self.max_queue = max_queue
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"studio-{name}")
        self._lock = threading.Lock()
        self.running = 0
        self.waiting = 0
        self.done = 0

    def submit(self, fn, *args):
        """Queue ``fn(*args)``; returns a ``concurrent.futures.Future``."""
        with self._lock:
            if self.waiting >= self.max_queue:
                raise BusyError(
                    f"the {self.name} queue is full ({self.waiting} tasks waiting); try again in a moment"
                )
            self.waiting += 1

        def task():
            with self._lock:
                self.waiting -= 1
                self.running += 1
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self.running -= 1
                    self.done += 1

        return self._executor.submit(task)

    async def run(self, fn, *args):
        """Run ``fn(*args)`` in the pool and await its result without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def state(self) -> dict:
        with self._lock:
            return {"workers": self.workers, "running": self.running, "waiting": self.waiting, "done": self.done}

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
