"""Draft reports judged against the truth, beside the nearest whole report and the zero-shot AUCs.

Takes a trained model and its labelled data (``--model runs/demo/clip/final --data
runs/demo/data/manifest.parquet``), builds a section index on the ``--index-split``
(``train``) reports and, on the ``--split`` (``test``) studies:

- drafts a report per study (sections looked up by name; a section drafted only when
  enough of the study's nearest whole training reports have it; its text their
  consensus) and judges what it states against the truth, beside the same drafts with
  each section's text the one nearest the video (``draft_nearest_sections``) and the
  single nearest whole training report
  (``echoclip.evaluate.evaluate(..., drafts=)``, so :func:`echoclip.zeroshot.judge.judge_drafts`);
- scores every device and finding with its prompts (the prompt set's own method) and
  with the labels of the ``--k`` nearest training reports (``knn``), each an AUC;
- reads the video/report retrieval figures (MCMRR, median rank) of the same evaluation.

Prints one JSON line with the date and the machine, and appends it to ``--results``:
draft and nearest-report macro F1 over devices and findings and their difference, each
one's per-label F1, the draft's EF MAE beside the mean predictor's and their ratio, the
AUC per label for prompts and knn, MCMRR and median rank. ``targets`` says whether the
draft meets the acceptance of the drafting issue (macro F1 at least 0.05 above the
nearest report's; EF MAE at most 0.3 of the mean predictor's).

    python benchmarks/bench_drafts.py --model runs/demo/clip/final --data runs/demo/data/manifest.parquet --level study
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from machine import describe_machine, emit

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "drafts.jsonl"
PROMPT_SETS = ("ejection_fraction", "devices", "findings")
MARGIN = 0.05  # the draft's macro F1 over the nearest report's, at least
EF_RATIO = 0.3  # the draft's EF MAE over the mean predictor's, at most


def _r(value: Any, digits: int = 4) -> Any:
    if value is None:
        return None
    value = float(value)
    return None if value != value else round(value, digits)  # NaN: not computed


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _manifest(data: Path) -> Path:
    return data / "manifest.parquet" if data.is_dir() else data


def _neighbours(model: Any, tokenizer: Any, manifest: Path, split: str) -> tuple[Any, Any]:
    """The ``split`` studies' report embeddings and their labels, for the knn method."""
    import pandas as pd

    from echoclip.models.embed import embed_reports

    table = pd.read_parquet(manifest) if manifest.suffix == ".parquet" else pd.read_csv(manifest)
    table = table[table["split"].astype(str) == split] if "split" in table.columns else table
    table = table[table["report"].notna()].drop_duplicates(subset="study_id").reset_index(drop=True)
    emb = embed_reports(model, tokenizer, table["report"].astype(str).tolist(), device="cpu", progress=False)
    return emb, table


