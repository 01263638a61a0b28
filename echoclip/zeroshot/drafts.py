"""Draft reports by section retrieval: for each section of a report, the nearest section
text among many reports, looked up by the section's name.

A ranked list of whole reports (``echoclip search``) is not a report. Cutting every
report of a corpus into named sections (:mod:`echoclip.zeroshot.sections`) and
indexing each section name apart lets one video query assemble a draft whose LV
paragraph comes from the report with the nearest LV paragraph, its valves paragraph
from the nearest valves paragraph, and so on.

Which sections a draft has is decided apart from their text. Reports write some
sections only when there is something to say (a devices paragraph when the patient
has a device); every text indexed under ``devices`` names a device, so drafting that
section for every video would state a device in most drafts that should have none.
A section is drafted only when the video's ``presence_k`` nearest whole reports
have it, their share (weighted by similarity) at least ``presence_threshold``; that
share is kept in each drafted section. Its text is, by default, the consensus of those
same reports: of their sections of that name, the one that states the devices and
findings that at least 0.2 of them (by weight) state, the EF nearest theirs, and is
closest to all the others. Neither threshold is a majority: the F1 of a label is highest
at a threshold of about half the F1 that can be reached (Lipton et al., 2014), and a
draft is judged by F1. Which sections a report has is read well (a devices section
follows the devices, whose F1 is about 0.9): 0.4. The findings are read less well
(F1 0.4-0.6): 0.2. A section index is a folder::

    sections.json        format, the sections with their heading and row count, model identity
    lv/, rv/, ...        one retrieval index per section name (metadata: study_id, section, text)
    whole_reports/       the whole reports (metadata: study_id, the ";"-joined sections each has)

::

    build_section_index(model, tokenizer, "sim/manifest.parquet", "runs/sections")
    draft = draft_report(model, tokenizer, "study.avi", "runs/sections")
    print(draft.text)

A section the index holds no text for (no indexed report had a devices paragraph), or
one the nearest whole reports mostly lack, is not an error: the draft carries it with
a message saying so and no text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from echoclip.data.synthetic.anatomy import DEVICES, FINDINGS
from echoclip.errors import ConfigError, DataError
from echoclip.zeroshot.sections import SectionConfig, load_section_config, split_sections

__all__ = [
    "DraftSection",
    "DraftReport",
    "section_table",
    "build_section_index",
    "draft_report",
    "draft_reports",
    "SectionIndex",
]

FORMAT = "echoclip-section-index"
VERSION = 2  # 2: whole-report embeddings, for which sections a draft has
WHOLE = "whole_reports"
# a retrieved comparison would describe another patient's prior study
DRAFT_SKIPS = ("comparison",)
# how many nearest whole reports vote on whether a draft has a section, and the weighted
# share that needs; a consensus text states a device or finding from a share of them of
# FACT_THRESHOLD (chosen on the demo's validation studies, docs/experiments.md)
PRESENCE_K = 10
PRESENCE_THRESHOLD = 0.4
FACT_THRESHOLD = 0.2
# how a drafted section's text is chosen: see SectionIndex.draft
METHODS = ("consensus", "nearest")
# what a consensus text is chosen to state (the labels a draft is judged on)
FACTS: tuple[str, ...] = (*DEVICES, *FINDINGS)


@dataclass
class DraftSection:
    """One section of a draft: the retrieved text, the study it came from, the cosine similarity,
    and ``presence``: the similarity-weighted share of the video's nearest whole reports
    that have this section, which decided whether it is drafted.

    A section not drafted has ``text == ""``, no study or similarity, and a ``message``
    saying why (``presence`` is ``None`` when the index has no text of the section at all).
    """

    name: str
    heading: str
    text: str
    study_id: Any
    similarity: float | None
    message: str | None = None
    presence: float | None = None


@dataclass
class DraftReport:
    """A report assembled section by section, in the index's section order; ``presence_k``:
    how many nearest whole reports decided which sections it has."""

    sections: list[DraftSection] = field(default_factory=list)
    presence_k: int | None = None

    @property
    def text(self) -> str:
        """The draft as a headed report (which :func:`split_sections` splits back into its
        sections); sections without text are left out."""
        return "\n".join(f"{s.heading}: {s.text}" for s in self.sections if s.text)

    @property
    def body(self) -> str:
        """The drafted section texts without their headings, one per line: what the draft states."""
        return "\n".join(s.text for s in self.sections if s.text)

    def __getitem__(self, name: str) -> DraftSection:
        for s in self.sections:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "presence_k": self.presence_k,
            "sections": [asdict(s) for s in self.sections],
        }


def section_table(
    reports: pd.DataFrame, config: str | os.PathLike[str] | Mapping[str, Any] | SectionConfig | None = None
) -> pd.DataFrame:
    """One row per (report, section): ``study_id``, ``section``, ``text`` (and ``patient_id``,
    ``split`` when given), from a table with ``study_id`` and ``report`` columns."""
    cfg = load_section_config(config)
    whole = _with_text(reports)
    return _section_rows(whole, [split_sections(text, cfg) for text in whole["report"]])


def _with_text(reports: pd.DataFrame) -> pd.DataFrame:
    """The rows whose ``report`` is non-blank text."""
    return reports[reports["report"].map(lambda r: isinstance(r, str) and bool(r.strip()))].reset_index(
        drop=True
    )


def _section_rows(reports: pd.DataFrame, parts: Sequence[Mapping[str, str]]) -> pd.DataFrame:
    keep = [c for c in ("study_id", "patient_id", "split") if c in reports.columns]
    rows = []
    for record, split in zip(reports[keep].to_dict("records"), parts, strict=True):
        for name, part in split.items():
            rows.append({**record, "section": name, "text": part})
    return pd.DataFrame(rows, columns=[*keep, "section", "text"])


def build_section_index(
    model: Any,
    tokenizer: Any,
    manifest: str | os.PathLike[str] | pd.DataFrame,
    out: str | os.PathLike[str],
    *,
    config: str | os.PathLike[str] | Mapping[str, Any] | SectionConfig | None = None,
    split: str | None = "train",
    model_identity: dict[str, str] | None = None,
    model_dir: str | os.PathLike[str] | None = None,
    device: Any = None,
    batch_size: int = 256,
    progress: bool = False,
) -> Path:
    """Split every distinct report of ``manifest`` (its ``split`` rows; ``None``: all) into
    sections, embed each section text and write one exact index per section name to ``out``,
    and one of the whole reports (which sections a draft has follows its nearest reports).

    ``model_identity`` (``{"name", "hash"}``) lets a later query refuse another model;
    ``model_dir`` is recorded so that ``echoclip report`` finds the model by itself.
    """
    from echoclip import atomic
    from echoclip.data.datasets import read_table
    from echoclip.models.embed import embed_reports
    from echoclip.retrieval import build_index

    cfg = load_section_config(config)
    if WHOLE in cfg.order:
        raise ConfigError(f"section config {cfg.name!r}: {WHOLE!r} is reserved for the whole reports' index")
    source = "<table>" if isinstance(manifest, pd.DataFrame) else os.fspath(manifest)
    table = manifest if isinstance(manifest, pd.DataFrame) else read_table(Path(manifest))
    missing = [c for c in ("study_id", "report") if c not in table.columns]
    if missing:
        raise DataError(f"{source}: no column {missing[0]!r}; a section index needs study_id and report")
    if split is not None and "split" in table.columns:
        table = table[table["split"].astype(str) == split]
    reports = table.drop_duplicates(subset=["study_id", "report"])
    whole = _with_text(reports)
    parts = [split_sections(text, cfg) for text in whole["report"]]
    sections = _section_rows(whole, parts)
    if sections.empty:
        raise DataError(f"{source}: no report text{f' in split {split!r}' if split else ''} to index")
    emb = embed_reports(
        model, tokenizer, sections["text"].tolist(), batch_size, device=device, progress=progress
    )
    names = [n for n in cfg.order if n in set(sections["section"])]
    # the sections each whole report has, for deciding which sections a draft has
    whole_sections = [";".join(n for n in cfg.order if n in part) for part in parts]
    whole_emb = embed_reports(
        model, tokenizer, whole["report"].tolist(), batch_size, device=device, progress=progress
    )
    info: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "config": cfg.name,
        "split": split,
        "model": model_identity,
        "model_dir": None if model_dir is None else str(Path(model_dir).resolve()),
        "reports": len(reports),
        WHOLE: len(whole),
        "sections": {},
        # sections of the config that no indexed report has: a draft says so instead of failing
        "absent": {n: {"heading": _heading(cfg, n)} for n in cfg.order if n not in set(sections["section"])},
    }
    with atomic.writing_dir(Path(out)) as tmp:
        for name in names:
            rows = np.flatnonzero((sections["section"] == name).to_numpy())
            meta = sections.iloc[rows].reset_index(drop=True)
            meta["study_id"] = meta["study_id"].astype(str)
            index = build_index(emb[rows], factory="Flat", metric="ip", metadata=meta, model=model_identity)
            index.save(tmp / name)
            info["sections"][name] = {"heading": _heading(cfg, name), "rows": len(rows)}
        meta = pd.DataFrame({"study_id": whole["study_id"].astype(str), "sections": whole_sections})
        build_index(whole_emb, factory="Flat", metric="ip", metadata=meta, model=model_identity).save(
            tmp / WHOLE
        )
        (tmp / "sections.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return Path(out)


def _heading(cfg: SectionConfig, name: str) -> str:
    return cfg.section(name).headings[0] if cfg.section(name).headings else name.upper()


def read_section_index_info(index_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``sections.json`` of a section index; a :class:`DataError` naming the folder if there is
    none, or if the index predates the whole-report embeddings a draft needs."""
    path = Path(index_dir)
    file = path / "sections.json"
    if not file.is_file():
        raise DataError(
            f"{path}: not a section index (no sections.json); build one with `echoclip index --sections`"
        )
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise DataError(f"{file}: not an echoclip section index description")
    if info.get("version", 1) < VERSION or WHOLE not in info:
        raise DataError(
            f"{path}: a section index from an older echoclip, without the whole-report embeddings that "
            "decide which sections a draft has; rebuild it with `echoclip index --sections`"
        )
    return info


