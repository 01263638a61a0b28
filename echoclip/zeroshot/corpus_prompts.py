"""Prompts read from a report corpus: the sentences its reports state a finding in, and
deny it in, as the positive and negative prompts of that finding.

A handful of hand-written prompts asks a finding in a few phrasings, and at the scale of
a small model one phrasing can read as something else to the text tower: on the demo's
models a single negative prompt of LV dilation ranged from AUC 0.12 to 0.93. The reports
a model trained on already say each finding in every phrasing the tower learned, graded
as their authors grade it. :func:`prompt_set_from_reports` takes, for each finding of a
base prompt set that :data:`~echoclip.data.synthetic.reports.FINDING_PATTERNS` can read,
the distinct sentences that state it (most frequent first) as its positive prompts and
the sentences about the same structure that deny it as its negative ones. No video and
no label is used: only the report texts and the patterns that label them::

    prompts = prompt_set_from_reports(train_reports, "findings")
    save_prompt_set(prompts, "runs/demo/prompts/findings.json")
    zero_shot(model, tokenizer, videos, prompts)

A finding the corpus never states, or never denies, keeps the base set's prompts. From a
manifest, :func:`manifest_reports` gives each study's report once, of one split, and
:func:`with_corpus_findings` puts such a set in place of ``findings`` in a list of sets.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from echoclip.data.synthetic.reports import FINDING_PATTERNS, FINDING_SUBJECTS
from echoclip.errors import DataError
from echoclip.zeroshot.prompts import BinaryTarget, PromptSet, load_prompt_set
from echoclip.zeroshot.sections import split_sentences

__all__ = [
    "MAX_PROMPTS",
    "manifest_reports",
    "corpus_sentences",
    "finding_sentences",
    "prompt_set_from_reports",
    "with_corpus_findings",
]

# prompts per side of a finding: the most frequent distinct sentences
MAX_PROMPTS = 256


def manifest_reports(
    manifest: str | os.PathLike[str] | Any, split: str | None = "train", column: str = "report"
) -> list[str]:
    """The reports of a manifest's ``split`` rows (``None``: all), each study's once: a
    manifest holds a study's report on every one of its videos. ``manifest`` is a parquet or
    CSV file or a DataFrame. Keep the studies you will score out of the prompts."""
    from echoclip.data.datasets import read_table

    source = "<table>" if not isinstance(manifest, (str, os.PathLike)) else os.fspath(manifest)
    table = read_table(Path(manifest)) if isinstance(manifest, (str, os.PathLike)) else manifest
    if column not in table.columns:
        raise DataError(f"{source}: no column {column!r}; columns: {', '.join(map(str, table.columns))}")
    if split is not None:
        if "split" not in table.columns:
            raise DataError(f"{source}: split {split!r} asked, but the manifest has no split column")
        table = table[table["split"].astype(str) == split]
    if "study_id" in table.columns:
        table = table.drop_duplicates(subset="study_id")
    reports = [r for r in table[column].dropna().astype(str) if r.strip()]
    if not reports:
        where = f" in split {split!r}" if split is not None else ""
        raise DataError(f"{source}: no reports{where}")
    return reports


def corpus_sentences(reports: Iterable[str]) -> Counter[str]:
    """How many times each distinct sentence occurs in the reports (headings removed)."""
    counts: Counter[str] = Counter()
    for report in reports:
        if isinstance(report, str) and report.strip():
            counts.update(sentence for _, sentence in split_sentences(report))
    return counts


def finding_sentences(
    counts: Counter[str], finding: str, max_prompts: int = MAX_PROMPTS
) -> tuple[list[str], list[str]]:
    """The sentences that state ``finding`` and those about its structure that deny it,
    each most frequent first (ties in text order), at most ``max_prompts`` of each."""
    states, denies = FINDING_PATTERNS[finding]
    subject = FINDING_SUBJECTS[finding]
    positive, negative = [], []
    for sentence, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if states.search(sentence) and not denies.search(sentence):
            positive.append(sentence)
        elif subject.search(sentence) and denies.search(sentence):
            negative.append(sentence)
    return positive[:max_prompts], negative[:max_prompts]


def prompt_set_from_reports(
    reports: Iterable[str], base: str | PromptSet = "findings", *, max_prompts: int = MAX_PROMPTS
) -> PromptSet:
    """``base`` with each readable finding asked in the corpus's own sentences.

    The binary targets named after a finding of ``FINDING_PATTERNS`` take the corpus's
    sentences that state it as positive prompts and those that deny it as negative ones
    (scored by ``contrast``); the other targets keep their prompts. The set is read
    without contexts: each prompt is already a sentence of a report. Raises
    :class:`~echoclip.errors.DataError` when the reports hold no sentence at all.
    """
    if max_prompts < 1:
        raise DataError(f"max_prompts must be at least 1, not {max_prompts}")
    counts = corpus_sentences(reports)
    if not counts:
        raise DataError("no report sentence to read prompts from: every report is empty")
    base_set = load_prompt_set(base)
    targets = {}
    read = []
    for name, target in base_set.targets.items():
        target = replace(target, contexts=())
        if isinstance(target, BinaryTarget) and name in FINDING_PATTERNS:
            positive, negative = finding_sentences(counts, name, max_prompts)
            if positive and negative:
                target = replace(target, positive=tuple(positive), negative=tuple(negative))
                read.append(name)
        targets[name] = target
    description = (
        f"{base_set.name}, with {', '.join(read) or 'no finding'} asked in the sentences of "
        f"{sum(counts.values())} report sentences ({len(counts)} distinct)"
    )
    return replace(base_set, targets=targets, contexts=(), description=description, source=None)


def with_corpus_findings(
    prompt_sets: Iterable[str],
    manifest: str | os.PathLike[str] | Any,
    split: str | None,
    path: str | os.PathLike[str],
) -> list[str]:
    """``prompt_sets`` (names or files) with ``"findings"`` replaced by the findings read from
    ``manifest``'s ``split`` reports, written to ``path`` (written again on every call, so
    that it is always the present data's)."""
    from echoclip.zeroshot.prompts import save_prompt_set

    findings = save_prompt_set(prompt_set_from_reports(manifest_reports(manifest, split), "findings"), path)
    return [str(findings) if str(name) == "findings" else str(name) for name in prompt_sets]
