"""Simulator throughput: 112×112×64-frame studies written to disk (MJPEG AVI) on one core.

Prints one JSON line. The target of the issue is 10 studies/s; ``ratio_to_target`` is
the measured rate over it. Wall and CPU rates are both given: on a shared machine the
CPU rate is the steadier one.

    python benchmarks/bench_simulate.py [--n 40]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path

TARGET_STUDIES_PER_S = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=40, help="studies to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core

    from echoclip.data.synthetic import simulate_dataset, simulate_study

    simulate_study(args.seed)  # warm caches and imports
    wall, cpu = time.perf_counter(), time.process_time()
    for seed in range(args.n):
        simulate_study(args.seed + seed)
    render_wall, render_cpu = time.perf_counter() - wall, time.process_time() - cpu

    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        out = simulate_dataset(Path(tmp) / "sim", n=args.n, seed=args.seed, progress=False)
        total_wall, total_cpu = time.perf_counter() - wall, time.process_time() - cpu
        size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20

    rate = args.n / total_wall
    print(
        json.dumps(
            {
                "benchmark": "simulate",
                "date": dt.date.today().isoformat(),
                "machine": f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}",
                "n": args.n,
                "size": 112,
                "frames": 64,
                "studies_per_s": round(rate, 2),
                "studies_per_cpu_s": round(args.n / total_cpu, 2),
                "render_ms": round(1000 * render_wall / args.n, 1),
                "render_cpu_ms": round(1000 * render_cpu / args.n, 1),
                "render_and_write_ms": round(1000 * total_wall / args.n, 1),
                "mb_per_study": round(size_mb / args.n, 3),
                "target_studies_per_s": TARGET_STUDIES_PER_S,
                "ratio_to_target": round(rate / TARGET_STUDIES_PER_S, 2),
                "cpu_ratio_to_target": round(args.n / total_cpu / TARGET_STUDIES_PER_S, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