def draft_report(
    model: Any,
    tokenizer: Any,
    video: Any,
    index_dir: str | os.PathLike[str] | SectionIndex,
    *,
    sections: Sequence[str] | None = None,
    expected_model_hash: str | None = None,
    device: Any = None,
    read_options: Mapping[str, Any] | None = None,
    exclude_study: Any = None,
    presence_k: int = PRESENCE_K,
    presence_threshold: float = PRESENCE_THRESHOLD,
    method: str = "consensus",
    temperature: float | None = None,
) -> DraftReport:
    """A draft report for one video: per section name, the nearest indexed section text.

    ``video`` is a file path, a :class:`~echoclip.data.video.Video`, a clip, or its
    embedding ``[D]``. ``sections`` picks the sections considered (default: every
    indexed one except ``comparison``); of those, a section is drafted when at least
    ``presence_threshold`` of the video's ``presence_k`` nearest whole reports (weighted
    by similarity) have it, and otherwise comes back without text, with a message, as does
    a section of the index's config that no indexed report has (``presence_threshold=0``
    drafts every section the index has). ``method`` chooses each section's text
    (:meth:`SectionIndex.draft`: ``"consensus"`` or ``"nearest"``); the consensus weighs
    the nearest reports at ``temperature``, by default the model's own (``1 /
    logit_scale``; plain similarities for a model without one). ``exclude_study`` is a study whose own report is
    never drafted from nor counted among the nearest (the video's, when the index holds
    its report). ``tokenizer`` is accepted for the uniform signature of the text-side
    functions; a video query does not use it.
    """
    if isinstance(video, np.ndarray) and video.dtype != np.uint8 and video.ndim in (1, 2):
        query = np.asarray(video, dtype=np.float32).reshape(1, -1)
    else:
        query = _embed_videos(model, [video], device, read_options)
    return draft_reports(
        model,
        tokenizer,
        query,
        index_dir,
        sections=sections,
        expected_model_hash=expected_model_hash,
        exclude_studies=None if exclude_study is None else [exclude_study],
        presence_k=presence_k,
        presence_threshold=presence_threshold,
        method=method,
        temperature=temperature,
    )[0]


