"""Two gloo ranks with batch B must train exactly like one process with batch 2B, whether
the model is replicated (DDP) or sharded (FSDP)."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("dist_worker.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(run: Path) -> list[float]:
    with open(run / "metrics.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f) if r["loss"]]


def _single(out: Path, *args: object) -> None:
    subprocess.run([sys.executable, str(WORKER), str(out), *map(str, args)], env=ENV, check=True, timeout=120)


def _two_ranks(out: Path, *args: object) -> None:
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(out), *map(str, args)],
            env={
                **ENV,
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


def _assert_same_weights(a_dir: Path, b_dir: Path) -> dict[str, torch.Tensor]:
    a = load_file(a_dir / "model.safetensors")
    b = load_file(b_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=0), k
    return a


@pytest.mark.parametrize("strategy", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_two_ranks_equal_one_double_batch(tmp_path, strategy):
    single, double = tmp_path / "single", tmp_path / "double"
    _single(single, 8, "ddp", 2)
    _two_ranks(double, 4, strategy, 2)

    assert len(_losses(single)) == 2
    assert _losses(single) == pytest.approx(_losses(double), abs=1e-5)
    weights = _assert_same_weights(single / "final", double / "final")
    # the checkpoints hold whole weights too, not one rank's shard
    _assert_same_weights(single / "checkpoints" / "step_00000002" / "model", double / "final")
    # and the steps did change the weights (the comparison is not trivially true)
    torch.manual_seed(0)
    sys.path.insert(0, str(WORKER.parent))
    from toy import ToyClip

    fresh = ToyClip().state_dict()
    assert any(not torch.allclose(weights[k], fresh[k]) for k in weights)


@pytest.mark.slow
def test_sharded_run_resumes_exactly(tmp_path):
    """FSDP checkpoints hold the whole optimizer state: stopping after step 2 and resuming to
    step 3 gives the weights of an uninterrupted 3-step run."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _two_ranks(straight, 4, "fsdp", 3)
    _two_ranks(resumed, 4, "fsdp", 2)
    _two_ranks(resumed, 4, "fsdp", 3, "resume")
    _assert_same_weights(straight / "final", resumed / "final")
    assert _losses(straight) == pytest.approx(_losses(resumed), abs=1e-6)
