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

__all__ = ["DraftSection", "DraftReport", "section_table", "build_section_index", "draft_report"]

FORMAT = "echoclip-section-index"
# a retrieved comparison would describe another patient's prior study
DRAFT_SKIPS = ("comparison",)


@dataclass
class DraftSection:
    """One section of a draft: the retrieved text, the study it came from, the cosine similarity."""

    name: str
    heading: str
    text: str
    study_id: Any
    similarity: float


@dataclass
class DraftReport:
    """A report assembled section by section, in the index's section order."""

    sections: list[DraftSection] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The draft as a headed report (which :func:`split_sections` splits back into its sections)."""
        return "\n".join(f"{s.heading}: {s.text}" for s in self.sections)

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
        "sections": {},
    }
    with atomic.writing_dir(Path(out)) as tmp:
        for name in names:
            rows = np.flatnonzero((sections["section"] == name).to_numpy())
            meta = sections.iloc[rows].reset_index(drop=True)
            meta["study_id"] = meta["study_id"].astype(str)
            index = build_index(emb[rows], factory="Flat", metric="ip", metadata=meta, model=model_identity)
            index.save(tmp / name)
            heading = cfg.section(name).headings[0] if cfg.section(name).headings else name.upper()
            info["sections"][name] = {"heading": heading, "rows": len(rows)}
        (tmp / "sections.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return Path(out)


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
    index_dir: str | os.PathLike[str],
    *,
    sections: Sequence[str] | None = None,
    expected_model_hash: str | None = None,
    device: Any = None,
    read_options: Mapping[str, Any] | None = None,
) -> DraftReport:
    """A draft report for one video: per section name, the nearest indexed section text.

    ``video`` is a file path, a :class:`~echoclip.data.video.Video`, a clip, or its
    embedding ``[D]``. ``sections`` picks the sections (default: every indexed one
    except ``comparison``). ``tokenizer`` is accepted for the uniform signature of the
    text-side functions; a video query does not use it.
    """
    from echoclip.retrieval import Index

    info = read_section_index_info(index_dir)
    indexed = list(info["sections"])
    wanted = [n for n in indexed if n not in DRAFT_SKIPS] if sections is None else list(sections)
    unknown = [n for n in wanted if n not in indexed]
    if unknown:
        raise DataError(f"{index_dir}: no section {unknown[0]!r} indexed (it has: {indexed})")
    query = _query_embedding(model, video, device, read_options)
    draft = DraftReport()
    for name in wanted:
        index = Index.load(Path(index_dir) / name, expected_model_hash=expected_model_hash)
        hit = index.search(query, 1).iloc[0]
        draft.sections.append(
            DraftSection(
                name=name,
                heading=info["sections"][name]["heading"],
                text=str(hit["text"]),
                study_id=hit["study_id"],
                similarity=float(hit["score"]),
            )
        )
    return draft


def _query_embedding(
    model: Any, video: Any, device: Any, read_options: Mapping[str, Any] | None
) -> np.ndarray:
    if isinstance(video, np.ndarray) and video.dtype != np.uint8 and video.ndim in (1, 2):
        q = np.asarray(video, dtype=np.float32).reshape(1, -1)
        return q / np.maximum(np.linalg.norm(q), 1e-12)
    from echoclip.models.embed import embed_videos

    return embed_videos(
        model,
        [video] if not isinstance(video, list) else video[:1],
        batch_size=1,
        device=device,
        on_error="raise",
        progress=False,
        read_options=dict(read_options or {}),
    )
