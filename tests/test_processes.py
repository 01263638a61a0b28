"""Process pools: they work as executors, and their workers end when their parent is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from echoclip.processes import BackgroundCall, peak_rss_mb, process_pool

# Starts a pool, prints the pids of its two workers, then waits (idle workers are the
# ones a killed parent used to leave behind).
PARENT = """
import os, time
from echoclip.processes import process_pool

def worker_pid(_):
    time.sleep(0.05)
    return os.getpid()

if __name__ == "__main__":
    pool = process_pool(2, interval=0.1)
    pids = set()
    while len(pids) < 2:
        pids |= set(pool.map(worker_pid, range(8)))
    print(*sorted(pids), flush=True)
    time.sleep(600)
"""

# Starts a background call that sleeps, prints its pid, then waits.
CALLER = """
import time
from echoclip.processes import BackgroundCall

if __name__ == "__main__":
    call = BackgroundCall(time.sleep, 600, interval=0.1)
    print(call.pid, flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended; only its exit status is left


def test_pool_maps_like_an_executor():
    with process_pool(2) as pool:
        assert list(pool.map(abs, [-3, 2, -1])) == [3, 2, 1]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
@pytest.mark.parametrize("parent", [PARENT, CALLER], ids=["pool", "background_call"])
def test_workers_end_when_their_parent_is_killed(tmp_path, parent):
    script = tmp_path / "parent.py"
    script.write_text(parent)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == (2 if parent is PARENT else 1) and all(_alive(p) for p in workers)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.time() + 20
        while any(_alive(p) for p in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in workers), "workers outlived their killed parent"
    finally:
        proc.kill()
        proc.wait()


def _fail(message: str) -> None:
    raise ValueError(message)


def test_background_call_returns_the_value_and_runs_in_another_process():
    call = BackgroundCall(os.getpid)
    assert call.result() == call.pid != os.getpid()


def test_background_call_raises_the_error_it_raised():
    with pytest.raises(ValueError, match="broken manifest"):
        BackgroundCall(_fail, "broken manifest").result()


def test_background_call_reports_a_process_that_died_without_a_result():
    with pytest.raises(ChildProcessError, match="_exit ended without a result .exit code 3"):
        BackgroundCall(os._exit, 3).result()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_stopping_a_background_call_ends_its_process():
    call = BackgroundCall(time.sleep, 600)
    assert _alive(call.pid)
    call.stop()
    assert not _alive(call.pid)


def test_a_spawned_process_reports_its_own_peak_memory_not_its_parents():
    held = bytearray(300 * 2**20)
    held[:: 2**12] = b"x" * len(held[:: 2**12])  # touch every page, so that it is resident
    assert peak_rss_mb() >= 300
    assert BackgroundCall(peak_rss_mb).result() < 150  # a bare interpreter, not 300 MB and more
