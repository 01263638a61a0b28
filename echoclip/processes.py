"""Worker processes that end with the process that started them.

A ``ProcessPoolExecutor`` worker waits on a queue whose write end it holds itself, so
when its parent is killed (Ctrl-C twice, SIGKILL, an out-of-memory kill) it never
sees the end of its input and lives on, holding memory. Every pool of ours starts
its workers with a watchdog thread that ends the worker once its parent is gone; a
killed run then leaves nothing behind, and rerunning it resumes cleanly.
``BackgroundCall`` runs one function the same way, beside its caller.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["BackgroundCall", "peak_rss_mb", "process_pool"]


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


def _call_and_send(
    send: Connection, parent: int, interval: float, fn: Callable[..., Any], args: tuple[Any, ...]
) -> None:
    threading.Thread(target=_watch_parent, args=(parent, interval), daemon=True).start()
    try:
        outcome: tuple[bool, Any] = (True, fn(*args))
    except BaseException as error:  # noqa: BLE001 - every failure goes back to the parent
        outcome = (False, error)
    try:
        send.send(outcome)
    except Exception:  # an unpicklable value or error: its text still reaches the parent
        send.send((False, RuntimeError(f"{fn.__name__} in a background process: {outcome[1]!r}")))
    send.close()


class BackgroundCall:
    """``fn(*args)`` in a spawned process of its own, running while the caller goes on.

    ``result()`` waits for its return value, or raises the error it raised; ``stop()``
    ends it early (call it when the caller fails, so that a Ctrl-C leaves nothing
    running). Like the workers of ``process_pool``, it exits within ``interval`` seconds
    of its parent's death. ``fn``, its arguments and its result must pickle.
    """

    def __init__(self, fn: Callable[..., Any], *args: Any, interval: float = 1.0) -> None:
        context = multiprocessing.get_context("spawn")
        self._receive, send = context.Pipe(duplex=False)
        self._name = getattr(fn, "__name__", "call")
        self._process = context.Process(
            target=_call_and_send, args=(send, os.getpid(), interval, fn, args), name=self._name
        )
        self._process.start()
        send.close()  # the child holds the only write end: its death ends our wait

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def result(self) -> Any:
        """The call's return value, once it has returned (its error raised here if it failed)."""
        try:
            ok, value = self._receive.recv()
        except EOFError:
            self._process.join()
            raise ChildProcessError(
                f"{self._name} ended without a result (exit code {self._process.exitcode})"
            ) from None
        finally:
            self._receive.close()
        self._process.join()
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        """End the call now, if it still runs."""
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
        self._receive.close()


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far, in MB (None where the OS does not say).

    On Linux it is ``VmHWM``: the ``ru_maxrss`` of ``getrusage`` survives ``exec``, so a
    spawned child would report at least what its parent held when it was started.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(maxrss / (2**20 if sys.platform == "darwin" else 1024), 1)  # bytes on macOS
