"""``evaluate_robustness``: the headline metrics on clean videos and under each acquisition perturbation.

::

    table = evaluate_robustness(model, tokenizer, "runs/sim", "runs/robust", "shadow,speckle:0.25")

runs :func:`echoclip.evaluate.evaluate` once on the clean data (into ``out_dir/clean``)
and once per perturbation (into ``out_dir/<name>-<strength>``; see
:mod:`echoclip.data.perturb`), then writes ``robustness.csv`` and ``robustness.md``: one
row per run (``clean`` first), a column per headline metric and, beside each, its
relative change against clean, ``(perturbed - clean) / |clean|``. For an error (MAE) a
rise is a loss; for AUC, Pearson r, accuracy and recall a fall is. Calibration studies
stay clean in every run.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from echoclip.atomic import write_text
from echoclip.data.perturb import PERTURBATIONS, Perturbation, parse_perturbations
from echoclip.errors import ConfigError
from echoclip.evaluate import RECALL_KS, evaluate

__all__ = ["CLEAN", "REL_SUFFIX", "evaluate_robustness", "headline_metrics"]

log = logging.getLogger(__name__)

CLEAN = "clean"
REL_SUFFIX = ".rel_change"


def evaluate_robustness(
    model: Any,
    tokenizer: Any,
    data: Any,
    out_dir: str | os.PathLike[str],
    perturbations: str | Sequence[str | Perturbation],
    seed: int = 0,
    **evaluate_kwargs: Any,
) -> pd.DataFrame:
    """Evaluate clean and once per perturbation; write and return the comparison table.

    Args:
        data: what :func:`~echoclip.evaluate.evaluate` takes (a manifest, a data set folder,
            or a clip dataset that reads video files).
        perturbations: ``"shadow:0.5,blur"``, or a list of such items or of
            :class:`~echoclip.data.perturb.Perturbation`.
        seed: the perturbations' seed (with each video's index): the same seed, the same
            perturbed clips.
        evaluate_kwargs: passed to every :func:`~echoclip.evaluate.evaluate` call.

    Returns:
        The table of ``robustness.csv``, indexed by ``perturbation`` (``clean``, ``shadow:0.5``, ...).
    """
    specs = _as_perturbations(perturbations)
    for reserved in ("perturbation", "perturbation_seed"):
        if reserved in evaluate_kwargs:
            raise TypeError(f"evaluate_robustness sets {reserved!r} itself")
    out = Path(out_dir)
    runs: dict[str, dict[str, Any]] = {}
    log.info("robustness: clean")
    runs[CLEAN] = evaluate(model, tokenizer, data, out / CLEAN, **evaluate_kwargs)
    for spec in specs:
        log.info("robustness: %s", spec.label)
        runs[spec.label] = evaluate(
            model,
            tokenizer,
            data,
            out / spec.folder,
            perturbation=spec,
            perturbation_seed=seed,
            **evaluate_kwargs,
        )
    table = robustness_table(runs, specs)
    write_text(out / "robustness.csv", table.reset_index().to_csv(index=False))
    write_text(out / "robustness.md", _markdown(table, specs, runs[CLEAN], seed))
    return table


def headline_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The figures a robustness table compares, flat, from an ``evaluate`` result.

    Per regression target ``<name>.mae`` and ``<name>.pearson_r``; per binary target
    ``<name>.auc``, and ``<set>.mean_auc`` for a prompt set of several (``devices.mean_auc``);
    per categorical target ``<name>.accuracy``; ``retrieval.<direction>.recall@k``.
    Figures an evaluation could not compute are NaN.
    """
    out: dict[str, float] = {}
    set_aucs: dict[str, list[float]] = {}
    for name, entry in metrics.get("zero_shot", {}).items():
        kind = entry.get("kind")
        if kind == "regression":
            out[f"{name}.mae"] = _number(entry.get("mae"))
            out[f"{name}.pearson_r"] = _number(entry.get("pearson_r"))
        elif kind == "binary":
            out[f"{name}.auc"] = _number(entry.get("auc"))
            set_aucs.setdefault(str(entry.get("prompt_set")), []).append(out[f"{name}.auc"])
        elif kind == "categorical":
            out[f"{name}.accuracy"] = _number(entry.get("accuracy"))
    for set_name, aucs in set_aucs.items():
        known = [a for a in aucs if np.isfinite(a)]
        if len(aucs) > 1:
            out[f"{set_name}.mean_auc"] = float(np.mean(known)) if known else float("nan")
    for direction, entry in (metrics.get("retrieval") or {}).items():
        if isinstance(entry, Mapping):
            for k in RECALL_KS:
                out[f"retrieval.{direction}.recall@{k}"] = _number(entry.get(f"recall@{k}"))
    return out


