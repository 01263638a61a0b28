"""Which share of the work a process takes: flags, torchrun's environment, or all of it."""

from __future__ import annotations

import pytest

from echoclip.errors import ConfigError
from echoclip.ranks import Ranks, part_dir, rank_of_part, resolve_ranks, run_parts


def test_flags_win_over_torchrun_and_a_world_of_one_is_no_split():
    env = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
    assert resolve_ranks(env=env) == Ranks(1, 4, "torchrun", 1)
    assert resolve_ranks(0, 2, env=env) == Ranks(0, 2, "flags")
    assert resolve_ranks(env={}) == Ranks() and not Ranks().split
    assert resolve_ranks(0, 1, env=env) == Ranks()
    # SLURM array variables alone do not split (a job of an array over other things)
    assert resolve_ranks(env={"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"}) == Ranks()


def test_bad_ranks_are_config_errors():
    with pytest.raises(ConfigError, match="go together"):
        resolve_ranks(0, None, env={})
    with pytest.raises(ConfigError, match=r"rank must be in 0\.\.1"):
        resolve_ranks(2, 2, env={})
    with pytest.raises(ConfigError, match="not integers"):
        resolve_ranks(env={"WORLD_SIZE": "two"})


def test_units_interleave_and_cover_every_row_once():
    shares = [list(Ranks(r, 3, "flags").mine(10)) for r in range(3)]
    assert sorted(sum(shares, [])) == list(range(10)) and shares[1] == [1, 4, 7]
    assert Ranks(2, 3, "flags").owns(5) and not Ranks(2, 3, "flags").owns(6)
    assert rank_of_part(part_dir("out", 12)) == 12 and part_dir("out", 12).name == "rank-00012"


def test_independent_ranks_do_not_merge_and_alone_does():
    merged = []
    assert run_parts(Ranks(1, 2, "flags"), lambda: "part", lambda: merged.append(1)) == ("part", None)
    assert not merged
    assert run_parts(Ranks(), lambda: "part", lambda: "merged") == ("part", "merged")
