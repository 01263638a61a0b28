"""Draft reports judged against the truth: what a report states, read back out of its text
and scored against a data set's labels.

A draft reads well or not; what matters is whether it states the study's devices,
findings and EF. :func:`report_facts` reads them with the patterns that label reports
(:data:`~echoclip.data.synthetic.reports.DEVICE_PATTERNS`,
:data:`~echoclip.data.synthetic.reports.FINDING_PATTERNS`,
:func:`~echoclip.data.synthetic.reports.extract_ef`); :func:`judge_reports` scores many
texts against truth rows (F1 per device and finding, macro F1, EF MAE beside the mean
predictor's); :func:`judge_drafts` drafts one report per study from a section index and
scores it beside the single nearest whole report of a reference corpus::

    metrics, per_study = judge_drafts(model, tokenizer, study_emb, truth, "runs/sections", train_reports)
    metrics["draft"]["macro_f1"], metrics["nearest_report"]["macro_f1"]
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from echoclip.data.synthetic.anatomy import DEVICES, FINDINGS
from echoclip.data.synthetic.reports import mentioned_devices, mentioned_findings, report_ef
from echoclip.errors import DataError

__all__ = ["ReportFacts", "TRUTH_COLUMNS", "report_facts", "judge_reports", "judge_drafts"]

# the data-set columns a report is judged against
TRUTH_COLUMNS: tuple[str, ...] = (
    "ef",
    *(f"device_{d}" for d in DEVICES),
    *(f"finding_{f}" for f in FINDINGS),
)


@dataclass(frozen=True)
class ReportFacts:
    """What a report states: the devices and findings it names as present, and its EF (or ``None``)."""

    devices: frozenset[str]
    findings: frozenset[str]
    ef: float | None


def report_facts(text: str) -> ReportFacts:
    """The devices, findings and EF a report text states.

    >>> report_facts("LVEF 35%. The left ventricle is dilated. Pacemaker lead in the RV.")
    ReportFacts(devices=frozenset({'pacemaker'}), findings=frozenset({'lv_dilation'}), ef=35.0)
    """
    text = str(text)
    return ReportFacts(
        frozenset(mentioned_devices(text)), frozenset(mentioned_findings(text)), report_ef(text)
    )


def _f1(tp: int, fp: int, fn: int) -> float | None:
    """F1 of the counts; ``None`` when the label is neither true nor stated anywhere (0/0)."""
    return None if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def judge_reports(
    texts: Sequence[str],
    truth: pd.DataFrame,
    *,
    reference_ef: float | None = None,
    facts: Sequence[ReportFacts] | None = None,
) -> dict[str, Any]:
    """Score report texts against truth rows in the same order.

    ``truth`` holds ``device_<name>`` and ``finding_<name>`` columns (true/false, NaN:
    unknown) and ``ef``; a label without its column is not scored. Per device and
    finding: true/false positives and negatives, precision, recall, F1 (``None`` when
    the label is neither true nor stated in any row). ``macro_f1`` is the mean F1 over
    the labels that have one (``device_macro_f1`` and ``finding_macro_f1`` per group).
    ``ef_mae`` is over the rows with a true EF whose text states one; with
    ``reference_ef`` (the training studies' mean EF) ``mean_predictor_ef_mae`` is the MAE
    of always answering it, over the same rows.

    Example: a report stating exactly the truth scores F1 1 on every present label and
    EF MAE 0; one that leaves out a device in one of its two studies scores that device
    ``2·1 / (2·1 + 0 + 1) = 0.67``.
    """
    if len(texts) != len(truth):
        raise DataError(f"{len(texts)} reports for {len(truth)} rows of truth")
    facts = [report_facts(t) for t in texts] if facts is None else list(facts)
    out: dict[str, Any] = {"n": len(texts)}
    for group, names, prefix in (("devices", DEVICES, "device_"), ("findings", FINDINGS, "finding_")):
        entries: dict[str, Any] = {}
        for name in names:
            column = prefix + name
            if column not in truth.columns:
                continue
            values = pd.to_numeric(truth[column].astype(object), errors="coerce").to_numpy(float)
            known = ~np.isnan(values)
            true = values[known] > 0.5
            stated = np.array([name in getattr(f, group) for f in facts], dtype=bool)[known]
            tp, fp, fn = int(np.sum(true & stated)), int(np.sum(~true & stated)), int(np.sum(true & ~stated))
            entries[name] = {
                "n": int(known.sum()),
                "n_true": int(true.sum()),
                "n_stated": int(stated.sum()),
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "precision": tp / (tp + fp) if tp + fp else None,
                "recall": tp / (tp + fn) if tp + fn else None,
                "f1": _f1(tp, fp, fn),
            }
        out[group] = entries
    out["device_macro_f1"] = _mean([e["f1"] for e in out["devices"].values()])
    out["finding_macro_f1"] = _mean([e["f1"] for e in out["findings"].values()])
    out["macro_f1"] = _mean([e["f1"] for g in ("devices", "findings") for e in out[g].values()])
    ef_true = (
        pd.to_numeric(truth["ef"], errors="coerce").to_numpy(float)
        if "ef" in truth.columns
        else np.full(len(texts), np.nan)
    )
    ef_stated = np.array([np.nan if f.ef is None else f.ef for f in facts], dtype=float)
    has_truth = ~np.isnan(ef_true)
    both = has_truth & ~np.isnan(ef_stated)
    out["ef_n"] = int(both.sum())
    out["ef_unstated"] = int((has_truth & np.isnan(ef_stated)).sum())
    out["ef_mae"] = float(np.mean(np.abs(ef_stated[both] - ef_true[both]))) if both.any() else None
    if reference_ef is not None and math.isfinite(reference_ef):
        out["mean_predictor_ef"] = float(reference_ef)
        out["mean_predictor_ef_mae"] = (
            float(np.mean(np.abs(reference_ef - ef_true[both]))) if both.any() else None
        )
    return out


def judge_drafts(
    model: Any,
    tokenizer: Any,
    queries: np.ndarray,
    truth: pd.DataFrame,
    index_dir: str | os.PathLike[str],
    reference: pd.DataFrame,
    *,
    expected_model_hash: str | None = None,
    device: Any = None,
    batch_size: int = 256,
    presence_k: int | None = None,
    presence_threshold: float | None = None,
    method: str = "consensus",
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Draft a report per study from a section index and judge it, beside the nearest whole report.

    Args:
        queries: one unit-length video embedding per study ``[N, D]`` (a study's mean clip).
        truth: ``N`` rows indexed by ``study_id``: ``device_*``, ``finding_*``, ``ef``.
        index_dir: a section index (:func:`~echoclip.zeroshot.drafts.build_section_index`),
            built from the reference studies' reports.
        reference: the reference studies (the training split): ``study_id``, ``report``
            and, for the mean predictor, ``ef``; without ``ef`` the mean EF their reports state.

    A study's own report is never its draft's source, nor among the nearest reports that
    decide which sections its draft has, nor its nearest report, should the index or the
    reference hold it. ``presence_k`` and ``presence_threshold`` (default: those of
    :func:`~echoclip.zeroshot.drafts.draft_reports`) decide which sections a draft has,
    ``method`` how each section's text is chosen (``"consensus"`` or ``"nearest"``).

    Returns:
        ``(metrics, per_study)``: ``metrics["draft"]`` and ``metrics["nearest_report"]``
        as :func:`judge_reports` gives them (with what was searched), and one row per
        study with what its draft and its nearest report state next to the truth.
    """
    from echoclip.models.embed import embed_reports
    from echoclip.zeroshot.drafts import (
        PRESENCE_K,
        PRESENCE_THRESHOLD,
        draft_reports,
        read_section_index_info,
    )

    info = read_section_index_info(index_dir)
    presence_k = PRESENCE_K if presence_k is None else int(presence_k)
    presence_threshold = PRESENCE_THRESHOLD if presence_threshold is None else float(presence_threshold)
    study_ids = [str(s) for s in truth.index]
    if len(queries) != len(study_ids):
        raise DataError(f"{len(queries)} video embeddings for {len(study_ids)} studies")
    missing = [c for c in ("study_id", "report") if c not in reference.columns]
    if missing:
        raise DataError(f"the reference reports have no column {missing[0]!r}")
    ref = reference[reference["report"].notna() & (reference["report"].astype(str).str.strip() != "")]
    ref = ref.drop_duplicates(subset="study_id").reset_index(drop=True)
    if ref.empty:
        raise DataError("no reference report to find the nearest one among")
    queries = np.asarray(queries, dtype=np.float32)
    queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)

    drafts = draft_reports(
        model,
        tokenizer,
        queries,
        index_dir,
        # an index built without a model identity cannot be checked, only trusted
        expected_model_hash=expected_model_hash if info.get("model") else None,
        exclude_studies=study_ids,
        presence_k=presence_k,
        presence_threshold=presence_threshold,
        method=method,
    )
    ref_texts = ref["report"].astype(str).tolist()
    ref_emb = embed_reports(model, tokenizer, ref_texts, batch_size, device=device, progress=False)
    sim = queries @ ref_emb.T
    sim[np.asarray(study_ids)[:, None] == ref["study_id"].astype(str).to_numpy()[None, :]] = -np.inf
    if len(sim) and not np.isfinite(sim.max(axis=1)).all():
        raise DataError("a study has no reference report other than its own to compare with")
    nearest = np.argmax(sim, axis=1)

    if "ef" in ref.columns and pd.to_numeric(ref["ef"], errors="coerce").notna().any():
        reference_ef = float(pd.to_numeric(ref["ef"], errors="coerce").mean())
        ef_source = "the reference studies' ef"
    else:
        stated = [e for e in (report_ef(t) for t in ref_texts) if e is not None]
        reference_ef = float(np.mean(stated)) if stated else None
        ef_source = "EF stated by the reference reports"
    draft_facts = [report_facts(d.body) for d in drafts]
    nearest_texts = [ref_texts[i] for i in nearest]
    nearest_facts = [report_facts(t) for t in nearest_texts]
    draft = judge_reports([d.body for d in drafts], truth, reference_ef=reference_ef, facts=draft_facts)
    whole = judge_reports(nearest_texts, truth, reference_ef=reference_ef, facts=nearest_facts)
    sections = [s.name for s in drafts[0].sections] if drafts else []
    draft = {
        "index": str(index_dir),
        "index_split": info.get("split"),
        "sections": sections,
        "sections_not_drafted": [n for n in sections if n not in info["sections"]],
        "presence_k": presence_k,
        "presence_threshold": presence_threshold,
        "method": method,
        # per section, the share of drafts that have it
        "section_rates": {
            n: float(np.mean([bool(d[n].text) for d in drafts])) for n in sections if n in info["sections"]
        },
        "mean_similarity": _mean([s.similarity for d in drafts for s in d.sections]),
        **draft,
    }
    whole = {
        "reference_reports": len(ref),
        "mean_similarity": float(np.mean(sim[np.arange(len(nearest)), nearest])) if len(nearest) else None,
        **whole,
    }
    for entry in (draft, whole):
        if "mean_predictor_ef" in entry:
            entry["mean_predictor_source"] = ef_source

    truth_facts = _truth_facts(truth)
    per_study = pd.DataFrame(
        {
            "study_id": study_ids,
            "ef_true": truth["ef"].to_numpy() if "ef" in truth.columns else np.nan,
            "draft_ef": [f.ef for f in draft_facts],
            "nearest_ef": [f.ef for f in nearest_facts],
            "true_devices": [";".join(sorted(d)) for d, _ in truth_facts],
            "draft_devices": [";".join(sorted(f.devices)) for f in draft_facts],
            "nearest_devices": [";".join(sorted(f.devices)) for f in nearest_facts],
            "true_findings": [";".join(sorted(f)) for _, f in truth_facts],
            "draft_findings": [";".join(sorted(f.findings)) for f in draft_facts],
            "nearest_findings": [";".join(sorted(f.findings)) for f in nearest_facts],
            "nearest_study_id": ref["study_id"].astype(str).to_numpy()[nearest],
            "nearest_similarity": sim[np.arange(len(nearest)), nearest],
            "draft": [d.text for d in drafts],
        }
    )
    return {"draft": draft, "nearest_report": whole}, per_study


def _truth_facts(truth: pd.DataFrame) -> list[tuple[set[str], set[str]]]:
    """Per row, the devices and findings the truth columns mark present."""
    out: list[tuple[set[str], set[str]]] = [(set(), set()) for _ in range(len(truth))]
    for names, prefix, slot in ((DEVICES, "device_", 0), (FINDINGS, "finding_", 1)):
        for name in names:
            if prefix + name not in truth.columns:
                continue
            values = pd.to_numeric(truth[prefix + name].astype(object), errors="coerce").to_numpy(float)
            for i in np.flatnonzero(values > 0.5):
                out[i][slot].add(name)
    return out
