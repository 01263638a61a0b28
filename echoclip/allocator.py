"""The memory allocator for long CPU training runs: mimalloc, where it is installed.

A CLIP step allocates and frees tensors of 16-64 MB whose sizes change from step to step
(the sentence term's shapes follow each batch's reports). glibc's malloc either maps
fresh zeroed pages for each of them (slower steps) or, with ``MALLOC_MMAP_MAX_=0``, keeps
them on a heap that fragments and grows through a long run. mimalloc is as fast as the
latter and stays flat, with identical results (the measurements are in
docs/experiments.md). An allocator has to be loaded before the process starts, so this
module only finds it and says which one a process runs on::

    LD_PRELOAD=$(python -m echoclip.allocator) echoclip demo

``python -m echoclip.allocator`` prints the library's path, or nothing where the
``cmeel-mimalloc`` package is not installed (it ships for x86_64 Linux), which leaves
``LD_PRELOAD`` empty and the system allocator in place.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

MIMALLOC_DISTRIBUTION = "cmeel-mimalloc"


def mimalloc_library() -> Path | None:
    """The ``libmimalloc.so`` that the ``cmeel-mimalloc`` package installed, or None."""
    try:
        files = metadata.files(MIMALLOC_DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == "libmimalloc.so":
            path = Path(str(file.locate())).resolve()
            if path.is_file():
                return path
    return None


def allocator_name() -> str:
    """``"mimalloc"`` when this process runs under it (it was preloaded), else ``"system"``."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux
        return "system"
    return "mimalloc" if "libmimalloc" in maps else "system"


def main() -> None:
    library = mimalloc_library()
    if library is not None:
        print(library)


if __name__ == "__main__":
    main()
