"""``echoclip demo``: the whole loop on simulated echo studies, on a CPU, in minutes."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "run the whole loop on simulated echoes: simulate, tokenizer, pretrain, train, evaluate, index"
EXAMPLE = "echoclip demo --out runs/demo --size small --seed 0"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--size",
        default="small",
        choices=["small", "medium", "large"],
        help="data and compute budget, the shipped recipe configs/recipes/demo-SIZE.toml: small "
        "(about 15 minutes on 2 CPU cores), medium, large",
    )
    size.add_argument("--recipe", help="a demo recipe file of your own (a copy of demo-small.toml, edited)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated cohort and of training")
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="also train the CLIP stage from scratch beside the pretrained one, and report both",
    )
    parser.add_argument(
        "--force", action="store_true", help="redo every stage instead of reusing finished ones"
    )


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from echoclip.demo import DemoRecipe, format_table, run_demo

    recipe = DemoRecipe.load(args.recipe or f"demo-{args.size}")
    if args.ablation:
        recipe = dataclasses.replace(recipe, ablation=True)
    metrics = run_demo(args.out, recipe, seed=args.seed, force=args.force, progress=not args.quiet)
    out = Path(args.out)
    print(format_table(metrics))
    print(f"\nmetrics: {out / 'metrics.json'}   plots: {out / 'eval'}   model: {out / 'clip' / 'final'}")
    print(
        f"search the test set:  echoclip search --index {out / 'index'} "
        f'--model {out / "clip" / "final"} --text "A PACEMAKER LEAD IS SEEN."'
    )
    if (out / "index" / "studies").is_dir():
        print(
            f"the reports nearest a test study:  echoclip search --index {out / 'index'} "
            f"--model {out / 'clip' / 'final'} --study {' '.join(_first_test_study(out))}"
        )
    serve = f"echoclip serve --model {out / 'clip' / 'final'} --index {out / 'index'}"
    findings = out / "prompts" / "findings.json"  # the findings in the training reports' sentences
    if findings.is_file():
        serve += f" --prompts ejection_fraction,devices,{findings},views"
    print(f"open it in a browser:  {serve}")
    print(f"demo done in {metrics['time.total_s']:.0f} s")
    return 0


def _first_test_study(out: Path) -> list[str]:
    """The video files of the demo's first test study."""
    import pandas as pd

    table = pd.read_parquet(out / "data" / "manifest.parquet", columns=["study_id", "video_path", "split"])
    test = table[table["split"] == "test"]
    rows = test[test["study_id"] == test["study_id"].iloc[0]]
    return [str(out / "data" / path) for path in rows["video_path"]]
