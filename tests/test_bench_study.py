"""The study benchmark trains each arm at its own level and pooling, whatever the recipe's."""

from __future__ import annotations

import pytest

from echoclip.demo import DemoRecipe


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_study")


@pytest.mark.parametrize("arm", ["clip", "attention", "mean", "echoprime"])
def test_each_arm_trains_at_its_level_with_its_pooling(bench, arm, tmp_path):
    recipe = DemoRecipe.load("demo-small")  # pools its studies by the mean
    config = bench._clip_config(recipe, tmp_path, 3, arm, videos_per_study=2)
    level, pooling = bench.ARMS[arm]
    assert (config.level, config.study_pooling) == (level, pooling)
    assert config.steps == recipe.train.steps and config.seed == 3
    if level == "study":
        assert config.videos_per_study == 2
