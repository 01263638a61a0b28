"""The study benchmark trains each arm at its own level and pooling, whatever the recipe's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from echoclip.demo import DemoRecipe

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_study.py"


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def bench(monkeypatch_module):
    monkeypatch_module.syspath_prepend(str(BENCH.parent))  # the benchmarks import their `machine`
    spec = importlib.util.spec_from_file_location("bench_study", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("arm", ["clip", "attention", "mean", "echoprime"])
def test_each_arm_trains_at_its_level_with_its_pooling(bench, arm, tmp_path):
    recipe = DemoRecipe.load("demo-small")  # pools its studies by the mean
    config = bench._clip_config(recipe, tmp_path, 3, arm, videos_per_study=2)
    level, pooling = bench.ARMS[arm]
    assert (config.level, config.study_pooling) == (level, pooling)
    assert config.steps == recipe.train.steps and config.seed == 3
    if level == "study":
        assert config.videos_per_study == 2
