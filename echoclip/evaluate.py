"""``evaluate``: every zero-shot task and report retrieval on a labelled data set, in one report.

::

    metrics = echoclip.evaluate.evaluate(model, tokenizer, "sim/manifest.parquet", "runs/eval")

writes into ``out_dir``:

- ``metrics.json``: per target its metrics (regression: MAE, RMSE, R², Pearson, and
  the MAE of the calibration studies' mean label beside it;
  binary: AUC, accuracy, F1, sensitivity, specificity at a threshold, Brier;
  categorical: accuracy, balanced accuracy, macro F1), retrieval in both
  directions (recall@1/5/10, mean and median rank, MRR), and the share of videos the
  model's OOD reference flags as unlike its training data (``null`` without one).
- ``predictions.csv``: one row per study, predictions next to truths.
- with ``drafts`` (a section index): ``metrics.json`` gains ``draft`` and ``nearest_report``,
  the devices, findings and EF that each study's draft report and its single nearest
  training report state, judged against the truth (F1 per label, macro F1, EF MAE beside
  the mean predictor's; see :mod:`echoclip.zeroshot.judge`), and ``drafts.csv`` holds
  them per study.
- plots: ``regression_<target>.png`` (predicted vs true + Bland–Altman), ``roc_<set>.png``
  (one ROC curve per device or finding), ``retrieval_ranks.png``, and
  ``loss_curves.png`` when a training ``metrics.csv`` is given.
- ``summary.md``: the headline figures and the plots, for a person.

Binary thresholds: when a calibration split is available (``val`` of a manifest by
default), a Platt calibration is fitted on it and the threshold is 0.5 on the
calibrated probability; otherwise the threshold maximising Youden's J is chosen on
the evaluated data itself, which is optimistic and marked so in ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from echoclip.atomic import jsonable, write_text
from echoclip.errors import ConfigError, DataError
from echoclip.zeroshot.prompts import BinaryTarget, LabelSpec, PromptSet, load_prompt_set

__all__ = ["DEFAULT_PROMPT_SETS", "evaluate", "retrieval_metrics", "label_values"]

log = logging.getLogger(__name__)

DEFAULT_PROMPT_SETS = ("ejection_fraction", "devices", "findings", "views")
RECALL_KS = (1, 5, 10)
LEVELS = ("clip", "study")


@dataclass
class _Part:
    """Embedded videos of one split, with one row of truths per study."""

    emb: np.ndarray  # [videos, D]
    study_ids: list[Any]  # per video
    studies: pd.DataFrame  # index study_id: report, labels
    skipped: int = 0
    ood_features: np.ndarray | None = None  # per video: layer statistics for the OOD score
    study_level: dict[str, Any] | None = None  # at study level: what pooling did (for metrics' data)


def evaluate(
    model: Any,
    tokenizer: Any,
    dataset_or_manifest: Any,
    out_dir: str | os.PathLike[str],
    *,
    prompt_sets: Sequence[str | Mapping[str, Any] | PromptSet] | None = None,
    method: str | Mapping[str, str] | None = None,
    split: str | None = "test",
    calibration_data: Any = None,
    calibration_split: str | None = "val",
    calibration_method: str = "platt",
    metrics_csv: str | os.PathLike[str] | None = None,
    batch_size: int = 16,
    num_workers: int = 0,
    device: Any = None,
    read_options: Mapping[str, Any] | None = None,
    perturbation: Any = None,
    perturbation_seed: int = 0,
    neighbours: Any = None,
    k: int | None = None,
    drafts: str | os.PathLike[str] | None = None,
    drafts_reference: Any = None,
    draft_method: str = "consensus",
    model_hash: str | None = None,
    level: str = "clip",
    max_videos: int | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on a labelled data set and write the report into ``out_dir``.

    Args:
        dataset_or_manifest: a manifest (parquet/CSV), an EchoNet-Dynamic folder, or a
            dataset yielding ``{"video", "study_id", "report", "ef", "labels"}`` dicts.
        prompt_sets: the sets to evaluate. Default: the shipped sets, each target
            evaluated when the data has its label and skipped (and listed) otherwise.
            Sets named here must find every label: a missing one is a :class:`DataError`.
        method: as for :func:`echoclip.zero_shot`; a method applies to the sets that have
            targets of its kind (``"knn"``: the labels of the ``k`` nearest reports of
            ``neighbours``, as for :func:`echoclip.zero_shot`).
        split: the split of a manifest or folder to evaluate (``None``: all rows).
        calibration_data, calibration_split: labelled studies for calibrating binary
            scores; by default the ``calibration_split`` of the same manifest, if it has one.
        metrics_csv: a training run's metrics, for the loss-curve plot.
        read_options: for a manifest or folder, options of ``load_video`` for every file
            (``{"fps": 30}`` for files that record no frame rate).
        perturbation: an acquisition perturbation of the evaluated videos (a
            :class:`~echoclip.data.perturb.Perturbation` or ``"name[:strength]"``), drawn
            with ``perturbation_seed`` (see :mod:`echoclip.robustness`). The calibration
            studies stay clean: a deployed model is calibrated once, then meets worse scans.
        drafts: a section index (``echoclip index --sections``, built on the training
            split): draft a report for every evaluated study and judge what it states
            against the truth, beside the single nearest whole report of ``drafts_reference``.
        drafts_reference: the reference reports (a table or manifest with ``study_id``,
            ``report``, ``ef``); default: the rows of the evaluated manifest in the split the
            section index was built on. A study's own report is never its draft's source
            nor its nearest report.
        draft_method: how a draft's section text is chosen (``"consensus"`` of the nearest
            reports, or the ``"nearest"`` section text; :meth:`~echoclip.zeroshot.drafts.SectionIndex.draft`).
        model_hash: the evaluated model directory's hash; a section index that records
            another model's is refused.
        level: ``"clip"`` scores a study's clips together and retrieves with their mean;
            ``"study"`` pools each study's videos into one embedding with the model's study
            pooling (:func:`echoclip.models.embed.embed_studies`: views from ``view_pred`` or
            ``view``, at most ``max_videos`` videos, default 64, subsampled by a study-id seed)
            and scores and retrieves with that. A study's labels and report are those of its
            first readable video (a manifest repeats them on every row; studies whose rows
            disagree are counted in ``data.label_disagreements``); a study without a report
            text is evaluated but left out of retrieval, as at clip level; a study with no
            readable video is left out and counted in ``data.skipped_studies``.
            ``metrics.json`` then carries ``"level": "study"`` and ``data`` gains
            ``skipped_studies``, ``subsampled_studies``, ``max_videos`` and ``pooling``; at
            clip level it has no ``level`` key, exactly as before.

    Returns:
        The dictionary written to ``metrics.json``.
    """
    from echoclip.zeroshot.predict import encode_prompts, model_logit_scale
    from echoclip.zeroshot.scoring import require_method

    if isinstance(method, str):
        require_method(method)
    if level not in LEVELS:
        raise ConfigError(f"level must be one of {LEVELS}, not {level!r}")
    study_level = {"max_videos": max_videos} if level == "study" else None
    explicit = prompt_sets is not None
    sets = [load_prompt_set(p) for p in (prompt_sets if explicit else DEFAULT_PROMPT_SETS)]
    if isinstance(method, Mapping):
        targets = {name for ps in sets for name in ps.targets}
        unknown = sorted(set(method) - targets)
        if unknown:
            raise ConfigError(f"methods given for {unknown}, which no evaluated prompt set has")
    metrics_csv = _find_metrics_csv(metrics_csv)
    dataset = _dataset(model, dataset_or_manifest, split, required=True, read_options=read_options)
    if perturbation is not None:
        from echoclip.data.perturb import PerturbedDataset

        dataset = PerturbedDataset(dataset, perturbation, seed=perturbation_seed)
    table = getattr(dataset, "table", None)
    if explicit and isinstance(table, pd.DataFrame):  # fail before embedding a single video
        _check_labels(sets, table.columns)
    reference = None
    if drafts is not None:
        from echoclip.zeroshot.drafts import METHODS

        if draft_method not in METHODS:
            raise ConfigError(f"draft method must be one of {METHODS}, not {draft_method!r}")
        reference = _drafts_reference(dataset_or_manifest, drafts, drafts_reference, table)
    calibration_dataset = None
    if calibration_data is not None or (_is_manifest_like(dataset_or_manifest) and calibration_split):
        source = calibration_data if calibration_data is not None else dataset_or_manifest
        calibration_dataset = _dataset(
            model, source, calibration_split, required=calibration_data is not None, read_options=read_options
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    part = _embed_part(model, dataset, batch_size, num_workers, device, study_level)
    if explicit:
        _check_labels(sets, part.studies.columns)
    calibration_part = None
    if calibration_dataset is not None:
        calibration_part = _embed_part(
            model, calibration_dataset, batch_size, num_workers, device, study_level
        )

    logit_scale = model_logit_scale(model)
    metrics: dict[str, Any] = {
        "data": {
            "source": _describe(dataset_or_manifest),
            "split": split if _is_manifest_like(dataset_or_manifest) else None,
            "videos": len(part.emb),
            "studies": len(part.studies),
            "skipped_videos": part.skipped,
            "calibration_studies": 0 if calibration_part is None else len(calibration_part.studies),
        },
        "model": {"logit_scale": logit_scale},
        "out_of_distribution": _ood_share(model, part.ood_features),
        "zero_shot": {},
        "skipped_targets": {},
        "plots": {},
    }
    if part.study_level is not None:
        metrics = {"level": "study", **metrics}
        metrics["data"].update(part.study_level)
    if perturbation is not None:
        metrics["data"]["perturbation"] = {
            "name": dataset.perturbation.name,
            "strength": dataset.perturbation.strength,
            "seed": dataset.seed,
        }
    predictions = pd.DataFrame(index=pd.Index(part.studies.index, name="study_id"))
    for prompt_set in sets:
        usable, skipped = _usable_targets(prompt_set, part.studies)
        metrics["skipped_targets"].update(skipped)
        if usable:
            prompt_set = PromptSet(prompt_set.name, usable, prompt_set.description, prompt_set.source)
            text_emb = encode_prompts(model, tokenizer, prompt_set.texts(), device=device)
            context = _SetContext(
                prompt_set, _methods_for(prompt_set, method), text_emb, logit_scale, out_dir, neighbours, k
            )
            _evaluate_set(context, part, calibration_part, calibration_method, metrics, predictions)

    _evaluate_retrieval(model, tokenizer, part, device, out_dir, metrics)
    if drafts is not None:
        _evaluate_drafts(
            model, tokenizer, part, drafts, reference, draft_method, model_hash, device, out_dir, metrics
        )
    if metrics_csv is not None:
        from echoclip.plots import plot_loss_curves

        metrics["plots"]["loss_curves"] = plot_loss_curves(metrics_csv, out_dir / "loss_curves.png").name

    write_text(out_dir / "predictions.csv", predictions.reset_index().to_csv(index=False))
    metrics = jsonable(metrics)
    write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    write_text(out_dir / "summary.md", _summary(metrics))
    return metrics


@dataclass
class _SetContext:
    """What scoring one prompt set needs besides the data."""

    prompt_set: PromptSet
    methods: dict[str, str]
    text_emb: Mapping[str, np.ndarray]
    logit_scale: float
    out_dir: Path
    neighbours: Any = None  # reference reports with labels, for the knn method
    k: int | None = None

    def predict(self, part: _Part) -> pd.DataFrame:
        from echoclip.zeroshot.predict import score_embeddings

        return score_embeddings(
            part.emb,
            part.study_ids,
            self.prompt_set,
            self.text_emb,
            methods=self.methods,
            logit_scale=self.logit_scale,
            neighbours=self.neighbours,
            k=self.k,
        ).set_index("study_id")


def _evaluate_set(
    ctx: _SetContext,
    part: _Part,
    calibration_part: _Part | None,
    calibration_method: str,
    metrics: dict[str, Any],
    predictions: pd.DataFrame,
) -> None:
    """Score one prompt set's targets, add their metrics, plots and prediction columns."""
    from echoclip.metrics import categorical_metrics
    from echoclip.plots import plot_roc_curves

    preds = ctx.predict(part)
    binary = [n for n, t in ctx.prompt_set.targets.items() if isinstance(t, BinaryTarget)]
    calibration_preds = ctx.predict(calibration_part) if calibration_part is not None and binary else None
    roc_curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, target in ctx.prompt_set.targets.items():
        method = ctx.methods[name]
        truth = label_values(part.studies, target.label).reindex(preds.index)
        predictions[f"{name}_true"] = truth
        predictions[name] = preds[name]
        entry: dict[str, Any] = {
            "kind": target.kind,
            "method": method,
            "label": target.label.column,
            "prompt_set": ctx.prompt_set.name,
        }
        if target.kind == "regression":
            entry.update(_regression_entry(target, truth, preds[name], ctx.out_dir, metrics["plots"]))
            entry.update(_against_stated(part.studies, target.label.column, truth, preds[name]))
            if calibration_part is not None:
                reference = label_values(calibration_part.studies, target.label)
                entry.update(_against_mean_predictor(truth, preds[name], reference, entry["mae"]))
        elif target.kind == "binary":
            calibration = None
            if calibration_preds is not None and method != "calibrated":
                cal_truth = label_values(calibration_part.studies, target.label).reindex(
                    calibration_preds.index
                )
                calibration = (cal_truth, calibration_preds[name])
            entry.update(_binary_entry(truth, preds[name], method, calibration, calibration_method))
            roc_curves[name] = (truth.to_numpy(float), preds[name].to_numpy(float))
        else:
            entry.update(categorical_metrics(truth.to_numpy(object), preds[name].to_numpy(object)))
            for column in preds.columns:
                if column.startswith(f"{name}_p_"):
                    predictions[column] = preds[column]
        metrics["zero_shot"][name] = entry
    if roc_curves:
        set_name = ctx.prompt_set.name
        path = plot_roc_curves(
            roc_curves, ctx.out_dir / f"roc_{set_name}.png", title=f"zero-shot {set_name}: ROC curves"
        )
        metrics["plots"][f"roc_{set_name}"] = path.name


def _evaluate_retrieval(
    model: Any, tokenizer: Any, part: _Part, device: Any, out_dir: Path, metrics: dict[str, Any]
) -> None:
    """Study (mean clip) embeddings against their own reports' embeddings, both ways."""
    from echoclip.plots import plot_rank_histogram
    from echoclip.zeroshot.predict import encode_prompts

    reports = part.studies.get("report")
    known = (
        None if reports is None else (reports.notna() & (reports.astype(str).str.strip() != "")).to_numpy()
    )
    if known is None or known.sum() < 2:
        metrics["skipped_targets"]["retrieval"] = "the data set has fewer than two report texts"
        return
    study_emb = _study_embeddings(part).to_numpy()[known]
    texts = reports[known].astype(str).tolist()
    report_emb = encode_prompts(model, tokenizer, texts, device=device, cache=False)
    sim = study_emb @ np.stack([report_emb[t] for t in texts]).T
    metrics["retrieval"], ranks = retrieval_metrics(sim)
    path = plot_rank_histogram(ranks, out_dir / "retrieval_ranks.png", n_candidates=len(texts))
    metrics["plots"]["retrieval_ranks"] = path.name


def _drafts_reference(data: Any, index_dir: Any, reference: Any, table: Any) -> pd.DataFrame:
    """The reference reports for judging drafts, and a check that the data has truths to judge."""
    from echoclip.zeroshot.drafts import read_section_index_info
    from echoclip.zeroshot.judge import TRUTH_COLUMNS

    info = read_section_index_info(index_dir)
    if isinstance(table, pd.DataFrame) and not set(TRUTH_COLUMNS) & {str(c) for c in table.columns}:
        raise DataError(
            f"{_describe(data)}: no ef, device_* or finding_* column to judge draft reports against"
        )
    if isinstance(reference, pd.DataFrame):
        return reference
    source = reference if reference is not None else data
    if not _is_manifest_like(source):
        raise ConfigError(
            "judging drafts beside the nearest whole report needs the reference reports: pass "
            "drafts_reference (a table or manifest of the studies the section index was built on)"
        )
    from echoclip.data.datasets import open_dataset

    found = getattr(open_dataset(source, info.get("split")), "table", None)
    if not isinstance(found, pd.DataFrame) or "report" not in found.columns:
        raise DataError(f"{_describe(source)}: no report texts to take the nearest whole report from")
    return found


def _evaluate_drafts(
    model: Any,
    tokenizer: Any,
    part: _Part,
    index_dir: Any,
    reference: pd.DataFrame,
    method: str,
    model_hash: str | None,
    device: Any,
    out_dir: Path,
    metrics: dict[str, Any],
) -> None:
    """Draft a report per study and judge it beside the nearest whole report; write drafts.csv."""
    from echoclip.zeroshot.judge import judge_drafts

    judged, per_study = judge_drafts(
        model,
        tokenizer,
        _study_embeddings(part).to_numpy(np.float32),
        part.studies,
        index_dir,
        reference,
        expected_model_hash=model_hash,
        device=device,
        method=method,
    )
    metrics.update(judged)
    write_text(out_dir / "drafts.csv", per_study.to_csv(index=False))


def label_values(studies: pd.DataFrame, label: LabelSpec) -> pd.Series:
    """The truth of a target per study: the column, or ``column < below`` (NaN kept) for derived labels."""
    values = studies[label.column]
    if label.below is None:
        if values.dtype == bool:
            return values.astype(float)
        return values
    numbers = pd.to_numeric(values, errors="coerce")
    return (numbers < label.below).astype(float).where(numbers.notna())


def retrieval_metrics(similarity: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """Video→report and report→video metrics of a square similarity matrix (true pairs on the diagonal).

    Returns the metrics (recall@k, mean and median rank, MRR per direction, EchoCLIP's
    mean cross-modal retrieval rank ``mcmrr`` and the median of the same ranks,
    ``median_rank``, both directions together) and the video→report ranks (1 = first).
    """
    from echoclip.retrieval import metrics as rm

    sim = np.asarray(similarity, dtype=np.float32)
    out: dict[str, Any] = {}
    both = []
    for direction, matrix in (("video_to_report", sim), ("report_to_video", sim.T)):
        ranks = rm.ranks_of_true_pairs(matrix)
        both.append(ranks)
        entry: dict[str, float] = {f"recall@{k}": rm.recall_at_k(ranks, k) for k in RECALL_KS}
        entry.update(
            mean_rank=rm.mean_rank(ranks),
            median_rank=rm.median_rank(ranks),
            mrr=rm.mrr(ranks),
            n=len(ranks),
        )
        out[direction] = entry
    out["mcmrr"] = rm.mcmrr(sim)
    out["median_rank"] = rm.median_rank(np.concatenate(both))
    return out, both[0]


def _is_manifest_like(data: Any) -> bool:
    return isinstance(data, (str, os.PathLike))


def _describe(data: Any) -> str:
    return os.fspath(data) if _is_manifest_like(data) else type(data).__name__


def _dataset(
    model: Any, data: Any, split: str | None, *, required: bool, read_options: Mapping[str, Any] | None = None
) -> Any:
    """``data`` itself, or the dataset of one split of a manifest or folder.

    With ``required=False`` a split the data does not have gives ``None``.
    """
    if _is_manifest_like(data):
        from echoclip.data.datasets import open_dataset
        from echoclip.data.transforms import VideoTransform

        try:
            data = open_dataset(
                data, split, VideoTransform(model.preprocess_config), read_options=dict(read_options or {})
            )
        except DataError:
            if required:
                raise
            return None
    if len(data) == 0:
        if required:
            raise DataError(f"{_describe(data)}: no videos to evaluate")
        return None
    return data


def _embed_part(
    model: Any,
    dataset: Any,
    batch_size: int,
    num_workers: int,
    device: Any,
    study_level: Mapping[str, Any] | None = None,
) -> _Part:
    """Embed the videos of ``dataset`` and gather one row of truths per study.

    With ``study_level`` (``{"max_videos"}``), one embedding per study instead of one per video.
    """
    from echoclip.models.embed import encode_videos

    if study_level is not None:
        return _embed_studies_part(model, dataset, batch_size, num_workers, device, study_level["max_videos"])

    out = encode_videos(
        model,
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        on_error="drop",
        progress=False,
    )
    if len(out.features) == 0:
        raise DataError(f"{_describe(dataset)}: no video could be read; nothing to evaluate")
    emb, meta = out.features, out.meta
    study_ids = [m.get("study_id", m.get("index", int(p))) for p, m in zip(out.positions, meta, strict=True)]
    studies = _studies_from_items(meta, study_ids, getattr(dataset, "table", None))
    skipped = getattr(dataset, "skipped", None)
    return _Part(
        emb=emb,
        study_ids=study_ids,
        studies=studies,
        skipped=len(skipped) if skipped else 0,
        ood_features=out.ood_features,
    )


def _embed_studies_part(
    model: Any, dataset: Any, batch_size: int, num_workers: int, device: Any, max_videos: int | None
) -> _Part:
    """One pooled embedding per study (:func:`~echoclip.models.embed.embed_studies`) and its truths."""
    from echoclip.models.embed import DEFAULT_MAX_VIDEOS, embed_studies

    max_videos = DEFAULT_MAX_VIDEOS if max_videos is None else int(max_videos)
    studies = embed_studies(
        model,
        dataset,
        max_videos=max_videos,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        progress=False,
    )
    if not len(studies):
        raise DataError(f"{_describe(dataset)}: no video could be read; nothing to evaluate")
    table = getattr(dataset, "table", None)
    truths = _studies_from_items(studies.meta, studies.study_ids, table)
    skipped = getattr(dataset, "skipped", None)
    config = getattr(model, "config", None)
    return _Part(
        emb=studies.features,
        study_ids=list(studies.study_ids),
        studies=truths,
        skipped=len(skipped) if skipped else 0,
        ood_features=studies.video_ood_features,
        study_level={
            "videos": int(sum(len(r) for r in studies.rows)),  # the videos pooled
            "skipped_studies": len(studies.skipped),
            "subsampled_studies": len(studies.subsampled),
            "max_videos": max_videos,
            "pooling": getattr(config, "study_pooling", None) or "mean",
            "label_disagreements": _label_disagreements(table),
        },
    )


def _label_disagreements(table: Any) -> dict[str, int]:
    """Per label or report column, the studies whose rows do not all agree (the first row is used)."""
    if not isinstance(table, pd.DataFrame) or "study_id" not in table.columns:
        return {}
    columns = [
        c
        for c in table.columns
        if str(c) in ("report", "ef") or str(c).startswith(("device_", "finding_", "reported_"))
    ]
    if not columns:
        return {}
    counts = (table.groupby("study_id", sort=False)[columns].nunique() > 1).sum()
    out = {str(c): int(n) for c, n in counts.items() if n}
    if out:
        log.warning("studies whose videos disagree on a label (the first video's is used): %s", out)
    return out


def _studies_from_items(meta: list[dict[str, Any]], study_ids: list[Any], table: Any = None) -> pd.DataFrame:
    """One row per study: report, ef, view, every entry of ``labels``, and the dataset's table columns.

    A dataset with a ``table`` (one row per video, as the manifest datasets have) adds
    the columns its items leave out, such as ``view``.
    """
    rows: dict[Any, dict[str, Any]] = {}
    for sid, item in zip(study_ids, meta, strict=True):
        if sid in rows:
            continue
        row: dict[str, Any] = {}
        for key in ("report", "ef", "view", "patient_id", "split"):
            if key in item and item[key] is not None:
                row[key] = _scalar(item[key])
        for key, value in (item.get("labels") or {}).items():
            row[key] = _scalar(value)
        if isinstance(table, pd.DataFrame) and "index" in item:
            for key, value in table.iloc[int(item["index"])].items():
                row.setdefault(str(key), value)
        rows[sid] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("study_id")


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", 0) == 0 else value


def _check_labels(sets: Sequence[PromptSet], columns: Any) -> None:
    """Every target of the requested sets names a label column the data has; else one DataError."""
    columns = {str(c) for c in columns}
    for prompt_set in sets:
        for name, target in prompt_set.targets.items():
            if target.label is None:
                raise DataError(
                    f"prompt set {prompt_set.name!r}, target {name!r} has no 'label': evaluation needs the "
                    "data-set column holding its truth"
                )
            if target.label.column not in columns:
                raise DataError(
                    f"prompt set {prompt_set.name!r}, target {name!r} needs the label column "
                    f"{target.label.column!r}, which the data set lacks (it has: {sorted(columns)})"
                )


def _usable_targets(prompt_set: PromptSet, studies: pd.DataFrame) -> tuple[dict[str, Any], dict[str, str]]:
    usable, skipped = {}, {}
    for name, target in prompt_set.targets.items():
        if target.label is None:
            skipped[name] = "the target has no label column"
        elif target.label.column not in studies.columns:
            skipped[name] = f"the data set has no column {target.label.column!r}"
        elif label_values(studies, target.label).notna().sum() == 0:
            skipped[name] = f"column {target.label.column!r} has no values in this split"
        else:
            usable[name] = target
    return usable, skipped


def _methods_for(prompt_set: PromptSet, method: str | Mapping[str, str] | None) -> dict[str, str]:
    from echoclip.zeroshot.predict import resolve_methods
    from echoclip.zeroshot.scoring import kinds_of_method

    if isinstance(method, str):
        kinds = set(kinds_of_method(method))
        if not any(t.kind in kinds for t in prompt_set.targets.values()):
            method = None
    elif isinstance(method, Mapping):
        method = {k: v for k, v in method.items() if k in prompt_set.targets}
    return resolve_methods(prompt_set, method)


def _regression_entry(target: Any, truth: pd.Series, pred: pd.Series, out_dir: Path, plots: dict) -> dict:
    from echoclip.metrics import regression_metrics
    from echoclip.plots import plot_regression

    t, p = truth.to_numpy(float), pred.to_numpy(float)
    entry: dict[str, Any] = {"unit": target.unit, **regression_metrics(t, p)}
    label = "LV ejection fraction" if target.name == "ejection_fraction" else target.name.replace("_", " ")
    path = plot_regression(t, p, out_dir / f"regression_{target.name}.png", name=label, unit=target.unit)
    plots[f"regression_{target.name}"] = path.name
    return entry


def _against_mean_predictor(truth: pd.Series, pred: pd.Series, reference: pd.Series, mae: float) -> dict:
    """The MAE of always answering the calibration studies' mean label, and the model's share of it.

    A regression prompt set that ranks values in the wrong order still lands near the
    middle of the range; ``mae_ratio`` below 1 says that it reads more than the label's
    typical value (the demo's ``zeroshot.ef.mae_mean_baseline``, for any target).
    """
    typical = float(pd.to_numeric(reference, errors="coerce").mean())
    t, p = truth.to_numpy(float), pred.to_numpy(float)
    keep = np.isfinite(t) & np.isfinite(p)
    if not np.isfinite(typical) or not keep.any():
        return {}
    # on the studies the model's ``mae`` was measured on: those with a truth and a prediction
    baseline = float(np.abs(t[keep] - typical).mean())
    return {
        "mean_predictor": {
            "value": typical,
            "mae": baseline,
            "mae_ratio": mae / baseline if baseline > 0 else float("nan"),
        }
    }


def _against_stated(studies: pd.DataFrame, column: str, truth: pd.Series, pred: pd.Series) -> dict:
    """The error against what the reports state (``reported_<column>``) beside the truth's.

    A reader's stated EF carries observer error; ``observer_mae`` (stated against true)
    is the floor a model trained on stated values is judged against.
    """
    stated_column = f"reported_{column}"
    if stated_column not in studies.columns:
        return {}
    stated = pd.to_numeric(studies[stated_column], errors="coerce").reindex(pred.index)
    rows = stated.notna() & pred.notna() & truth.notna()
    if not rows.any():
        return {}
    p, s, t = pred[rows].to_numpy(float), stated[rows].to_numpy(float), truth[rows].to_numpy(float)
    return {
        "stated": {
            "n": int(rows.sum()),
            "mae": float(np.mean(np.abs(p - s))),
            "observer_mae": float(np.mean(np.abs(s - t))),
            "mae_true_same_rows": float(np.mean(np.abs(p - t))),
        }
    }


def _binary_entry(
    truth: pd.Series,
    score: pd.Series,
    method: str,
    calibration: tuple[pd.Series, pd.Series] | None,
    calibration_method: str,
) -> dict[str, Any]:
    from echoclip.metrics import binary_metrics, brier_score, minmax_scale, youden_threshold
    from echoclip.zeroshot.calibration import fit_calibration

    t, s = truth.to_numpy(float), score.to_numpy(float)
    if calibration is not None and method != "calibrated":
        cal_truth, cal_score = calibration[0].to_numpy(float), calibration[1].to_numpy(float)
        positives = np.nansum(cal_truth)
        if 0 < positives < np.isfinite(cal_truth).sum():
            fitted = fit_calibration(cal_score, cal_truth, calibration_method, score=method)
            prob = fitted(s)
            entry = binary_metrics(t, prob, threshold=0.5)
            entry["auc"] = binary_metrics(t, s)["auc"]  # calibration can tie scores; rank on the raw ones
            entry.update(
                threshold_source=f"0.5 on probabilities calibrated ({calibration_method}) on the calibration studies",
                calibration_studies=fitted.n,
                calibration_positive=fitted.n_positive,
                brier_minmax=brier_score(t, minmax_scale(s)),
            )
            return entry
    if method == "calibrated":
        entry = binary_metrics(t, s, threshold=0.5)
        entry["threshold_source"] = "0.5 on probabilities from the prompt set's own calibration"
        entry["brier_minmax"] = None
        return entry
    threshold = youden_threshold(t, s)
    entry = binary_metrics(t, s, threshold=threshold if math.isfinite(threshold) else 0.5)
    entry.pop("brier", None)  # raw similarities are not probabilities
    entry["threshold_source"] = "Youden's J on the evaluated data (optimistic: no calibration split)"
    entry["brier_minmax"] = brier_score(t, minmax_scale(s))
    return entry


def _study_embeddings(part: _Part) -> pd.DataFrame:
    """Mean clip embedding per study, re-normalised, in the order of ``part.studies``."""
    df = pd.DataFrame(part.emb, index=pd.Index(part.study_ids, name="study_id"))
    mean = df.groupby(level=0, sort=False).mean()
    norms = np.linalg.norm(mean.to_numpy(), axis=1, keepdims=True)
    return pd.DataFrame(mean.to_numpy() / np.maximum(norms, 1e-12), index=mean.index).reindex(
        part.studies.index
    )


def _ood_share(model: Any, features: np.ndarray | None) -> dict[str, Any] | None:
    """How many evaluated videos the model's OOD reference flags; ``None`` for a model without one."""
    from echoclip.models.ood import score_ood

    scores, flags = score_ood(model, features, rows=0)
    if flags is None:
        return None
    return {
        "videos": len(flags),
        "flagged": int(flags.sum()),
        "share": float(flags.mean()),
        "median_score": float(np.nanmedian(scores)),
        "expected_share": model.ood_reference.quantile,
        "threshold": model.ood_reference.threshold,
    }


def _find_metrics_csv(path: str | os.PathLike[str] | None) -> Path | None:
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: training metrics file not found")
    return path


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _judged_summary(draft: Mapping[str, Any], nearest: Mapping[str, Any]) -> list[str]:
    """Draft reports and the nearest whole report, judged: the headline table and F1 per label."""
    lines = [
        "## Draft reports judged against the truth",
        "",
        f"Drafts from the section index `{draft['index']}` (split `{draft['index_split']}`); the nearest "
        f"whole report among {nearest['reference_reports']} reference reports. What each states is read "
        "with the report-labelling patterns.",
        "",
        "| report | n | macro F1 | device macro F1 | finding macro F1 | EF MAE | EF stated |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in (("draft (by section)", draft), ("nearest whole report", nearest)):
        lines.append(
            f"| {name} | {e['n']} | {_fmt(e['macro_f1'])} | {_fmt(e['device_macro_f1'])} "
            f"| {_fmt(e['finding_macro_f1'])} | {_fmt(e['ef_mae'], 2)} | {e['ef_n']} of {e['ef_n'] + e['ef_unstated']} |"
        )
    if draft.get("mean_predictor_ef_mae") is not None:
        lines.append(
            f"| mean predictor (EF {_fmt(draft['mean_predictor_ef'], 1)}) | {draft['ef_n']} | – | – | – "
            f"| {_fmt(draft['mean_predictor_ef_mae'], 2)} | – |"
        )
    lines += ["", "| label | true (of n) | draft F1 | nearest report F1 |", "|---|---|---|---|"]
    for group in ("devices", "findings"):
        for label, e in draft[group].items():
            other = nearest[group].get(label, {})
            lines.append(
                f"| {label} | {e['n_true']} of {e['n']} | {_fmt(e['f1'])} | {_fmt(other.get('f1'))} |"
            )
    lines.append("")
    rates = draft.get("section_rates") or {}
    if rates:
        lines += [
            f"A section is drafted when at least {draft['presence_threshold']:g} of the study's "
            f"{draft['presence_k']} nearest training reports (weighted by similarity) have it; "
            "share of drafts with each section: "
            + ", ".join(f"{name} {rate:.2f}" for name, rate in rates.items())
            + ".",
            "",
        ]
    if draft.get("sections_not_drafted"):
        lines += [f"Sections the index has no text for: {', '.join(draft['sections_not_drafted'])}.", ""]
    return lines


def _summary(metrics: Mapping[str, Any]) -> str:
    """A short Markdown report: data, tables of metrics per kind, retrieval, plots, what was skipped."""
    data = metrics["data"]
    lines = [
        "# echoclip evaluation",
        "",
        f"Data: `{data['source']}`"
        + (f", split `{data['split']}`" if data["split"] else "")
        + f": {data['studies']} studies, {data['videos']} videos"
        + (f", {data['skipped_videos']} unreadable videos skipped" if data["skipped_videos"] else "")
        + ".",
        "",
    ]
    if metrics.get("level") == "study":
        lines += [
            f"Study level: each study's videos pooled into one embedding ({data['pooling']}, at most "
            f"{data['max_videos']} videos; {data['subsampled_studies']} studies subsampled, "
            f"{data['skipped_studies']} with no readable video left out).",
            "",
        ]
    perturbed = data.get("perturbation")
    if perturbed:
        lines += [
            f"Perturbed: `{perturbed['name']}` at strength {perturbed['strength']:g} (seed {perturbed['seed']}); "
            "calibration studies clean.",
            "",
        ]
    ood = metrics.get("out_of_distribution")
    if ood:
        lines += [
            f"Out of distribution: {ood['flagged']} of {ood['videos']} videos ({100 * ood['share']:.1f} %) score "
            f"below the model's OOD threshold, set so that at most {100 * ood['expected_share']:.1f} % of "
            "held-out training-like videos do.",
            "",
        ]
    entries = metrics["zero_shot"]
    regression = {k: v for k, v in entries.items() if v["kind"] == "regression"}
    binary = {k: v for k, v in entries.items() if v["kind"] == "binary"}
    categorical = {k: v for k, v in entries.items() if v["kind"] == "categorical"}
    if regression:
        lines += [
            "## Zero-shot regression",
            "",
            "| target | method | n | MAE | RMSE | R² | Pearson r | MAE of the calibration studies' mean (ratio) |",
        ]
        lines.append("|---|---|---|---|---|---|---|---|")
        for name, e in regression.items():
            unit = e.get("unit", "")
            mean = e.get("mean_predictor")
            against_mean = f"{_fmt(mean['mae'], 2)} {unit} ({_fmt(mean['mae_ratio'], 2)})" if mean else "–"
            lines.append(
                f"| {name} | {e['method']} | {e['n']} | {_fmt(e.get('mae'), 2)} {unit} | {_fmt(e.get('rmse'), 2)} {unit} "
                f"| {_fmt(e.get('r2'))} | {_fmt(e.get('pearson_r'))} | {against_mean} |"
            )
        lines.append("")
    if binary:
        lines += [
            "## Zero-shot binary targets",
            "",
            "| target | method | n (positive) | AUC | sensitivity | specificity | F1 | Brier |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, e in binary.items():
            lines.append(
                f"| {name} | {e['method']} | {e['n']} ({e['n_positive']}) | {_fmt(e.get('auc'))} "
                f"| {_fmt(e.get('sensitivity'))} | {_fmt(e.get('specificity'))} | {_fmt(e.get('f1'))} "
                f"| {_fmt(e.get('brier'))} |"
            )
        sources = sorted({e["threshold_source"] for e in binary.values()})
        lines += ["", "Thresholds: " + "; ".join(sources) + ".", ""]
    if categorical:
        lines += [
            "## Zero-shot categorical targets",
            "",
            "| target | n | accuracy | balanced accuracy | macro F1 |",
        ]
        lines.append("|---|---|---|---|---|")
        for name, e in categorical.items():
            lines.append(
                f"| {name} | {e['n']} | {_fmt(e.get('accuracy'))} | {_fmt(e.get('balanced_accuracy'))} "
                f"| {_fmt(e.get('macro_f1'))} |"
            )
        lines.append("")
    if "retrieval" in metrics:
        lines += ["## Report retrieval", "", "| direction | n | R@1 | R@5 | R@10 | median rank | MRR |"]
        lines.append("|---|---|---|---|---|---|---|")
        for direction, e in metrics["retrieval"].items():
            if not isinstance(e, Mapping):
                continue
            lines.append(
                f"| {direction.replace('_', ' ')} | {e['n']} | {_fmt(e['recall@1'])} | {_fmt(e['recall@5'])} "
                f"| {_fmt(e['recall@10'])} | {_fmt(e['median_rank'], 1)} | {_fmt(e['mrr'])} |"
            )
        lines += [
            "",
            f"Mean cross-modal retrieval rank (both directions): {_fmt(metrics['retrieval']['mcmrr'], 1)}; "
            f"median {_fmt(metrics['retrieval'].get('median_rank'), 1)}.",
            "",
        ]
    if "draft" in metrics and "nearest_report" in metrics:
        lines += _judged_summary(metrics["draft"], metrics["nearest_report"])
    if metrics["plots"]:
        lines += ["## Plots", ""]
        lines += [f"![{name}]({file})" for name, file in metrics["plots"].items()]
        lines.append("")
    if metrics["skipped_targets"]:
        lines += ["## Not evaluated", ""]
        lines += [f"- {name}: {why}" for name, why in metrics["skipped_targets"].items()]
        lines.append("")
    return "\n".join(lines)
