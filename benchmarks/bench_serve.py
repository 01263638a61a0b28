"""Search latency of ``echoclip serve`` for one uploaded 112 px clip on the CPU.

A tiny model and an index of simulated studies (112x112 Motion-JPEG AVIs, 64 frames at
50 fps) are made in a temporary folder; the app is called through FastAPI's TestClient,
so the figures include multipart parsing, decoding, the forward pass, the index search,
zero-shot scoring and the animated preview, but no network. Prints one JSON line:

- ``video_search_ms``: median of ``POST /api/search/video`` (upload -> top 5 reports,
  zero-shot findings, preview);
- ``text_search_ms``: median of ``POST /api/search/text`` (top 5 videos);
- ``embed_clip_ms``: the baseline, decoding the same file and embedding it, no web, no search;
- ``video_search_vs_embed``: the serving overhead as a ratio to that baseline.

    python benchmarks/bench_serve.py [--studies 32] [--repeats 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def _median_ms(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median milliseconds of each function, called in turn each round so that a busy
    (shared) machine slows all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up: first calls allocate and fill caches
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: round(1000 * statistics.median(t), 1) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    import pandas as pd
    import torch
    from fastapi.testclient import TestClient

    from echoclip.cli.main import main as cli
    from echoclip.data.synthetic import simulate_dataset, simulate_reports
    from echoclip.data.video import load_video
    from echoclip.models.factory import create_model
    from echoclip.serve.app import create_app
    from echoclip.tokenizer import EchoTokenizer

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sim = simulate_dataset(
            root / "sim", n=args.studies, seed=0, size=112, frames=64, fps=50.0, progress=False
        )
        tokenizer = EchoTokenizer.train(simulate_reports(200, seed=1))
        create_model("echoclip-tiny", tokenizer=tokenizer).save_pretrained(
            root / "model", tokenizer=tokenizer
        )
        cli(
            [
                "-q",
                "embed",
                "--model",
                str(root / "model"),
                "--data",
                str(sim),
                "--out",
                str(root / "emb"),
                "--device",
                "cpu",
            ]
        )
        cli(["-q", "index", "--embeddings", str(root / "emb"), "--out", str(root / "idx")])
        video = sim / pd.read_parquet(sim / "manifest.parquet")["video_path"].iloc[0]
        data = video.read_bytes()

        app = create_app(root / "model", root / "idx", device="cpu")
        engine = app.state.engine
        client = TestClient(app)

        def search_video() -> None:
            r = client.post("/api/search/video", files={"file": (video.name, data)}, params={"k": 5})
            r.raise_for_status()

        def search_text() -> None:
            r = client.post(
                "/api/search/text", json={"text": "SEVERELY REDUCED LV SYSTOLIC FUNCTION.", "k": 5}
            )
            r.raise_for_status()

        result = {
            "benchmark": "serve",
            "video": f"{video.stat().st_size} bytes, 112x112, 64 frames",
            "index": {name: len(index) for name, index in engine.indexes.items()},
            "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
        }
        fns = {
            "video_search_ms": search_video,
            "text_search_ms": search_text,
            "embed_clip_ms": lambda: engine.embed_video(load_video(video)),
        }
        result.update(_median_ms(fns, args.repeats))
        result["video_search_vs_embed"] = round(result["video_search_ms"] / result["embed_clip_ms"], 2)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
