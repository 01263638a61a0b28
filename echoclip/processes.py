"""Worker processes that end with the process that started them.

A ``ProcessPoolExecutor`` worker waits on a queue whose write end it holds itself, so
when its parent is killed (Ctrl-C twice, SIGKILL, an out-of-memory kill) it never
sees the end of its input and lives on, holding memory. Every pool of ours starts
its workers with a watchdog thread that ends the worker once its parent is gone; a
killed run then leaves nothing behind, and rerunning it resumes cleanly.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

__all__ = ["process_pool"]


def _watch_parent(parent: int, interval: float) -> None:
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)  # the parent is gone: nobody will read this worker's results


def _start_worker(parent: int, interval: float, initializer: Callable[[], None] | None) -> None:
    threading.Thread(target=_watch_parent, args=(parent, interval), daemon=True).start()
    if initializer is not None:
        initializer()


def process_pool(
    workers: int, initializer: Callable[[], None] | None = None, interval: float = 1.0
) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes (forking a process with torch threads can
    hang) that exit within ``interval`` seconds of their parent's death.

    ``initializer`` runs in each worker after the watchdog starts. Use it as any
    executor: ``with process_pool(2) as pool: pool.map(fn, items)``.
    """
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(), interval, initializer),
    )
