"""Model sizes and speed: prints one JSON line.

- ``configs``: parameters (millions) and GFLOPs per clip / per report of every
  config (``torch.utils.flop_counter.FlopCounterMode`` on the meta device, so
  nothing is allocated; a multiply-add counts as 2 FLOPs), with the input size.
- ``encode_video_clips_per_s``: CPU throughput of ``encode_video`` for
  ``echoclip-tiny`` and for the frame-wise ConvNeXt-B tower of the published EchoCLIP
  at the same input (16 frames of 64 x 64), and their ratio.
- ``gpu_bf16_clips_per_s_echoclip_base``: on a GPU, ``echoclip-base`` under bf16 autocast.

Usage: ``python benchmarks/bench_models.py [--seconds 10] [--batch 8] [--markdown]``
(``--markdown`` also prints the README table to stderr).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone

import torch
from torch.utils.flop_counter import FlopCounterMode

from echoclip.models.factory import create_model, get_model_config, list_models


def describe(cfg) -> str:
    """The video tower in a few words, for the table."""
    v = cfg.video
    if v.kind == "videomae":
        return f"VideoMAE ViT ({v.width} wide, {v.layers} layers, {v.pool} pool)"
    if v.kind == "torchvision":
        return f"torchvision {v.backbone}"
    if v.backbone == "open_clip":
        net = v.backbone_kwargs["vision_cfg"].get("timm_model_name", "open_clip ViT")
    elif v.backbone == "timm":
        net = v.backbone_kwargs["model_name"]
    else:
        net = "CNN " + "-".join(str(w) for w in v.backbone_kwargs.get("widths", []))
    return f"{net} per frame, {v.aggregation} over time"


def sizes(name: str) -> dict:
    """Parameters and FLOPs of one config, measured on the meta device."""
    cfg = get_model_config(name)
    with torch.device("meta"):
        model = create_model(name)
        video = torch.empty(1, *model.video_shape)
        text = torch.zeros(1, cfg.text.context_length, dtype=torch.long)
        with torch.no_grad(), FlopCounterMode(display=False) as video_flops:
            model.video_tower(video)
        with torch.no_grad(), FlopCounterMode(display=False) as text_flops:
            model.text_tower(text)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    v = cfg.video
    return {
        "params_m": round(count(model) / 1e6, 2),
        "video_params_m": round(count(model.video_tower) / 1e6, 2),
        "text_params_m": round(count(model.text_tower) / 1e6, 2),
        "video_gflops_per_clip": round(video_flops.get_total_flops() / 1e9, 2),
        "text_gflops_per_report": round(text_flops.get_total_flops() / 1e9, 3),
        "input": f"{v.num_frames}x{v.image_size}x{v.image_size}",
        "fps": model.preprocess_config.fps,
        "video_tower": describe(cfg),
        "text_tower": cfg.text.kind,
        "embed_dim": cfg.embed_dim,
    }


def clips_per_second(
    model: torch.nn.Module, batch: int, seconds: float, device: str = "cpu", dtype: torch.dtype | None = None
) -> float:
    """Clips per second of ``encode_video`` in inference mode (after one warm-up batch)."""
    model = model.to(device).eval()
    x = torch.randn(batch, *model.video_shape, device=device)
    autocast = torch.autocast(device, dtype=dtype, enabled=dtype is not None)
    with torch.inference_mode(), autocast:
        model.encode_video(x)
        n, start = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - start < seconds:
            model.encode_video(x)
            n += 1
        if device == "cuda":
            torch.cuda.synchronize()
        return n * batch / (time.perf_counter() - start)


def markdown(configs: dict) -> str:
    rows = [
        "| config | video tower | input (frames x px) | fps | params (M) | video GFLOPs / clip | text GFLOPs / report |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in sorted(configs.items(), key=lambda item: item[1]["params_m"]):
        rows.append(
            f"| `{name}` | {s['video_tower']} | {s['input']} | {s['fps'] or 'source'} | {s['params_m']} "
            f"| {s['video_gflops_per_clip']} | {s['text_gflops_per_report']} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="time per throughput measurement")
    parser.add_argument("--batch", type=int, default=8, help="clips per batch")
    parser.add_argument("--markdown", action="store_true", help="print the README table to stderr")
    args = parser.parse_args()
    torch.manual_seed(0)

    configs = {name: sizes(name) for name in list_models()}
    tiny = create_model("echoclip-tiny")
    size = tiny.config.video
    # the published EchoCLIP tower (ConvNeXt-B per frame, mean over frames) at the tiny model's input
    convnext = create_model(
        "echoclip-frames-convnext", video={"image_size": size.image_size, "num_frames": size.num_frames}
    )
    tiny_rate = clips_per_second(tiny, args.batch, args.seconds)
    convnext_rate = clips_per_second(convnext, args.batch, args.seconds)
    result = {
        "bench": "models",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}",
        "encode_video_clips_per_s": {
            "input": f"{size.num_frames}x{size.image_size}x{size.image_size}",
            "batch": args.batch,
            "echoclip-tiny": round(tiny_rate, 2),
            "frames-convnext_base": round(convnext_rate, 2),
            "ratio_tiny_over_convnext": round(tiny_rate / convnext_rate, 1),
        },
        "configs": configs,
    }
    if torch.cuda.is_available():
        base = create_model("echoclip-base")
        result["gpu"] = torch.cuda.get_device_name()
        result["gpu_bf16_clips_per_s_echoclip_base"] = round(
            clips_per_second(base, 32, args.seconds, device="cuda", dtype=torch.bfloat16), 1
        )
    print(json.dumps(result))
    if args.markdown:
        print(markdown(configs), file=sys.stderr)


if __name__ == "__main__":
    main()
