"""Split an echo report into named sections (``lv``, ``rv``, ``atria``, ``valves``, ...).

Retrieval by section (a draft report assembled from the nearest section of many
reports) needs each report cut into the same named parts, whichever lab wrote it:
some reports have headings (``LEFT VENTRICLE:``, ``RV/ATRIA:``, ``IMPRESSION:``),
some are numbered lists, some are prose. Headings decide where they exist; a
sentence under no heading goes where its concept patterns point. What counts as a
heading and which words name a section is data: ``configs/sections/echo.json``,
or a user's JSON of the same shape for another corpus::

    split_sections("LV: Normal size. EF 60%.\\nIMPRESSION: Normal study.")
    # {'lv': 'Normal size. EF 60%.', 'summary': 'Normal study.'}
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from echoclip.errors import ConfigError

__all__ = [
    "SECTION_NAMES",
    "Section",
    "SectionConfig",
    "load_section_config",
    "list_section_configs",
    "split_sentences",
    "split_sections",
]

# the canonical sections of the shipped config, in the order a report presents them
SECTION_NAMES = ("lv", "rv", "atria", "valves", "pericardium", "devices", "comparison", "summary", "other")
FALLBACK = "other"

# a list marker at the start of a line or after a sentence end: "1.", "2)", "-", "•"
_MARKER = re.compile(r"(?:^\s*|(?<=[.:;!?])\s+)(?:\d{1,2}[.)]|[-•*])\s+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=\S)")
# "LEFT VENTRICLE:", "RV/ATRIA:", "Reason for study:" — a few words before a colon
_LABEL = re.compile(r"^\s*([A-Za-z][A-Za-z0-9'/&() -]{0,48}?)\s*:(?:\s+|$)")
_UNKNOWN_HEADING_WORDS = 5


@dataclass(frozen=True)
class Section:
    """One section of a splitter config."""

    name: str
    headings: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    patterns: tuple[re.Pattern[str], ...] = ()
    claims: bool = False  # takes matching sentences from under other sections' headings
    keeps: bool = False  # keeps its sentences from claiming sections (a summary)
    inline: bool = False  # its headings open it even inside a line
    weak: bool = False  # a heading naming it does not decide: patterns do

    def matches(self, sentence: str) -> bool:
        return any(p.search(sentence) for p in self.patterns)


@dataclass(frozen=True)
class SectionConfig:
    """Sections in pattern priority order, and the order a split report lists them."""

    name: str
    sections: tuple[Section, ...]
    order: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {s.name: s for s in self.sections})
        headings: dict[str, list[str]] = {}
        labels: dict[str, str] = {}
        for s in self.sections:
            for h in s.headings:
                headings.setdefault(_norm(h), []).append(s.name)
            for lab in s.labels:
                labels[_norm(lab)] = s.name
        object.__setattr__(self, "_headings", headings)
        object.__setattr__(self, "_labels", labels)

    def section(self, name: str) -> Section:
        return self._by_name[name]  # type: ignore[attr-defined]

    def heading(self, label: str) -> list[str]:
        """The sections a heading opens (several for ``RIGHT VENTRICLE / ATRIA``), or none."""
        return self._headings.get(_norm(label), [])  # type: ignore[attr-defined]

    def label(self, label: str) -> str | None:
        return self._labels.get(_norm(label))  # type: ignore[attr-defined]


def _norm(label: str) -> str:
    """Upper case, single spaces, no spaces around ``/``: ``Right Ventricle / Atria`` = ``RIGHT VENTRICLE/ATRIA``."""
    return re.sub(r"\s*/\s*", "/", " ".join(label.upper().split()))


def _configs_dir() -> Any:
    return importlib.resources.files("echoclip.configs") / "sections"


def list_section_configs() -> list[str]:
    """Names of the section configs shipped with echoclip."""
    return sorted(p.name[: -len(".json")] for p in _configs_dir().iterdir() if p.name.endswith(".json"))


def load_section_config(
    config: str | os.PathLike[str] | Mapping[str, Any] | SectionConfig | None = None,
) -> SectionConfig:
    """A validated :class:`SectionConfig` from a shipped name (default ``"echo"``), a JSON file or a dict."""
    if isinstance(config, SectionConfig):
        return config
    if config is None:
        config = "echo"
    if isinstance(config, Mapping):
        return _parse(config, "<dict>")
    path = Path(os.fspath(config))
    if path.suffix == ".json" or path.exists():
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the section config ({e.strerror or e})") from None
    else:
        resource = _configs_dir() / f"{path.name}.json"
        if not resource.is_file():
            raise ConfigError(f"unknown section config {str(config)!r}; shipped: {list_section_configs()}")
        source, text = f"configs/sections/{path.name}.json", resource.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{source}: not valid JSON ({e})") from None
    return _parse(data, source)


def _parse(data: Mapping[str, Any], source: str) -> SectionConfig:
    items = data.get("sections") if isinstance(data, Mapping) else None
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{source}: 'sections' must be a non-empty list of sections")
    sections = []
    for i, item in enumerate(items):
        where = f"{source}: section {i}"
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) or not item["name"]:
            raise ConfigError(f"{where}: needs a 'name'")
        where = f"{source}: section {item['name']!r}"
        unknown = set(item) - {"name", "headings", "labels", "patterns", "claims", "keeps", "inline", "weak"}
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
        patterns = []
        for p in _strings(item.get("patterns", []), where, "patterns"):
            try:
                patterns.append(re.compile(p, re.I))
            except re.error as e:
                raise ConfigError(f"{where}: pattern {p!r} is not a valid regular expression ({e})") from None
        sections.append(
            Section(
                name=item["name"],
                headings=_strings(item.get("headings", []), where, "headings"),
                labels=_strings(item.get("labels", []), where, "labels"),
                patterns=tuple(patterns),
                claims=bool(item.get("claims", False)),
                keeps=bool(item.get("keeps", False)),
                inline=bool(item.get("inline", False)),
                weak=bool(item.get("weak", False)),
            )
        )
    names = [s.name for s in sections]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: section names repeat: {names}")
    if FALLBACK not in names:
        sections.append(Section(FALLBACK, weak=True))
        names.append(FALLBACK)
    order = tuple(_strings(data.get("order", names), source, "order"))
    missing = sorted(set(names) - set(order))
    extra = sorted(set(order) - set(names))
    if missing or extra:
        raise ConfigError(
            f"{source}: 'order' must list every section once (missing {missing}, unknown {extra})"
        )
    return SectionConfig(str(data.get("name", source)), tuple(sections), order)


def _strings(value: Any, where: str, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key!r} must be a list of strings")
    return tuple(value)


def split_sentences(
    text: str, config: str | os.PathLike[str] | Mapping[str, Any] | SectionConfig | None = None
) -> list[tuple[str, str]]:
    """Every sentence of ``text`` with its section: ``[(section, sentence), ...]`` in text order.

    Headings and list markers are removed; a label stays in its sentence (``EF: 55%.``).
    """
    cfg = load_section_config(config)
    out: list[tuple[str, str]] = []
    scope: list[str] = []  # the sections the last heading opened
    for line in str(text).splitlines():
        pieces = _MARKER.split(line)
        for p, piece in enumerate(pieces):
            for s, sentence in enumerate(_SENTENCE.split(piece.strip())):
                line_start = p == 0 and s == 0  # not a list item, first sentence of its line
                section, sentence, scope = _place(cfg, sentence.strip(), scope, line_start)
                if sentence:
                    out.append((section, sentence))
    return out


def _place(
    cfg: SectionConfig, sentence: str, scope: list[str], line_start: bool
) -> tuple[str, str, list[str]]:
    """The section of one sentence, the sentence without its heading, and the scope after it."""
    own: str | None = None
    first = True
    while True:
        m = _LABEL.match(sentence)
        if not m:
            break
        label, rest = m.group(1), sentence[m.end() :]
        opens = cfg.heading(label)
        if opens and ((line_start and first) or any(cfg.section(n).inline for n in opens)):
            scope, own = opens, None
        elif line_start and first and not opens and not cfg.label(label):
            if len(label.split()) > _UNKNOWN_HEADING_WORDS:
                break
            scope, own = [FALLBACK], None  # an unknown heading: its text is not the last section's
        else:  # a label ("EF: 55%") names its sentence's section and stays part of it
            if not any(cfg.section(n).keeps for n in scope):  # a summary keeps "EF: 30%"
                own = opens[0] if opens else cfg.label(label)
            break
        sentence, first = rest, False
    if not sentence:
        return "", "", scope
    if own is not None:
        return own, sentence, scope
    return _classify(cfg, sentence, scope), sentence, scope


def _classify(cfg: SectionConfig, sentence: str, scope: Sequence[str]) -> str:
    if not any(cfg.section(n).keeps for n in scope):
        for section in cfg.sections:
            if section.claims and section.name not in scope and section.matches(sentence):
                return section.name
    if len(scope) == 1 and not cfg.section(scope[0]).weak:
        return scope[0]
    if scope and not all(cfg.section(n).weak for n in scope):
        candidates = [s for s in cfg.sections if s.name in scope]  # "RV/ATRIA:": rv or atria
        fallback = candidates[0].name
    else:  # no heading, or one that names nothing in particular
        candidates, fallback = list(cfg.sections), FALLBACK
    for section in candidates:
        if section.matches(sentence):
            return section.name
    return fallback


def split_sections(
    text: str, config: str | os.PathLike[str] | Mapping[str, Any] | SectionConfig | None = None
) -> dict[str, str]:
    """The report's sections as ``{name: text}``, in the config's order; absent sections left out."""
    cfg = load_section_config(config)
    parts: dict[str, list[str]] = {}
    for section, sentence in split_sentences(text, cfg):
        parts.setdefault(section, []).append(sentence)
    return {name: " ".join(parts[name]) for name in cfg.order if name in parts}
