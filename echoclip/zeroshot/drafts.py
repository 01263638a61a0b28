"""Draft reports by section retrieval: for each section of a report, the nearest section
text among many reports, looked up by the section's name.

A ranked list of whole reports (``echoclip search``) is not a report. Cutting every
report of a corpus into named sections (:mod:`echoclip.zeroshot.sections`) and
indexing each section name apart lets one video query assemble a draft whose LV
paragraph comes from the report with the nearest LV paragraph, its valves paragraph
from the nearest valves paragraph, and so on. A section index is a folder::

    sections.json        format, the sections with their heading and row count, model identity
    lv/, rv/, ...        one retrieval index per section name (metadata: study_id, section, text)

::

    build_section_index(model, tokenizer, "sim/manifest.parquet", "runs/sections")
    draft = draft_report(model, tokenizer, "study.avi", "runs/sections")
    print(draft.text)

A section the index holds no text for (no indexed report had a devices paragraph) is
not an error: the draft carries it with a message saying so and no text.
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

from echoclip.errors import DataError
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
# a retrieved comparison would describe another patient's prior study
DRAFT_SKIPS = ("comparison",)


@dataclass
class DraftSection:
    """One section of a draft: the retrieved text, the study it came from, the cosine similarity.

    A section the index has no text for has ``text == ""``, no study or similarity, and a
    ``message`` saying why.
    """

    name: str
    heading: str
    text: str
    study_id: Any
    similarity: float | None
    message: str | None = None


@dataclass
class DraftReport:
    """A report assembled section by section, in the index's section order."""

    sections: list[DraftSection] = field(default_factory=list)

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
        return {"text": self.text, "sections": [asdict(s) for s in self.sections]}


