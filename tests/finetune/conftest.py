"""Fine-tuning tests: a small simulated data set (manifest and EchoNet-Dynamic layouts), one thread."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

# echoclip-tiny shrunk to the simulated clips: 32 px, 8 frames
TINY = {"video": {"image_size": 32, "num_frames": 8}}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="package")
def sim(tmp_path_factory) -> Path:
    """24 simulated studies (15 train, 5 val, 4 test): manifest.parquet and FileList.csv."""
    from echoclip.data.synthetic import simulate_dataset

    return simulate_dataset(
        tmp_path_factory.mktemp("sim") / "data", n=24, seed=0, size=32, frames=16, fps=12.5, progress=False
    )


@pytest.fixture(scope="package")
def echonet(sim, tmp_path_factory) -> Path:
    """The same studies as an EchoNet-Dynamic folder only: FileList.csv and Videos/, no manifest."""
    out = tmp_path_factory.mktemp("echonet") / "EchoNet-Dynamic"
    out.mkdir()
    shutil.copytree(sim / "Videos", out / "Videos")
    shutil.copy(sim / "FileList.csv", out / "FileList.csv")
    return out