class SectionIndex:
    """A section index loaded once: its description, one retrieval index per section and
    the whole reports', for drafting many reports (a server, an evaluation) without reading
    the folder again.

    ::

        index = SectionIndex.load("runs/sections", expected_model_hash=identity["hash"])
        drafts = index.draft(study_embeddings)
    """

    def __init__(
        self, path: str | os.PathLike[str], info: dict[str, Any], indexes: dict[str, Any], whole: Any
    ) -> None:
        self.path = Path(path)
        self.info = info
        self.indexes = indexes
        self.whole = whole
        meta = whole.metadata
        if meta is None or not {"study_id", "sections"} <= set(meta.columns):
            raise DataError(f"{self.path / WHOLE}: its metadata has no study_id and sections columns")
        self._whole_ids = meta["study_id"].astype(str).to_numpy()
        has = [set(str(v).split(";")) if isinstance(v, str) and v else set() for v in meta["sections"]]
        self._whole_has = {name: np.array([name in h for h in has], dtype=bool) for name in info["sections"]}
        # a study may have several distinct reports: all of them step aside when it is excluded
        self._reports_per_study = int(pd.Series(self._whole_ids).value_counts().max()) if len(meta) else 0
        self._rows_by_study: dict[str, dict[str, list[int]]] = {}
        self._facts: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, expected_model_hash: str | None = None) -> SectionIndex:
        """Read ``path``; an index that records another model than ``expected_model_hash`` is refused."""
        from echoclip.retrieval import Index

        info = read_section_index_info(path)
        indexes = {
            name: Index.load(Path(path) / name, expected_model_hash=expected_model_hash)
            for name in info["sections"]
        }
        whole = Index.load(Path(path) / WHOLE, expected_model_hash=expected_model_hash)
        return cls(path, info, indexes, whole)

    @property
    def sections(self) -> list[str]:
        """The indexed sections, in the config's order."""
        return list(self.info["sections"])

    @property
    def default_sections(self) -> list[str]:
        """What a draft considers unless asked otherwise: every indexed section but ``comparison``."""
        return [n for n in self.sections if n not in DRAFT_SKIPS]

    def presence(
        self, queries: np.ndarray, *, k: int = PRESENCE_K, exclude_studies: Sequence[Any] | None = None
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Per indexed section, the share of each query's ``k`` nearest whole reports that have
        it, each report weighted by its similarity (clipped at 0; equal weights when all are 0):
        ``({name: float [N]}, reports counted [N])``. ``queries`` are unit-length ``[N, D]``;
        a query whose only reports are its excluded study's gets NaN shares.
        """
        return self._shares(*self.neighbours(queries, k=k, exclude_studies=exclude_studies))

    def _shares(self, rows: np.ndarray, weights: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """:meth:`presence` from the nearest whole reports that :meth:`neighbours` found."""
        total = weights.sum(axis=1)
        safe = np.where(total > 0, total, 1.0)
        shares = {}
        for name in self.sections:
            has = self._whole_has[name][np.maximum(rows, 0)]
            share = (weights * has).sum(axis=1) / safe
            shares[name] = np.where(total > 0, share, np.nan)
        return shares, (rows >= 0).sum(axis=1)

    def neighbours(
        self, queries: np.ndarray, *, k: int = PRESENCE_K, exclude_studies: Sequence[Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each query's ``k`` nearest whole reports, its excluded study's left out: their rows
        ``int [N, depth]`` (-1 where none) and weights ``float [N, depth]`` (the similarity,
        clipped at 0, or equal weights when every kept one is 0; 0 for rows not kept)."""
        if int(k) < 1:
            raise ConfigError(f"presence_k must be at least 1, not {k}")
        n = len(queries)
        excluded = _excluded(exclude_studies, n)
        extra = self._reports_per_study if any(e is not None for e in excluded) else 0
        depth = min(len(self.whole), int(k) + extra)
        if depth == 0 or n == 0:
            return np.full((n, 1), -1, dtype=np.int64), np.zeros((n, 1))
        scores, rows = self.whole.search_arrays(queries, depth)
        found = rows >= 0
        ids = self._whole_ids[np.where(found, rows, 0)]
        own_study = np.array(["" if e is None else e for e in excluded], dtype=object)[:, None]
        own = (ids == own_study) & np.array([e is not None for e in excluded])[:, None]
        valid = found & ~own
        keep = valid & (np.cumsum(valid, axis=1) <= int(k))
        weights = np.where(keep, np.clip(scores.astype(np.float64), 0.0, None), 0.0)
        plain = weights.sum(axis=1) <= 0
        weights[plain] = keep[plain].astype(np.float64)
        return np.where(keep, rows, -1), weights

    def draft(
        self,
        queries: np.ndarray,
        *,
        sections: Sequence[str] | None = None,
        exclude_studies: Sequence[Any] | None = None,
        presence_k: int = PRESENCE_K,
        presence_threshold: float = PRESENCE_THRESHOLD,
        method: str = "consensus",
        temperature: float | None = None,
        fact_threshold: float = FACT_THRESHOLD,
    ) -> list[DraftReport]:
        """One draft per video embedding ``[N, D]``, for the sections that at least
        ``presence_threshold`` of the video's ``presence_k`` nearest whole reports have
        (similarity-weighted).

        ``method`` chooses each drafted section's text:

        - ``"consensus"`` (default): among that section of the nearest whole reports, the
          one that states the devices and findings at least ``fact_threshold`` of them
          state (and no other, as nearly as one does), then the EF nearest their mean, then
          the one closest to all the others (the text embedding's weighted medoid). Each
          report weighs its similarity to the video, as in the presence vote, or with
          ``temperature`` its share of a softmax over the similarities at that temperature
          (the model's own, ``1 / logit_scale``, weighs each as likely as the model finds
          it to be the video's report);
        - ``"nearest"``: the indexed section text nearest to the video itself, over all
          reports. A video meets a section's text less well than a whole report (the model
          was trained on whole reports), and a few generic texts come nearest to many videos.

        ``exclude_studies`` gives per query a study (or ``None``) whose own report is
        skipped in favour of the next nearest, for the text and for the presence vote.
        """
        if not 0.0 <= float(presence_threshold) <= 1.0:
            raise ConfigError(f"presence_threshold must be in [0, 1], not {presence_threshold}")
        if method not in METHODS:
            raise ConfigError(f"draft method must be one of {METHODS}, not {method!r}")
        if not 0.0 < float(fact_threshold) <= 1.0:
            raise ConfigError(f"fact_threshold must be in (0, 1], not {fact_threshold}")
        if temperature is not None and not float(temperature) > 0:
            raise ConfigError(f"the consensus temperature must be positive, not {temperature}")
        indexed = self.sections
        absent = dict(self.info.get("absent") or {})
        wanted = self.default_sections if sections is None else list(sections)
        unknown = [n for n in wanted if n not in indexed and n not in absent]
        if unknown:
            raise DataError(
                f"{self.path}: no section {unknown[0]!r} in this index's config "
                f"(it has: {[*indexed, *(n for n in absent if n not in indexed)]})"
            )
        queries = np.asarray(queries, dtype=np.float32).reshape(len(queries), -1)
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        excluded = _excluded(exclude_studies, len(queries))
        neighbours = self.neighbours(queries, k=presence_k, exclude_studies=excluded)
        shares, counted = self._shares(*neighbours)
        drafts = [DraftReport(presence_k=int(c)) for c in counted]
        for name in wanted:
            if name not in indexed:
                reports = self.info.get("reports")
                of = f" ({reports} reports)" if reports is not None else ""
                message = f"not drafted: no report of the index{of} has a {name!r} section"
                for draft in drafts:
                    draft.sections.append(
                        DraftSection(name, absent[name]["heading"], "", None, None, message)
                    )
                continue
            heading = self.info["sections"][name]["heading"]
            share = shares[name]
            # NaN shares are never chosen; the tolerance keeps 4 of 10 at 0.4 from rounding under it
            chosen = np.flatnonzero(share >= float(presence_threshold) - 1e-9)
            if method == "consensus":
                rows, weights = (a[chosen] for a in neighbours)
                if temperature is not None:
                    weights = _softmax_weights(rows, weights, float(temperature))
                found = self._consensus(name, queries[chosen], rows, weights, float(fact_threshold))
            else:
                found = [None] * len(chosen)
            # the nearest text where there is no consensus (no nearest report has the section)
            missing = [i for i, hit in enumerate(found) if hit is None]
            nearest = self._nearest(name, queries[chosen[missing]], [excluded[chosen[i]] for i in missing])
            for i, hit in zip(missing, nearest, strict=True):
                found[i] = hit
            hits = dict(zip(chosen.tolist(), found, strict=True))
            for q, draft in enumerate(drafts):
                presence = None if np.isnan(share[q]) else round(float(share[q]), 4)
                hit = hits.get(q)
                if presence is None:
                    message = "not drafted: the index holds no report but this study's own"
                elif q not in hits:
                    message = (
                        f"not drafted: {presence:.2f} of the {counted[q]} nearest reports (weighted by "
                        f"similarity) have a {name!r} section, under {float(presence_threshold):g}"
                    )
                elif hit is None:
                    message = f"not drafted: the index's only {name!r} section is this study's own"
                else:
                    draft.sections.append(
                        DraftSection(
                            name=name,
                            heading=heading,
                            text=str(hit["text"]),
                            study_id=hit["study_id"],
                            similarity=float(hit["score"]),
                            presence=presence,
                        )
                    )
                    continue
                draft.sections.append(DraftSection(name, heading, "", None, None, message, presence))
        return drafts

    def _consensus(
        self, name: str, queries: np.ndarray, rows: np.ndarray, weights: np.ndarray, threshold: float
    ) -> list[dict[str, Any] | None]:
        """Per query, the consensus of section ``name`` among its nearest whole reports
        (``rows``, ``weights`` as :meth:`neighbours` gives them): a dict with ``text``,
        ``study_id`` and ``score`` (its similarity to the query), or ``None`` when none of them
        has the section.

        Of those reports' texts of the section, the one chosen states (1) the devices and
        findings that at least ``threshold`` of their weight states and no other, as nearly
        as any does; then (2) the EF nearest their weighted mean EF (when they state one);
        then (3) says it as most of them do (the text embedding's weighted medoid).
        """
        index = self.indexes[name]
        by_study = self._section_rows(name)
        texts = index.metadata["text"].astype(str).to_numpy()
        studies = index.metadata["study_id"].astype(str).to_numpy()
        has, ef = self._section_facts(name)
        out: list[dict[str, Any] | None] = []
        for query, near, weight in zip(queries, rows, weights, strict=True):
            study_weight: dict[str, float] = {}
            for row, w in zip(near, weight, strict=True):
                if row >= 0 and w > 0:  # a study with several reports counts once, with their weights
                    study = self._whole_ids[row]
                    study_weight[study] = study_weight.get(study, 0.0) + float(w)
            candidates, cand_weights = [], []
            for study, w in study_weight.items():
                own = by_study.get(study, ())
                candidates.extend(own)
                cand_weights.extend([w / max(len(own), 1)] * len(own))
            if not candidates:
                out.append(None)
                continue
            cand = np.asarray(candidates)
            w = np.asarray(cand_weights, dtype=np.float64)
            w /= max(float(w.sum()), 1e-12)
            # (1) each fact stated counts its weighted share less the threshold: positive for
            # what enough of them state, negative for the rest
            stated = has[cand].astype(np.float64) @ (w @ has[cand] - threshold)
            # (2) how far the text's EF is from theirs; a text without one is farthest
            ef_off = np.zeros(len(cand))
            said = ~np.isnan(ef[cand])
            if said.any():
                target = float(w[said] @ ef[cand][said] / max(float(w[said].sum()), 1e-12))
                ef_off = np.nan_to_num(np.abs(ef[cand] - target), nan=np.inf)
            # (3) the weighted medoid of the text embeddings
            emb = index.vectors(cand)
            emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            agreement = (emb @ emb.T) @ w.astype(np.float32)
            best = int(np.lexsort((-agreement, ef_off, -np.round(stated, 9)))[0])
            row = int(cand[best])
            out.append({"text": texts[row], "study_id": studies[row], "score": float(emb[best] @ query)})
        return out

    def _section_facts(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """What each indexed text of section ``name`` states (read once, by the patterns that
        judge a draft): the devices and findings ``bool [rows, len(FACTS)]`` and the EF ``[rows]``
        (NaN where none)."""
        from echoclip.zeroshot.judge import report_facts

        if name not in self._facts:
            read = [report_facts(t) for t in self.indexes[name].metadata["text"].astype(str)]
            has = np.array([[n in f.devices or n in f.findings for n in FACTS] for f in read], dtype=bool)
            ef = np.array([np.nan if f.ef is None else f.ef for f in read], dtype=np.float64)
            self._facts[name] = (has.reshape(len(read), len(FACTS)), ef)
        return self._facts[name]

    def _section_rows(self, name: str) -> dict[str, list[int]]:
        """Section ``name``'s index rows by study id (built once per section)."""
        if name not in self._rows_by_study:
            meta = self.indexes[name].metadata
            groups = meta.groupby(meta["study_id"].astype(str), sort=False).indices
            self._rows_by_study[name] = {study: list(map(int, r)) for study, r in groups.items()}
        return self._rows_by_study[name]

    def _nearest(self, name: str, queries: np.ndarray, excluded: list[str | None]) -> list[Any]:
        """Per query, the nearest indexed text of section ``name`` not from its excluded study
        (a row with ``text``, ``study_id``, ``score``), or ``None`` when there is none."""
        if len(queries) == 0:
            return []
        index = self.indexes[name]
        k = min(len(index), 1 + (self._reports_per_study if any(e is not None for e in excluded) else 0))
        hits = index.search(queries, k)
        hits["study_id"] = hits["study_id"].astype(str)
        by_query = {int(q): rows for q, rows in hits.groupby("query", sort=False)}
        out: list[Any] = []
        for q, own in enumerate(excluded):
            rows = by_query.get(q, hits.iloc[:0])
            rows = rows[rows["study_id"] != own] if own is not None else rows
            out.append(None if rows.empty else rows.iloc[0])
        return out


def _softmax_weights(rows: np.ndarray, similarity: np.ndarray, temperature: float) -> np.ndarray:
    """Each kept neighbour's (``rows >= 0``) softmax weight over its query's kept similarities."""
    kept = rows >= 0
    top = np.where(kept, similarity, -np.inf).max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.where(kept, np.exp((np.where(kept, similarity, top) - top) / temperature), 0.0)


def _excluded(exclude_studies: Sequence[Any] | None, n: int) -> list[str | None]:
    """Per query, the study (as text) whose own reports are left out, or ``None``."""
    excluded = [None] * n if exclude_studies is None else list(exclude_studies)
    if len(excluded) != n:
        raise DataError(f"{len(excluded)} studies to exclude for {n} videos")
    return [None if e is None else str(e) for e in excluded]


def draft_reports(
    model: Any,
    tokenizer: Any,
    videos: Any,
    index_dir: str | os.PathLike[str] | SectionIndex,
    *,
    sections: Sequence[str] | None = None,
    expected_model_hash: str | None = None,
    device: Any = None,
    read_options: Mapping[str, Any] | None = None,
    exclude_studies: Sequence[Any] | None = None,
    presence_k: int = PRESENCE_K,
    presence_threshold: float = PRESENCE_THRESHOLD,
    method: str = "consensus",
    temperature: float | None = None,
) -> list[DraftReport]:
    """Draft reports for many videos at once, each section index loaded and searched once.

    ``videos`` is a list of what :func:`draft_report` takes, or their embeddings
    ``float [N, D]``; ``index_dir`` a section index folder or a loaded :class:`SectionIndex`.
    ``exclude_studies`` gives per video a study (or ``None``) whose report is skipped in
    favour of the next nearest. ``presence_k``, ``presence_threshold``, ``method`` and
    ``temperature`` are those of :func:`draft_report`.

    Example::

        drafts = draft_reports(model, tokenizer, study_embeddings, "runs/sections", exclude_studies=ids)
    """
    index = (
        index_dir
        if isinstance(index_dir, SectionIndex)
        else SectionIndex.load(index_dir, expected_model_hash=expected_model_hash)
    )
    if isinstance(videos, np.ndarray) and videos.dtype != np.uint8 and videos.ndim == 2:
        queries = np.asarray(videos, dtype=np.float32)
    else:
        queries = _embed_videos(model, list(videos), device, read_options)
    return index.draft(
        queries,
        sections=sections,
        exclude_studies=exclude_studies,
        presence_k=presence_k,
        presence_threshold=presence_threshold,
        method=method,
        temperature=model_temperature(model) if temperature is None else temperature,
    )


def model_temperature(model: Any) -> float | None:
    """``1 / logit_scale`` of a CLIP model (its softmax temperature,
    :func:`~echoclip.zeroshot.predict.model_logit_scale`), or ``None`` without one."""
    from echoclip.zeroshot.predict import model_logit_scale

    return None if getattr(model, "logit_scale", None) is None else 1.0 / model_logit_scale(model)


def _embed_videos(
    model: Any, videos: list[Any], device: Any, read_options: Mapping[str, Any] | None
) -> np.ndarray:
    from echoclip.models.embed import embed_videos

    return embed_videos(
        model,
        videos,
        batch_size=1,
        device=device,
        on_error="raise",
        progress=False,
        read_options=dict(read_options or {}),
    )