def section_table(
    reports: pd.DataFrame, config: str | os.PathLike[str] | Mapping[str, Any] | SectionConfig | None = None
) -> pd.DataFrame:
    """One row per (report, section): ``study_id``, ``section``, ``text`` (and ``patient_id``,
    ``split`` when given), from a table with ``study_id`` and ``report`` columns."""
    cfg = load_section_config(config)
    keep = [c for c in ("study_id", "patient_id", "split") if c in reports.columns]
    rows = []
    for record in reports.to_dict("records"):
        text = record.get("report")
        if not isinstance(text, str) or not text.strip():
            continue
        for name, part in split_sections(text, cfg).items():
            rows.append({**{c: record[c] for c in keep}, "section": name, "text": part})
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
    sections, embed each section text and write one exact index per section name to ``out``.

    ``model_identity`` (``{"name", "hash"}``) lets a later query refuse another model;
    ``model_dir`` is recorded so that ``echoclip report`` finds the model by itself.
    """
    from echoclip import atomic
    from echoclip.data.datasets import read_table
    from echoclip.models.embed import embed_reports
    from echoclip.retrieval import build_index

    cfg = load_section_config(config)
    source = "<table>" if isinstance(manifest, pd.DataFrame) else os.fspath(manifest)
    table = manifest if isinstance(manifest, pd.DataFrame) else read_table(Path(manifest))
    missing = [c for c in ("study_id", "report") if c not in table.columns]
    if missing:
        raise DataError(f"{source}: no column {missing[0]!r}; a section index needs study_id and report")
    if split is not None and "split" in table.columns:
        table = table[table["split"].astype(str) == split]
    reports = table.drop_duplicates(subset=["study_id", "report"])
    sections = section_table(reports, cfg)
    if sections.empty:
        raise DataError(f"{source}: no report text{f' in split {split!r}' if split else ''} to index")
    emb = embed_reports(
        model, tokenizer, sections["text"].tolist(), batch_size, device=device, progress=progress
    )
    names = [n for n in cfg.order if n in set(sections["section"])]
    info: dict[str, Any] = {
        "format": FORMAT,
        "config": cfg.name,
        "split": split,
        "model": model_identity,
        "model_dir": None if model_dir is None else str(Path(model_dir).resolve()),
        "reports": len(reports),
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
        (tmp / "sections.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return Path(out)


def _heading(cfg: SectionConfig, name: str) -> str:
    return cfg.section(name).headings[0] if cfg.section(name).headings else name.upper()


def read_section_index_info(index_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``sections.json`` of a section index; a :class:`DataError` naming the folder if there is none."""
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
) -> DraftReport:
    """A draft report for one video: per section name, the nearest indexed section text.

    ``video`` is a file path, a :class:`~echoclip.data.video.Video`, a clip, or its
    embedding ``[D]``. ``sections`` picks the sections (default: every indexed one
    except ``comparison``); a section of the index's config that no indexed report has
    comes back without text, with a message. ``exclude_study`` is a study whose own
    sections are never drafted from (the video's, when the index holds its report).
    ``tokenizer`` is accepted for the uniform signature of the text-side functions; a
    video query does not use it.
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
    )[0]


class SectionIndex:
    """A section index loaded once: its description and one retrieval index per section,
    for drafting many reports (a server, an evaluation) without reading the folder again.

    ::

        index = SectionIndex.load("runs/sections", expected_model_hash=identity["hash"])
        drafts = index.draft(study_embeddings)
    """

    def __init__(self, path: str | os.PathLike[str], info: dict[str, Any], indexes: dict[str, Any]) -> None:
        self.path = Path(path)
        self.info = info
        self.indexes = indexes

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, expected_model_hash: str | None = None) -> SectionIndex:
        """Read ``path``; an index that records another model than ``expected_model_hash`` is refused."""
        from echoclip.retrieval import Index

        info = read_section_index_info(path)
        indexes = {
            name: Index.load(Path(path) / name, expected_model_hash=expected_model_hash)
            for name in info["sections"]
        }
        return cls(path, info, indexes)

    @property
    def sections(self) -> list[str]:
        """The indexed sections, in the config's order."""
        return list(self.info["sections"])

    @property
    def default_sections(self) -> list[str]:
        """What a draft holds unless asked otherwise: every indexed section but ``comparison``."""
        return [n for n in self.sections if n not in DRAFT_SKIPS]

    def draft(
        self,
        queries: np.ndarray,
        *,
        sections: Sequence[str] | None = None,
        exclude_studies: Sequence[Any] | None = None,
    ) -> list[DraftReport]:
        """One draft per video embedding ``[N, D]``: per section, the nearest indexed text.

        ``exclude_studies`` gives per query a study (or ``None``) whose own sections are
        skipped in favour of the next nearest.
        """
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
        excluded = [None] * len(queries) if exclude_studies is None else list(exclude_studies)
        if len(excluded) != len(queries):
            raise DataError(f"{len(excluded)} studies to exclude for {len(queries)} videos")
        excluded = [None if e is None else str(e) for e in excluded]
        drafts = [DraftReport() for _ in range(len(queries))]
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
            index = self.indexes[name]
            heading = self.info["sections"][name]["heading"]
            k = min(len(index), 2 if any(e is not None for e in excluded) else 1)
            hits = index.search(queries, k)
            hits["study_id"] = hits["study_id"].astype(str)
            by_query = {int(q): rows for q, rows in hits.groupby("query", sort=False)}
            for q, draft in enumerate(drafts):
                rows = by_query.get(q, hits.iloc[:0])
                rows = rows[rows["study_id"] != excluded[q]] if excluded[q] is not None else rows
                if rows.empty:  # the only indexed text of this section is the excluded study's
                    message = f"not drafted: the index's only {name!r} section is this study's own"
                    draft.sections.append(DraftSection(name, heading, "", None, None, message))
                    continue
                hit = rows.iloc[0]
                draft.sections.append(
                    DraftSection(
                        name=name,
                        heading=heading,
                        text=str(hit["text"]),
                        study_id=hit["study_id"],
                        similarity=float(hit["score"]),
                    )
                )
        return drafts


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
) -> list[DraftReport]:
    """Draft reports for many videos at once, each section index loaded and searched once.

    ``videos`` is a list of what :func:`draft_report` takes, or their embeddings
    ``float [N, D]``; ``index_dir`` a section index folder or a loaded :class:`SectionIndex`.
    ``exclude_studies`` gives per video a study (or ``None``) whose sections are skipped
    in favour of the next nearest.

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
    return index.draft(queries, sections=sections, exclude_studies=exclude_studies)


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
