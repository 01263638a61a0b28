"""Load test of ``echoclip serve``: a real server on 127.0.0.1 answering mixed requests, several at a time.

A tiny random model, an index, a section index and the reference reports of simulated
studies (112x112 Motion-JPEG AVIs, 64 frames at 50 fps) are made in a temporary folder,
and ``echoclip serve`` runs as a subprocess with all of them (drafts and neighbour labels
on). After one warm-up request of each kind, ``--requests`` requests (200) are sent
``--concurrency`` (8) at a time, in a seeded mixed order of three kinds:

- ``video_search``: ``POST /api/search/video`` with one of the studies' files (the upload
  is decoded, embedded, searched, scored by prompts and by neighbours, drafted and
  previewed);
- ``text_search``: ``POST /api/search/text`` (top 5 videos);
- ``draft``: ``POST /api/draft`` with one of the studies' files.

Every answer is checked: no 5xx, status 200, and each field the page reads present (five
results with their reports or thumbnails, findings with neighbour labels, a draft whose
every section has a text and a source, or the message saying why it is not drafted). Prints one JSON line: per kind the count and the
p50 / p95 / max latency in ms, requests per second, the answers that failed, and the
server's resident memory (psutil if installed, else /proc) when idle after start, after
the run, and its peak.

    python benchmarks/bench_serve.py [--requests 200] [--concurrency 8] [--studies 32] \\
        [--save benchmarks/results/serve.jsonl]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from machine import describe_machine, emit

KINDS = ("video_search", "text_search", "draft")
TEXTS = (
    "SEVERELY REDUCED LV SYSTOLIC FUNCTION.",
    "A PACEMAKER LEAD IS SEEN IN THE RIGHT VENTRICLE.",
    "MODERATE PERICARDIAL EFFUSION.",
    "NORMAL LEFT VENTRICULAR SIZE AND FUNCTION. LVEF 60%.",
    "TAVR IN SITU WITH NORMAL FUNCTION.",
)
STARTUP_S = 180
REQUEST_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> dict[str, float]:
    """Resident and peak resident memory of a process, in MiB."""
    try:
        import psutil

        info = psutil.Process(pid).memory_info()
        peak = getattr(info, "peak_wset", None)  # Windows only; Linux: read VmHWM below
        out = {"rss": info.rss / 2**20}
        if peak is not None:
            out["peak"] = peak / 2**20
    except ModuleNotFoundError:
        out = {}
    status = Path(f"/proc/{pid}/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out.setdefault("rss" if key == "VmRSS" else "peak", int(value.split()[0]) / 1024)
    return {k: round(v, 1) for k, v in out.items()}


def _multipart(path: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode(), boundary


def _post(url: str, body: bytes, content_type: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None


def _complete(kind: str, body: Any) -> bool:
    """Whether an answer holds everything the page reads."""
    if not isinstance(body, dict):
        return False
    if kind == "text_search":
        hits = body.get("results") or []
        return len(hits) == 5 and all(h.get("thumbnail") and h.get("study_id") for h in hits)
    draft = body.get("draft") or {}
    sections = draft.get("sections") or []
    # each section drafted (a text, its source and similarity) or not, with the message that says why
    drafted = any(s.get("text") for s in sections) and all(
        (s.get("text") and s.get("study_id") and s.get("similarity") is not None) or s.get("message")
        for s in sections
    )
    if kind == "draft":
        return drafted and bool(draft.get("text"))
    findings = body.get("findings") or {}
    ef = findings.get("ejection_fraction") or {}
    binary = findings.get("binary") or []
    hits = body.get("results") or []
    return (
        drafted
        and len(hits) == 5
        and all(h.get("report") and h.get("study_id") for h in hits)
        and ef.get("value") is not None
        and ef.get("neighbours") is not None
        and bool(binary)
        and all(b.get("probability") is not None and b.get("neighbours") is not None for b in binary)
        and str(body.get("preview", "")).startswith("data:image/webp;base64,")
    )


def _build(root: Path, studies: int) -> dict[str, Path]:
    """Simulated studies, a tiny random model, its index, section index and reference reports."""
    import torch

    from echoclip.cli.main import main as cli
    from echoclip.data.synthetic import simulate_dataset, simulate_reports
    from echoclip.models.factory import create_model
    from echoclip.tokenizer import EchoTokenizer

    torch.manual_seed(0)
    sim = simulate_dataset(root / "sim", n=studies, seed=0, size=112, frames=64, fps=50.0, progress=False)
    tokenizer = EchoTokenizer.train(simulate_reports(200, seed=1))
    create_model("echoclip-tiny", tokenizer=tokenizer).save_pretrained(root / "model", tokenizer=tokenizer)
    model = ["--model", str(root / "model")]
    steps = [
        ["embed", *model, "--data", str(sim), "--out", str(root / "emb"), "--device", "cpu"],
        ["index", "--embeddings", str(root / "emb"), "--out", str(root / "idx")],
        ["index", "--sections", str(sim / "manifest.parquet"), "--split", "all", *model],
    ]
    steps[-1] += ["--out", str(root / "sections")]
    for step in steps:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the result line only
            code = cli(["-q", *step])
        if code != 0:
            raise SystemExit(f"echoclip {step[0]} failed")
    return {"sim": sim, "model": root / "model", "index": root / "idx", "sections": root / "sections"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--studies", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="also append the JSON line to this file")
    args = parser.parse_args()

    import pandas as pd

    load_start = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        built = _build(root, args.studies)
        build_s = time.perf_counter() - started
        manifest = pd.read_parquet(built["sim"] / "manifest.parquet")
        videos = [built["sim"] / p for p in manifest["video_path"]]
        uploads = [_multipart(v) for v in videos]

        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        command = [
            sys.executable,
            "-m",
            "echoclip.cli.main",
            "serve",
            "--model",
            str(built["model"]),
            "--index",
            str(built["index"]),
            "--sections",
            str(built["sections"]),
            "--neighbours",
            str(root / "emb"),
            "--port",
            str(port),
            "--device",
            "cpu",
        ]
        log = root / "server.txt"
        launched = time.monotonic()
        with open(log, "wb") as out:
            server = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
            )
        try:
            deadline = launched + STARTUP_S
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"echoclip serve exited with {server.returncode}:\n{log.read_text()}")
                try:
                    with urllib.request.urlopen(f"{base}/api/health", timeout=2) as r:
                        health = json.loads(r.read())
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"echoclip serve did not answer within {STARTUP_S} s:\n{log.read_text()}"
                    )
                time.sleep(0.25)
            startup_s = time.monotonic() - launched
            rss_idle = _rss_mb(server.pid)

            def send(job: tuple[str, int]) -> tuple[str, int, float, bool]:
                kind, i = job
                start = time.perf_counter()
                if kind == "text_search":
                    payload = json.dumps({"text": TEXTS[i % len(TEXTS)], "k": 5}).encode()
                    status, body = _post(f"{base}/api/search/text", payload, "application/json")
                else:
                    data, boundary = uploads[i % len(uploads)]
                    url = f"{base}/api/search/video?k=5" if kind == "video_search" else f"{base}/api/draft"
                    status, body = _post(url, data, f"multipart/form-data; boundary={boundary}")
                elapsed = time.perf_counter() - start
                return kind, status, elapsed, status == 200 and _complete(kind, body)

            for i, kind in enumerate(KINDS):  # warm-up: first calls allocate and fill caches
                send((kind, i))
            rng = random.Random(args.seed)
            jobs = [(KINDS[i % len(KINDS)], i) for i in range(args.requests)]
            rng.shuffle(jobs)
            started = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                answers = list(pool.map(send, jobs))
            wall_s = time.perf_counter() - started
            rss_after = _rss_mb(server.pid)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

    statuses = Counter(status for _, status, _, _ in answers)
    latency: dict[str, Any] = {}
    for kind in KINDS:
        ms = sorted(1000 * t for k, _, t, _ in answers if k == kind)
        latency[kind] = {
            "n": len(ms),
            "p50_ms": round(statistics.median(ms), 1),
            "p95_ms": round(ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))], 1),
            "max_ms": round(ms[-1], 1),
        }
    result = {
        "benchmark": "serve",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "load_average_1m": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
        "setup": {
            "studies": args.studies,
            "video": "112x112, 64 frames at 50 fps, Motion-JPEG AVI",
            "model": "echoclip-tiny, random weights",
            "indexes": health["indexes"],
            "draft_sections": len(health["sections"] or []),
            "neighbours": health["neighbours"],
            "build_s": round(build_s, 1),
            "server_start_s": round(startup_s, 1),
        },
        "requests": args.requests,
        "concurrency": args.concurrency,
        "wall_s": round(wall_s, 1),
        "requests_per_s": round(args.requests / wall_s, 2),
        "latency": latency,
        "status": {str(k): v for k, v in sorted(statuses.items())},
        "server_errors_5xx": sum(v for k, v in statuses.items() if k >= 500),
        "incomplete_answers": sum(1 for _, _, _, ok in answers if not ok),
        "server_rss_mb": {
            "idle_after_start": rss_idle.get("rss"),
            "after": rss_after.get("rss"),
            "peak": rss_after.get("peak"),
        },
    }
    emit(result, args.save)
    if result["server_errors_5xx"] or result["incomplete_answers"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