def robustness_table(runs: Mapping[str, Mapping[str, Any]], specs: Sequence[Perturbation]) -> pd.DataFrame:
    """Rows: the runs (``clean`` first); columns: ``name``, ``strength``, then each headline
    metric followed by its relative change against clean (NaN where clean is 0 or unknown)."""
    rows = {label: headline_metrics(metrics) for label, metrics in runs.items()}
    columns = list(dict.fromkeys(c for row in rows.values() for c in row))
    values = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns).astype(float)
    clean = values.loc[CLEAN]
    base = clean.abs().where(clean.abs() > 0)
    relative = (values - clean) / base
    strengths = {spec.label: spec for spec in specs}
    table = pd.DataFrame(
        {
            "name": [strengths[r].name if r in strengths else CLEAN for r in values.index],
            "strength": [strengths[r].strength if r in strengths else 0.0 for r in values.index],
        },
        index=values.index,
    )
    for column in columns:
        table[column] = values[column]
        table[column + REL_SUFFIX] = relative[column]
    table.index.name = "perturbation"
    return table


def _as_perturbations(perturbations: str | Sequence[str | Perturbation]) -> list[Perturbation]:
    """The perturbations of a spec string, or of a list of items and :class:`Perturbation` s."""
    if isinstance(perturbations, str):
        return parse_perturbations(perturbations)
    out: list[Perturbation] = []
    for item in perturbations:
        out += [item] if isinstance(item, Perturbation) else parse_perturbations(item)
    if not out:
        raise ConfigError(f"no perturbation given; known: {PERTURBATIONS.names()}")
    labels = [p.label for p in out]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise ConfigError(f"perturbations {twice} are given twice")
    return out


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _cell(value: float, change: float | None) -> str:
    if not np.isfinite(value):
        return "–"
    text = f"{value:.3f}"
    if change is not None and np.isfinite(change):
        text += f" ({change * 100:+.0f} %)"
    return text


def _markdown(table: pd.DataFrame, specs: Sequence[Perturbation], clean: Mapping[str, Any], seed: int) -> str:
    """The table for a person: values with their relative change, and what each perturbation is."""
    metrics = [c for c in table.columns if c not in ("name", "strength") and not c.endswith(REL_SUFFIX)]
    data = clean["data"]
    buf = io.StringIO()
    buf.write("# echoclip robustness\n\n")
    buf.write(
        f"Data: `{data['source']}`"
        + (f", split `{data['split']}`" if data.get("split") else "")
        + f": {data['studies']} studies, {data['videos']} videos. Perturbation seed {seed}. "
        "Each cell: the metric and, in brackets, its change relative to clean. "
        "An MAE that rises is worse; an AUC, Pearson r, accuracy or recall that falls is worse. "
        "Calibration studies are clean in every run.\n\n"
    )
    buf.write("| perturbation | " + " | ".join(metrics) + " |\n")
    buf.write("|---|" + "---|" * len(metrics) + "\n")
    for label, row in table.iterrows():
        cells = [_cell(row[m], None if label == CLEAN else row[m + REL_SUFFIX]) for m in metrics]
        buf.write(f"| {label} | " + " | ".join(cells) + " |\n")
    buf.write("\n## Perturbations\n\n")
    for name in dict.fromkeys(spec.name for spec in specs):
        doc = (PERTURBATIONS.get(name).__doc__ or "").strip().replace("``", "`")
        buf.write(f"- `{name}`: {' '.join(doc.split())}\n")
    return buf.getvalue()
