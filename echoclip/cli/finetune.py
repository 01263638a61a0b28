"""``echoclip finetune``: fine-tune a video encoder with a head for EF, EF < 50 %, findings or the view."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from echoclip.cli.loop_options import add_loop_arguments, loop_config_from_args
from echoclip.cli.video_options import read_options

HELP = "fine-tune a video encoder with a linear, attentive or STF-Net head (EF, EF < 50 %, findings, view)"
EXAMPLE = (
    "echoclip finetune --data EchoNet-Dynamic --init runs/clip/final --head stfnet --task ef "
    "--out runs/ft --epochs 20 --batch-size 16 --test-clips 4"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from echoclip.finetune.finetune import TASKS

    p.add_argument(
        "--data",
        required=True,
        help="EchoNet-Dynamic folder (FileList.csv), manifest (parquet/CSV) or a folder holding manifest.parquet",
    )
    p.add_argument(
        "--init",
        required=True,
        help="model directory, encoder checkpoint (echoclip pretrain) or model config name (random weights)",
    )
    p.add_argument("--model", help="the architecture --init must have (config name, JSON or model directory)")
    p.add_argument("--head", default="stfnet", help="linear, attentive or stfnet (default)")
    p.add_argument("--head-options", help="JSON of head options, e.g. '{\"hidden\": 64}'")
    p.add_argument(
        "--task",
        default="ef",
        choices=TASKS,
        help="ef (regression), ef50, findings (binary) or view (the manifest's view column; "
        "classes: the views of the training split)",
    )
    p.add_argument(
        "--loss",
        choices=["l1", "mse", "bce", "ce"],
        help="ef: l1 (default) or mse; ef50, findings: bce; view: ce",
    )
    p.add_argument("--labels", help="comma-separated label columns of --task findings (default: finding_*)")
    p.add_argument("--no-volumes", action="store_true", help="ef: predict EF only, not ESV and EDV")
    p.add_argument("--out", default="runs/ft", help="run folder (checkpoints, metrics, report, final model)")
    p.add_argument(
        "--freeze", action="store_true", help="keep the encoder's weights fixed (train the head only)"
    )
    p.add_argument(
        "--layer-decay", type=float, help="learning rate x this per encoder block below the head (e.g. 0.75)"
    )
    p.add_argument(
        "--test-clips", type=int, default=1, help="clips per test video whose predictions are averaged"
    )
    p.add_argument("--test-split", default="test", help="split scored at the end (default test)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    add_loop_arguments(p)


def config_from_args(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The :class:`LoopConfig` of the shipped ``finetune`` recipe, the user's recipe and the flags."""
    return loop_config_from_args(args, defaults="finetune")


def run(args: argparse.Namespace) -> int:
    from echoclip.errors import ConfigError
    from echoclip.finetune.finetune import finetune
    from echoclip.loop.distributed import init_distributed

    config, recipe = config_from_args(args)
    try:
        head_options = json.loads(args.head_options) if args.head_options else None
    except json.JSONDecodeError as e:
        raise ConfigError(f"--head-options is not valid JSON ({e})") from None
    result = finetune(
        args.data,
        config,
        init=args.init,
        head=args.head,
        task=args.task,
        model=args.model,
        freeze=args.freeze,
        layer_decay=args.layer_decay,
        loss=args.loss,
        labels=[c.strip() for c in args.labels.split(",") if c.strip()] if args.labels else None,
        volumes=not args.no_volumes,
        head_options=head_options,
        test_clips=args.test_clips,
        resume=args.resume,
        test_split=args.test_split,
        model_overrides=recipe.get("model"),
        augment=not args.no_augment,
        preload=args.preload,
        plots=not args.no_plots,
        read_options=read_options(args),
    )
    if not init_distributed().is_main:
        return 0
    print("finetune done: " + json.dumps(summary(result.metrics, result.train.step, str(result.final_dir))))
    return 0


def summary(metrics: dict[str, Any], steps: int, model: str) -> dict[str, Any]:
    """The figures of the closing line: the first target's test scores and the baseline."""

    def r(v: Any) -> Any:
        if isinstance(v, int | float):
            return round(float(v), 4) if math.isfinite(v) else None
        return v

    out: dict[str, Any] = {"steps": steps, "n_test": metrics.get("n_test")}
    if "ef" in metrics and "mae" in metrics["ef"]:
        ef = metrics["ef"]
        out.update(test_mae=r(ef["mae"]), test_rmse=r(ef["rmse"]), test_r2=r(ef["r2"]))
        out["test_ef50_auc"] = r(metrics["ef50"]["auc"])
        out["mean_predictor_mae"] = r(metrics["baseline"]["ef_mae_mean_predictor"])
    elif metrics.get("task") == "view":
        view = metrics["view"]
        out.update(test_accuracy=r(view["accuracy"]), test_balanced_accuracy=r(view["balanced_accuracy"]))
    elif metrics.get("task") == "ef50":
        out.update(test_auc=r(metrics["ef"]["auc"]), test_accuracy=r(metrics["ef"]["accuracy"]))
    elif "macro_auc" in metrics or metrics.get("targets"):
        first = metrics["targets"][0]
        out["test_macro_auc"] = r(metrics.get("macro_auc", metrics[first]["auc"]))
    out["model"] = model
    return out
