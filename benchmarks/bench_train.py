"""Training throughput: the tiny video CLIP against the frame-wise (EchoCLIP-style) model.

Prints one JSON line: training clips/s and peak resident memory, each measured in its
own process at the same input (16 frames of 64 x 64), of ``echoclip-tiny`` (per-frame
CNN + ``stats`` temporal aggregation), of EchoCLIP's frame-wise model
(``echoclip-frames-convnext``: ConvNeXt-B on every frame, mean over frames) and of
``echoclip-tiny-frames`` (the tiny CNN averaged over frames); and the speed-up of 2
data-loading workers over 0 when reading simulated AVIs. Precision: fp32 on a CPU
(bf16 convolutions are slow on CPUs without bf16 units), bf16 on a GPU, where it also
measures ``echoclip-base`` (clips/s, memory, model FLOPs utilisation).

    python benchmarks/bench_train.py [--steps 20] [--framewise-steps 3] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date


def _train_speed(
    model_name: str, steps: int, batch_size: int, precision: str, overrides: dict | None = None
) -> dict:
    import torch

    from echoclip.models.factory import create_model, get_tokenizer
    from echoclip.processes import peak_rss_mb
    from echoclip.train.contrastive import ContrastiveObjective

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tok = get_tokenizer(model_name)
    model = create_model(model_name, tokenizer=tok, **(overrides or {})).to(device)
    c, t, h, w = model.video_shape
    video = torch.randn(batch_size, c, t, h, w, device=device)
    reports = [f"LV EJECTION FRACTION IS {30 + i % 40}%. NO PERICARDIAL EFFUSION." for i in range(batch_size)]
    text = tok(reports, context_length=model.context_length).to(device)
    objective = ContrastiveObjective(tok)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step() -> None:
        with autocast:
            loss, _ = objective.loss(model, {"video": video, "text": text}, 0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    out = {
        "clips_per_s": round(steps * batch_size / seconds, 2),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "peak_rss_mb": peak_rss_mb(),
    }
    if device.type == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out.update(_mfu(model, video, text, out["clips_per_s"], batch_size))
    return out


def _mfu(model, video, text, clips_per_s: float, batch_size: int) -> dict:
    """Model FLOPs utilisation: measured training FLOPs per clip x clips/s over the GPU's bf16 peak."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(video, text)
        (out["video_features"].sum() + out["text_features"].sum()).backward()
    flops_per_clip = counter.get_total_flops() / batch_size
    name = torch.cuda.get_device_name()
    peak = 989e12 if "H100" in name or "H200" in name else None  # dense bf16 tensor-core peak
    result = {"train_gflops_per_clip": round(flops_per_clip / 1e9, 2), "gpu": name}
    if peak:
        result["mfu"] = round(flops_per_clip * clips_per_s / peak, 4)
    return result


def _in_subprocess(
    model_name: str, steps: int, batch_size: int, precision: str, overrides: dict | None = None
) -> dict:
    here = os.path.dirname(os.path.abspath(__file__))
    code = (
        f"import json,sys; sys.path.insert(0, {here!r}); from bench_train import _train_speed; "
        f"print(json.dumps(_train_speed({model_name!r}, {steps}, {batch_size}, {precision!r}, {overrides!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _loader_speed(workers: int, data_dir: str, batches: int, batch_size: int) -> float:
    import torch

    from echoclip.data.datasets import Manifest, collate_skip
    from echoclip.data.transforms import VideoTransform
    from echoclip.models.factory import get_model_config

    cfg = get_model_config("echoclip-tiny")
    from echoclip.models.clip_model import default_preprocess

    ds = Manifest(
        os.path.join(data_dir, "manifest.parquet"), transform=VideoTransform(default_preprocess(cfg))
    )
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch_size, num_workers=workers, shuffle=True, collate_fn=collate_skip, drop_last=True
    )
    t0, n = time.perf_counter(), 0
    while n < batches:
        for _ in loader:
            n += 1
            if n >= batches:
                break
    return batches * batch_size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--framewise-steps", type=int, default=3, help="steps of the slow ConvNeXt-B model")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--studies", type=int, default=96)
    args = ap.parse_args()

    import torch

    from echoclip.precision import resolve_precision

    precision = resolve_precision("auto", "cuda" if torch.cuda.is_available() else "cpu")
    tiny = _in_subprocess("echoclip-tiny", args.steps, args.batch_size, precision)
    same_input = {"video": {"image_size": 64, "num_frames": 16}}
    convnext = _in_subprocess(
        "echoclip-frames-convnext", args.framewise_steps, args.batch_size, precision, same_input
    )
    frames = _in_subprocess("echoclip-tiny-frames", args.steps, args.batch_size, precision)

    from echoclip.data.synthetic import simulate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        data = simulate_dataset(os.path.join(tmp, "sim"), n=args.studies, seed=0, size=112, frames=64)
        batches = max(2, args.studies // 16)
        w0 = _loader_speed(0, str(data), batches, 16)
        w2 = _loader_speed(2, str(data), batches, 16)

    result = {
        "benchmark": "train",
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"),
        "precision": precision,
        "batch_size": args.batch_size,
        "tiny_clips_per_s": tiny["clips_per_s"],
        "tiny_peak_rss_mb": tiny["peak_rss_mb"],
        "framewise_convnext_clips_per_s": convnext["clips_per_s"],
        "framewise_convnext_peak_rss_mb": convnext["peak_rss_mb"],
        "tiny_vs_framewise_convnext_speed": round(tiny["clips_per_s"] / convnext["clips_per_s"], 2),
        "tiny_frames_mean_clips_per_s": frames["clips_per_s"],
        "tiny_frames_mean_peak_rss_mb": frames["peak_rss_mb"],
        "loader_clips_per_s_workers0": round(w0, 1),
        "loader_clips_per_s_workers2": round(w2, 1),
        "loader_speedup_2_vs_0": round(w2 / w0, 2),
    }
    if torch.cuda.is_available():
        base = _in_subprocess("echoclip-base", args.steps, 32, "bf16")
        result.update({f"base_{k}": v for k, v in base.items()})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
