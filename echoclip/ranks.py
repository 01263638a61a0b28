"""Work split across processes or machines: which rank this is, its part folder, the meeting point.

Commands that do one thing per row of a data set (``echoclip preprocess``,
``echoclip embed``) split the rows by rank: each rank writes its own part under
``OUT/parts/rank-XXXXX/`` (atomically), and one merge step turns the parts into the
output a single process would have written. Two ways to run the ranks:

- under ``torchrun`` (``RANK``/``WORLD_SIZE`` in the environment): the ranks join a
  gloo process group, wait for each other after their parts, and rank 0 merges;
- as independent jobs (a SLURM array, several machines without a shared network):
  ``--rank R --world-size N`` on each, then ``echoclip merge OUT`` once all are done.
  SLURM array variables are not read implicitly: a job of an array over *other* things
  (several data sets) would otherwise split its one data set by surprise; pass
  ``--rank $SLURM_ARRAY_TASK_ID --world-size $SLURM_ARRAY_TASK_COUNT`` (array ``0-(N-1)``).

The data layer and the model layer both use this module, so it sits at the base.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from echoclip.errors import ConfigError

__all__ = [
    "Ranks",
    "resolve_ranks",
    "PARTS",
    "part_dir",
    "rank_of_part",
    "missing_ranks",
    "check_parts",
    "run_parts",
    "join_group",
    "barrier",
    "leave_group",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M")

PARTS = "parts"  # OUT/parts/rank-XXXXX/: one folder per rank until the merge


@dataclass(frozen=True)
class Ranks:
    """This process's share of the work: rank ``rank`` of ``world_size``.

    ``launcher`` says where the numbers came from: ``"single"`` (no split),
    ``"torchrun"`` (the ranks can meet in a process group) or ``"flags"``
    (independent jobs that never meet: the merge is a separate step).
    """

    rank: int = 0
    world_size: int = 1
    launcher: str = "single"
    local_rank: int = 0  # the process's number on its machine (torchrun's LOCAL_RANK): its GPU

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ConfigError(f"world size must be at least 1, not {self.world_size}")
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(
                f"rank must be in 0..{self.world_size - 1} for world size {self.world_size}, not {self.rank}"
            )

    @property
    def split(self) -> bool:
        """Whether the work is split at all (a world of one writes the output directly)."""
        return self.world_size > 1

    @property
    def can_meet(self) -> bool:
        """Whether the ranks can wait for each other (torchrun's rendezvous), so rank 0 can merge."""
        return self.split and self.launcher == "torchrun"

    def owns(self, unit: int) -> bool:
        """Whether work unit ``unit`` (a row, a shard) is this rank's: ``unit ≡ rank (mod world)``.

        Interleaving rather than contiguous blocks keeps the ranks' loads even when the
        slow videos (long cines, big files) cluster in one part of a manifest.
        """
        return unit % self.world_size == self.rank

    def mine(self, n: int) -> range:
        """This rank's units among ``0..n-1``."""
        return range(self.rank, n, self.world_size)

    def label(self) -> str:
        return f"rank {self.rank} of {self.world_size}"

    def device(self) -> str:
        """Where this rank computes by default: its own GPU under torchrun (``cuda:LOCAL_RANK``),
        the GPU of an independent job, else the CPU."""
        import torch

        if not torch.cuda.is_available():
            return "cpu"
        if self.launcher == "torchrun":
            return f"cuda:{self.local_rank % torch.cuda.device_count()}"
        return "cuda"


def resolve_ranks(
    rank: int | None = None, world_size: int | None = None, env: Mapping[str, str] | None = None
) -> Ranks:
    """The split for this process: ``rank``/``world_size`` when given (both or neither),
    else torchrun's ``RANK``/``WORLD_SIZE``, else no split.

    Example (a SLURM array job ``--array=0-3``)::

        echoclip embed ... --rank $SLURM_ARRAY_TASK_ID --world-size $SLURM_ARRAY_TASK_COUNT
    """
    env = os.environ if env is None else env
    if (rank is None) != (world_size is None):
        raise ConfigError("--rank and --world-size go together: give both or neither")
    if rank is not None and world_size is not None:
        if world_size == 1:
            return Ranks(rank, 1, "single")
        return Ranks(int(rank), int(world_size), "flags")
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        here = int(env.get("RANK", "0"))
    except ValueError:
        raise ConfigError(
            f"RANK={env.get('RANK')!r} / WORLD_SIZE={env.get('WORLD_SIZE')!r} in the environment are not integers"
        ) from None
    if world <= 1:
        return Ranks()
    return Ranks(here, world, "torchrun", int(env.get("LOCAL_RANK", "0")))


def part_dir(out: str | os.PathLike[str], rank: int) -> Path:
    """The folder rank ``rank`` writes its part to: ``out/parts/rank-XXXXX``."""
    return Path(out) / PARTS / f"rank-{rank:05d}"


def rank_of_part(folder: str | os.PathLike[str]) -> int:
    """The rank a part folder belongs to (its name ``rank-XXXXX``)."""
    name = Path(folder).name
    try:
        return int(name.removeprefix("rank-"))
    except ValueError:
        raise ConfigError(f"{folder}: not a part folder (expected rank-XXXXX)") from None


def missing_ranks(found: set[int], world_size: int) -> list[int]:
    """The ranks of ``0..world_size-1`` whose parts are absent."""
    return [r for r in range(world_size) if r not in found]


def check_parts(
    out: str | os.PathLike[str],
    parts: dict[int, dict[str, Any]],
    keys: Sequence[str],
    file_name: str,
    differ: str,
    error: type[Exception],
) -> dict[str, Any]:
    """The lowest rank's part record, once every part agrees with it on ``keys`` (each
    recording ``world_size``) and every rank of that world has one; else ``error``, naming
    the disagreeing part file (``differ`` says what it may be of) or the missing ranks."""
    first_rank = min(parts)
    first = parts[first_rank]
    for rank, info in parts.items():
        if any(info.get(k) != first.get(k) for k in keys):
            raise error(
                f"{part_dir(out, rank) / file_name}: a part of {differ} "
                f"than {part_dir(out, first_rank) / file_name}"
            )
    absent = missing_ranks(set(parts), int(first["world_size"]))
    if absent:
        raise error(f"{out}: no part of ranks {absent} of {first['world_size']}; run them, then merge")
    return first


# -- the meeting point under torchrun ---------------------------------------------------


def join_group(ranks: Ranks) -> bool:
    """Join torchrun's process group (gloo: a barrier needs no GPU); True when one exists.

    Only ranks launched by torchrun can meet; independent jobs return False.
    """
    if not ranks.can_meet:
        return False
    import torch.distributed as dist

    if not dist.is_available():
        return False
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", rank=ranks.rank, world_size=ranks.world_size)
    return True


def barrier(joined: bool) -> None:
    """Wait until every rank gets here (no-op outside a process group)."""
    if joined:
        import torch.distributed as dist

        dist.barrier()


def leave_group(joined: bool) -> None:
    """Leave the process group this module joined, so the process exits cleanly."""
    if joined:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def run_parts(ranks: Ranks, write_part: Callable[[], T], merge: Callable[[], M]) -> tuple[T, M | None]:
    """Write this rank's part, then merge where the ranks can meet: ``(part, merged or None)``.

    Alone, or under torchrun, the merge runs (on rank 0, after every rank's part is
    written; the other ranks wait for it, so the command ends when the output is
    complete). Independent jobs (``--rank/--world-size``) only write their part: the
    merge is ``echoclip merge OUT`` once all of them are done.
    """
    joined = join_group(ranks)
    try:
        part = write_part()
        if ranks.split and not joined:
            return part, None
        barrier(joined)
        merged = merge() if ranks.rank == 0 else None
        barrier(joined)
        return part, merged
    finally:
        leave_group(joined)
