"""Two gloo ranks with batch B must train exactly like one process with batch 2B."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("dist_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loss(run: Path) -> float:
    with open(run / "metrics.csv") as f:
        return float(next(csv.DictReader(f))["loss"])


def test_two_ranks_equal_one_double_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = tmp_path / "single"
    subprocess.run([sys.executable, str(WORKER), str(single), "8"], env=env, check=True, timeout=120)

    double = tmp_path / "double"
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(double), "4"],
            env={
                **env,
                "RANK": str(r),
                "LOCAL_RANK": str(r),
                "WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
            },
        )
        for r in range(2)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]

    assert abs(_loss(single) - _loss(double)) < 1e-5
    a = load_file(single / "final" / "model.safetensors")
    b = load_file(double / "final" / "model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=0), k
    # and the step did change the weights (the comparison is not trivially true)
    torch.manual_seed(0)
    sys.path.insert(0, str(WORKER.parent))
    from toy import ToyClip

    fresh = ToyClip().state_dict()
    assert any(not torch.allclose(a[k], fresh[k]) for k in a)
