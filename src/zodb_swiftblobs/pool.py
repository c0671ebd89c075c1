"""A bounded thread pool, for the parallel uploads and checks of migrate and verify."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

TASKS_PER_JOB = 4  # tasks queued or running per thread, at the most


class BoundedPool:
    """Runs tasks on *jobs* threads named after *name*.  ``submit`` waits while
    TASKS_PER_JOB × *jobs* tasks are queued or running, so that whoever
    submits never gets far ahead of the threads."""

    def __init__(self, jobs: int, name: str) -> None:
        self._executor = ThreadPoolExecutor(jobs, thread_name_prefix=name)
        self._slots = threading.BoundedSemaphore(TASKS_PER_JOB * jobs)

    def submit(self, function: Callable[..., Any], *args: Any) -> Future:
        """Run ``function(*args)`` on a thread, once a slot is free."""
        self._slots.acquire()
        future = self._executor.submit(function, *args)
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def shutdown(self, *, cancel_futures: bool = False) -> None:
        """Wait for the tasks (with *cancel_futures*, those not started are dropped)."""
        self._executor.shutdown(wait=True, cancel_futures=cancel_futures)