def _judged(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "macro_f1": _r(entry["macro_f1"]),
        "device_macro_f1": _r(entry["device_macro_f1"]),
        "finding_macro_f1": _r(entry["finding_macro_f1"]),
        "ef_mae": _r(entry["ef_mae"], 3),
        "ef_stated": f"{entry['ef_n']} of {entry['ef_n'] + entry['ef_unstated']}",
        "f1": {label: _r(e["f1"]) for group in ("devices", "findings") for label, e in entry[group].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained model directory")
    parser.add_argument("--data", required=True, help="its labelled data: a manifest or data set folder")
    parser.add_argument("--split", default="test", help="the studies drafted and scored")
    parser.add_argument("--index-split", default="train", help="the reports indexed and searched")
    parser.add_argument("--k", type=int, default=None, help="neighbours of the knn method (default: its own)")
    parser.add_argument(
        "--level",
        choices=("clip", "study"),
        default="clip",
        help="query by each study's clips (clip) or by its study embedding (study; a study-level model)",
    )
    parser.add_argument(
        "--shipped-prompts",
        action="store_true",
        help="ask the findings with the shipped prompts, not the index split's own sentences (as the demo does)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", help="work folder to keep (default: a temporary one)")
    parser.add_argument("--results", default=str(RESULTS), help="JSONL to append the line to ('' for none)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import echoclip
    from echoclip.evaluate import evaluate
    from echoclip.models.model_dir import model_identity
    from echoclip.zeroshot.drafts import PRESENCE_K, PRESENCE_THRESHOLD, build_section_index
    from echoclip.zeroshot.neighbours import DEFAULT_K

    t0 = time.perf_counter()
    model_dir, data = Path(args.model), Path(args.data)
    manifest = _manifest(data)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-drafts-"))
    work.mkdir(parents=True, exist_ok=True)
    model = echoclip.load_model(model_dir, device="cpu")
    tokenizer = echoclip.get_tokenizer(model_dir)
    identity = model_identity(model_dir)
    sections = build_section_index(
        model,
        tokenizer,
        manifest,
        work / "sections",
        split=args.index_split,
        model_identity=identity,
        model_dir=model_dir,
        device="cpu",
    )
    index_s = time.perf_counter() - t0

    # the prompts (each target's own method), the retrieval figures and the judged drafts
    prompt_sets = list(PROMPT_SETS)
    if not args.shipped_prompts:  # the findings in the indexed reports' own sentences, as the demo asks them
        from echoclip.zeroshot.corpus_prompts import with_corpus_findings

        prompt_sets = with_corpus_findings(prompt_sets, manifest, args.index_split, work / "findings.json")
    common = dict(
        prompt_sets=prompt_sets, split=args.split, calibration_split=None, device="cpu", level=args.level
    )
    prompts = evaluate(
        model, tokenizer, manifest, work / "prompts", drafts=sections, model_hash=identity["hash"], **common
    )
    # the same drafts with each section's text the one nearest the video instead of the consensus
    by_nearest = evaluate(
        model,
        tokenizer,
        manifest,
        work / "nearest_sections",
        drafts=sections,
        draft_method="nearest",
        model_hash=identity["hash"],
        **{**common, "prompt_sets": ("devices",)},
    )
    k = DEFAULT_K if args.k is None else args.k
    knn = evaluate(
        model,
        tokenizer,
        manifest,
        work / "knn",
        method="knn",
        neighbours=_neighbours(model, tokenizer, manifest, args.index_split),
        k=k,
        **common,
    )

    draft, nearest = prompts["draft"], prompts["nearest_report"]
    difference = None
    if draft["macro_f1"] is not None and nearest["macro_f1"] is not None:
        difference = draft["macro_f1"] - nearest["macro_f1"]
    mean_mae = draft.get("mean_predictor_ef_mae")
    ratio = draft["ef_mae"] / mean_mae if draft["ef_mae"] is not None and mean_mae else None
    auc = {}
    for name, entry in prompts["zero_shot"].items():
        if entry["kind"] != "binary":
            continue
        other = knn["zero_shot"].get(name, {})
        auc[name] = {
            "prompt_set": entry["prompt_set"],
            "prompts": _r(entry.get("auc")),
            "prompts_method": entry["method"],
            "knn": _r(other.get("auc")),
        }
    both = [v for v in auc.values() if v["prompts"] is not None and v["knn"] is not None]
    line = {
        "benchmark": "drafts",
        "date": date.today().isoformat(),
        "machine": describe_machine(),
        "threads": args.threads,
        "model": str(model_dir),
        "data": str(manifest),
        "split": args.split,
        "level": args.level,
        "studies": prompts["data"]["studies"],
        "index_split": args.index_split,
        "indexed_reports": nearest["reference_reports"],
        "presence_k": draft.get("presence_k", PRESENCE_K),
        "presence_threshold": draft.get("presence_threshold", PRESENCE_THRESHOLD),
        "draft_macro_f1": _r(draft["macro_f1"]),
        "nearest_report_macro_f1": _r(nearest["macro_f1"]),
        "macro_f1_difference": _r(difference),
        "draft_ef_mae": _r(draft["ef_mae"], 3),
        "mean_predictor_ef_mae": _r(mean_mae, 3),
        "ef_mae_ratio": _r(ratio),
        "nearest_report_ef_mae": _r(nearest["ef_mae"], 3),
        "targets": {
            f"macro_f1_difference>={MARGIN}": None if difference is None else bool(difference >= MARGIN),
            f"ef_mae_ratio<={EF_RATIO}": None if ratio is None else bool(ratio <= EF_RATIO),
        },
        "draft": {
            **_judged(draft),
            "section_rates": {n: _r(v, 3) for n, v in draft["section_rates"].items()},
        },
        "draft_method": draft.get("method"),
        "draft_nearest_sections": _judged(by_nearest["draft"]),
        "nearest_report": _judged(nearest),
        "auc": auc,
        "knn_k": k,
        "findings_prompts": "shipped"
        if args.shipped_prompts
        else f"the {args.index_split} reports' sentences",
        # over the labels both methods have an AUC for (a label true in no test study has none)
        "mean_auc": {method: _r(_mean([v[method] for v in both])) for method in ("prompts", "knn")},
        "mean_auc_labels": len(both),
        "ejection_fraction_mae": {
            "prompts": _r(prompts["zero_shot"].get("ejection_fraction", {}).get("mae"), 3),
            "knn": _r(knn["zero_shot"].get("ejection_fraction", {}).get("mae"), 3),
        },
        "retrieval": {
            "mcmrr": _r(prompts["retrieval"]["mcmrr"], 2),
            "median_rank": _r(prompts["retrieval"]["median_rank"], 1),
            "candidates": prompts["retrieval"]["video_to_report"]["n"],
        },
        "index_s": round(index_s, 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    emit(line, args.results)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
