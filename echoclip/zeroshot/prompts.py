"""Prompt sets: the questions a zero-shot model is asked, kept as data.

A prompt set is a JSON object (a file in ``configs/prompts/``, a user's file, or a
Python dict of the same shape) with one entry per *target*::

    {
      "name": "devices",
      "description": "Implanted cardiac devices.",
      "targets": {
        "ejection_fraction": {
          "type": "regression",
          "label": "ef",
          "unit": "%",
          "templates": ["LV EJECTION FRACTION IS <#>%."],
          "range": [0, 100], "step": 1,
          "report_range": [10, 85]
        },
        "pacemaker": {
          "type": "binary",
          "label": "device_pacemaker",
          "positive": ["A PACEMAKER LEAD IS SEEN IN THE RIGHT VENTRICLE."],
          "negative": ["NO PACEMAKER OR DEFIBRILLATOR LEAD IS SEEN."],
          "calibration": {"method": "platt", "score": "similarity", "coef": 41.2, "intercept": -13.0}
        },
        "view": {
          "type": "categorical",
          "label": "view",
          "classes": {"A4C": ["APICAL FOUR-CHAMBER VIEW."], "PLAX": ["PARASTERNAL LONG-AXIS VIEW."]}
        }
      }
    }

A set may also give ``contexts``: report texts, each with one ``{}`` where a prompt
goes. Every prompt of every target is then asked inside each context (``{}``
replaced by the prompt) instead of alone. A model trained on whole reports reads a
lone sentence as an odd, short report; inside an ordinary report the sentence is the
only thing that differs between the positive and the negative prompts, so their
contrast measures that sentence (on demo models, contexts raised the mean device AUC of
every model that had learned devices; docs/experiments.md).

Keys of a target:

- ``type``: ``regression``, ``binary`` or ``categorical``.
- ``label`` (optional): the data-set column holding the truth, used by evaluation
  and calibration. Either a column name, or ``{"column": "ef", "below": 50}`` for a
  binary truth derived from a number (positive when the value is below 50).
- regression: ``templates`` (each with the ``<#>`` placeholder for the value),
  ``range`` ``[start, stop]`` (inclusive) and ``step`` of the candidate values,
  ``unit``, and optionally ``report_range`` ``[low, high]``: the values reports
  actually state. Candidates outside it are dropped, since the text encoder never
  saw them in training.
  Optionally ``method``, the scoring method the target gets when none is asked for
  (default ``echoclip_rank``), and ``method_options``, keyword arguments of that
  method (e.g. ``{"top_fraction": 0.3}``), used only when that method scores it.
- binary: ``positive`` prompts, optional ``negative`` prompts, optional
  ``calibration`` (written by :func:`echoclip.zeroshot.calibration.fit_calibration`).
- categorical: ``classes``, a mapping class label -> prompts.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from echoclip import atomic
from echoclip.errors import ConfigError

__all__ = [
    "PLACEHOLDER",
    "CONTEXT_SLOT",
    "in_contexts",
    "LabelSpec",
    "RegressionTarget",
    "BinaryTarget",
    "CategoricalTarget",
    "Target",
    "PromptSet",
    "expand_template",
    "format_value",
    "list_prompt_sets",
    "load_prompt_set",
    "save_prompt_set",
]

PLACEHOLDER = "<#>"

_TARGET_KEYS = {
    "regression": {
        "type",
        "label",
        "unit",
        "templates",
        "range",
        "step",
        "report_range",
        "description",
        "method",
        "method_options",
    },
    "binary": {"type", "label", "positive", "negative", "calibration", "description"},
    "categorical": {"type", "label", "classes", "description"},
}
_SET_KEYS = {"name", "description", "contexts", "targets"}
CONTEXT_SLOT = "{}"


def format_value(value: float) -> str:
    """How a candidate value is written in a prompt: ``40``, not ``40.0``; ``42.5`` stays."""
    value = float(value)
    if value.is_integer():
        return str(int(value))
    return f"{value:.10f}".rstrip("0").rstrip(".")


def expand_template(template: str, values: Iterable[float], decimals: int | None = None) -> list[str]:
    """One prompt per value, with ``<#>`` replaced by the value (with ``decimals`` digits
    after the point when given: ``3.0 CM`` as reports write a measurement).

    >>> expand_template("LV EJECTION FRACTION IS <#>%.", [35, 40])
    ['LV EJECTION FRACTION IS 35%.', 'LV EJECTION FRACTION IS 40%.']
    """
    if PLACEHOLDER not in template:
        raise ConfigError(f"template {template!r} has no {PLACEHOLDER} placeholder for the value")
    write = format_value if decimals is None else (lambda v: f"{float(v):.{decimals}f}")
    return [template.replace(PLACEHOLDER, write(v)) for v in values]


def in_contexts(prompts: Sequence[str], contexts: Sequence[str]) -> list[str]:
    """Each prompt inside each context (``{}`` replaced), context by context; the prompts themselves without contexts.

    >>> in_contexts(["TAVR IN SITU."], ["LVEF 60%. {} NO EFFUSION."])
    ['LVEF 60%. TAVR IN SITU. NO EFFUSION.']
    """
    if not contexts:
        return list(prompts)
    return [context.replace(CONTEXT_SLOT, prompt) for context in contexts for prompt in prompts]


@dataclass(frozen=True)
class LabelSpec:
    """Where the truth of a target lives in a data set.

    ``below`` turns a numeric column into a binary truth: positive when the value is
    below it (``reduced_lv_function`` is ``ef < 50``).
    """

    column: str
    below: float | None = None

    def to_json(self) -> str | dict[str, Any]:
        return self.column if self.below is None else {"column": self.column, "below": self.below}


@dataclass(frozen=True)
class RegressionTarget:
    """A number read from prompts that differ only in the value (e.g. EF 0-100 %)."""

    name: str
    templates: tuple[str, ...]
    start: float
    stop: float
    step: float
    unit: str = ""
    label: LabelSpec | None = None
    report_range: tuple[float, float] | None = None
    description: str = ""
    contexts: tuple[str, ...] = ()
    method: str | None = None
    method_options: tuple[tuple[str, float], ...] = ()  # (keyword, value) pairs: the target stays hashable
    kind: str = field(default="regression", init=False)

    def values(self) -> np.ndarray:
        """The candidate values, ``float64 [V]``: the grid, restricted to ``report_range``."""
        n = int(math.floor((self.stop - self.start) / self.step + 1e-9)) + 1
        grid = self.start + self.step * np.arange(n, dtype=np.float64)
        grid = np.round(grid, 10)  # 0.1 * 3 == 0.30000000000000004 would print badly
        if self.report_range is not None:
            low, high = self.report_range
            grid = grid[(grid >= low - 1e-9) & (grid <= high + 1e-9)]
        return grid

    def prompts(self) -> list[list[str]]:
        """``prompts()[v][p]``: template ``p`` (in each context, if any) written with candidate value ``v``."""
        templates = in_contexts(self.templates, self.contexts)
        # a grid finer than 1 is written with as many decimals as its step has (3.0, 3.1 cm)
        decimals = max(0, -math.floor(math.log10(self.step) + 1e-9)) if self.step < 1 else None
        per_template = [expand_template(t, self.values(), decimals) for t in templates]
        return [list(texts) for texts in zip(*per_template, strict=True)]

    def texts(self) -> list[str]:
        return [text for row in self.prompts() for text in row]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": "regression"}
        if self.description:
            d["description"] = self.description
        if self.label is not None:
            d["label"] = self.label.to_json()
        d.update(
            unit=self.unit, templates=list(self.templates), range=[self.start, self.stop], step=self.step
        )
        if self.report_range is not None:
            d["report_range"] = list(self.report_range)
        if self.method is not None:
            d["method"] = self.method
        if self.method_options:
            d["method_options"] = dict(self.method_options)
        return d


@dataclass(frozen=True)
class BinaryTarget:
    """Presence of something (a device, a finding), asked with positive and negative prompts."""

    name: str
    positive: tuple[str, ...]
    negative: tuple[str, ...] = ()
    label: LabelSpec | None = None
    calibration: Mapping[str, Any] | None = None
    description: str = ""
    contexts: tuple[str, ...] = ()
    kind: str = field(default="binary", init=False)

    def positive_texts(self) -> list[str]:
        """The positive prompts as the model reads them (inside each context, if any)."""
        return in_contexts(self.positive, self.contexts)

    def negative_texts(self) -> list[str]:
        """The negative prompts as the model reads them; empty when there are none."""
        return in_contexts(self.negative, self.contexts)

    def texts(self) -> list[str]:
        return [*self.positive_texts(), *self.negative_texts()]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": "binary"}
        if self.description:
            d["description"] = self.description
        if self.label is not None:
            d["label"] = self.label.to_json()
        d["positive"] = list(self.positive)
        if self.negative:
            d["negative"] = list(self.negative)
        if self.calibration is not None:
            d["calibration"] = dict(self.calibration)
        return d


@dataclass(frozen=True)
class CategoricalTarget:
    """One of several classes (e.g. the view), each described by its own prompts."""

    name: str
    classes: Mapping[str, tuple[str, ...]]
    label: LabelSpec | None = None
    description: str = ""
    contexts: tuple[str, ...] = ()
    kind: str = field(default="categorical", init=False)

    def class_texts(self, label: str) -> list[str]:
        """The prompts of class ``label`` as the model reads them (inside each context, if any)."""
        return in_contexts(self.classes[label], self.contexts)

    def texts(self) -> list[str]:
        return [text for label in self.classes for text in self.class_texts(label)]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": "categorical"}
        if self.description:
            d["description"] = self.description
        if self.label is not None:
            d["label"] = self.label.to_json()
        d["classes"] = {c: list(p) for c, p in self.classes.items()}
        return d


Target = RegressionTarget | BinaryTarget | CategoricalTarget


@dataclass(frozen=True)
class PromptSet:
    """A named, validated collection of targets. Build it with :func:`load_prompt_set`."""

    name: str
    targets: Mapping[str, Target]
    description: str = ""
    source: str | None = None  # where it was read from, for error messages
    contexts: tuple[str, ...] = ()  # every target carries them too

    def texts(self) -> list[str]:
        """Every prompt of every target, in order, duplicates kept."""
        return [text for target in self.targets.values() for text in target.texts()]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.description:
            d["description"] = self.description
        if self.contexts:
            d["contexts"] = list(self.contexts)
        d["targets"] = {name: t.to_dict() for name, t in self.targets.items()}
        return d

    def with_calibration(self, calibrations: Mapping[str, Mapping[str, Any]]) -> PromptSet:
        """A copy whose binary targets carry the given calibrations (``target -> dict``)."""
        targets = dict(self.targets)
        for name, calibration in calibrations.items():
            target = targets.get(name)
            if not isinstance(target, BinaryTarget):
                raise ConfigError(
                    f"prompt set {self.name!r}: {name!r} is not a binary target; cannot calibrate it"
                )
            targets[name] = replace(target, calibration=dict(calibration))
        return replace(self, targets=targets)


def _prompts_dir() -> Any:
    return importlib.resources.files("echoclip.configs") / "prompts"


def list_prompt_sets() -> list[str]:
    """Names of the prompt sets shipped with echoclip."""
    return sorted(p.name[: -len(".json")] for p in _prompts_dir().iterdir() if p.name.endswith(".json"))


def load_prompt_set(prompts: str | os.PathLike[str] | Mapping[str, Any] | PromptSet) -> PromptSet:
    """A validated :class:`PromptSet` from a shipped name, a JSON file, or a dict.

    ``load_prompt_set("devices")`` reads ``configs/prompts/devices.json``; a path
    reads that file; a dict is validated as it is. Errors name the set, the target
    and the problem.
    """
    if isinstance(prompts, PromptSet):
        return prompts
    if isinstance(prompts, Mapping):
        return _parse(prompts, source="<dict>")
    text_name = os.fspath(prompts)
    path = Path(text_name)
    if not path.suffix and os.sep not in text_name and "/" not in text_name:
        resource = _prompts_dir() / f"{text_name}.json"
        if not resource.is_file():
            raise ConfigError(
                f"unknown prompt set {text_name!r}; shipped sets: {list_prompt_sets()} (or pass a JSON file or a dict)"
            )
        return _parse(_read_json(resource.read_text(encoding="utf-8"), text_name), source=text_name)
    if not path.is_file():
        raise ConfigError(f"{path}: prompt set file not found")
    return _parse(_read_json(path.read_text(encoding="utf-8"), str(path)), source=str(path))


def save_prompt_set(prompt_set: PromptSet, path: str | os.PathLike[str]) -> Path:
    """Write ``prompt_set`` (with its calibrations) as JSON, atomically."""
    path = Path(path)
    atomic.write_text(path, json.dumps(prompt_set.to_dict(), indent=2) + "\n")
    return path


def _read_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{source}: not valid JSON ({e.msg} at line {e.lineno})") from None


def _parse(d: Any, source: str) -> PromptSet:
    if not isinstance(d, Mapping):
        raise ConfigError(f"{source}: a prompt set must be a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - _SET_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown keys {unknown}; a prompt set has {sorted(_SET_KEYS)}")
    name = str(d.get("name") or Path(source).stem)
    where = f"prompt set {name!r} ({source})" if source != name else f"prompt set {name!r}"
    raw_targets = d.get("targets")
    if not isinstance(raw_targets, Mapping) or not raw_targets:
        raise ConfigError(f"{where}: 'targets' must be a non-empty object of target name -> target")
    contexts = _contexts(d.get("contexts"), f"{where}: 'contexts'")
    targets = {
        str(t): replace(_parse_target(str(t), spec, f"{where}, target {t!r}"), contexts=contexts)
        for t, spec in raw_targets.items()
    }
    return PromptSet(
        name=name,
        targets=targets,
        description=str(d.get("description", "")),
        source=source,
        contexts=contexts,
    )


def _contexts(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    contexts = _prompt_list(value, where)
    for context in contexts:
        if context.count(CONTEXT_SLOT) != 1:
            raise ConfigError(
                f"{where}: every context needs exactly one {CONTEXT_SLOT} where the prompt goes, got {context!r}"
            )
    return contexts


def _parse_target(name: str, spec: Any, where: str) -> Target:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: must be an object, got {type(spec).__name__}")
    kind = spec.get("type")
    if kind not in _TARGET_KEYS:
        raise ConfigError(f"{where}: 'type' must be one of {sorted(_TARGET_KEYS)}, got {kind!r}")
    unknown = sorted(set(spec) - _TARGET_KEYS[kind])
    if unknown:
        raise ConfigError(
            f"{where}: unknown keys {unknown}; a {kind} target has {sorted(_TARGET_KEYS[kind])}"
        )
    label = _parse_label(spec.get("label"), where)
    description = str(spec.get("description", ""))
    if kind == "regression":
        templates = _prompt_list(spec.get("templates"), f"{where}: 'templates'")
        for template in templates:
            if PLACEHOLDER not in template:
                raise ConfigError(
                    f"{where}: template {template!r} has no {PLACEHOLDER} placeholder for the value"
                )
        start, stop = _pair(spec.get("range"), f"{where}: 'range'")
        step = _number(spec.get("step"), f"{where}: 'step'")
        if not step > 0:
            raise ConfigError(f"{where}: 'step' must be positive, got {step}")
        if stop < start:
            raise ConfigError(f"{where}: 'range' [{start}, {stop}] is empty")
        report_range = None
        if spec.get("report_range") is not None:
            report_range = _pair(spec["report_range"], f"{where}: 'report_range'")
        target = RegressionTarget(
            name=name,
            templates=templates,
            start=start,
            stop=stop,
            step=step,
            unit=str(spec.get("unit", "")),
            label=label,
            report_range=report_range,
            description=description,
            method=_method(spec.get("method"), f"{where}: 'method'"),
            method_options=_method_options(spec.get("method_options"), f"{where}: 'method_options'"),
        )
        if target.method_options and target.method is None:
            raise ConfigError(f"{where}: 'method_options' need the 'method' they are for")
        if len(target.values()) == 0:
            raise ConfigError(
                f"{where}: no candidate value of range {[start, stop]} lies in report_range {report_range}"
            )
        return target
    if kind == "binary":
        positive = _prompt_list(spec.get("positive"), f"{where}: 'positive'")
        negative = (
            () if spec.get("negative") is None else _prompt_list(spec["negative"], f"{where}: 'negative'")
        )
        calibration = spec.get("calibration")
        if calibration is not None:
            _check_calibration(calibration, where)
        return BinaryTarget(
            name=name,
            positive=positive,
            negative=negative,
            label=label,
            calibration=None if calibration is None else dict(calibration),
            description=description,
        )
    classes = spec.get("classes")
    if not isinstance(classes, Mapping) or len(classes) < 2:
        raise ConfigError(f"{where}: 'classes' must map at least two class labels to prompts")
    parsed = {str(c): _prompt_list(p, f"{where}: class {c!r}") for c, p in classes.items()}
    return CategoricalTarget(name=name, classes=parsed, label=label, description=description)


def _check_calibration(value: Any, where: str) -> None:
    from echoclip.zeroshot.calibration import Calibration

    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: 'calibration' must be an object")
    try:
        Calibration.from_dict(value)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _prompt_list(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"{where} must be a list of prompts, got {type(value).__name__}")
    if not value:
        raise ConfigError(f"{where} is an empty prompt list; give at least one prompt")
    prompts = []
    for p in value:
        if not isinstance(p, str) or not p.strip():
            raise ConfigError(f"{where}: every prompt must be a non-empty string, got {p!r}")
        prompts.append(p.strip())
    return tuple(prompts)


def _method(value: Any, where: str) -> str | None:
    if value is None:
        return None
    from echoclip.zeroshot.scoring import get_scorer

    if not isinstance(value, str):
        raise ConfigError(f"{where}: must be a method name, got {value!r}")
    try:
        get_scorer("regression", value)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return str(value)


def _method_options(value: Any, where: str) -> tuple[tuple[str, float], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: must be an object of keyword arguments, got {type(value).__name__}")
    return tuple((str(k), _number(v, f"{where}: {k!r}")) for k, v in value.items())


def _parse_label(value: Any, where: str) -> LabelSpec | None:
    if value is None:
        return None
    if isinstance(value, str) and value:
        return LabelSpec(value)
    if (
        isinstance(value, Mapping)
        and isinstance(value.get("column"), str)
        and set(value) <= {"column", "below"}
    ):
        below = value.get("below")
        return LabelSpec(
            value["column"], None if below is None else _number(below, f"{where}: label 'below'")
        )
    raise ConfigError(
        f"{where}: 'label' must be a column name or {{'column': name, 'below': number}}, got {value!r}"
    )


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _pair(value: Any, where: str) -> tuple[float, float]:
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise ConfigError(f"{where} must be [low, high], got {value!r}")
    low, high = (_number(v, where) for v in value)
    if high < low:
        raise ConfigError(f"{where} [{low}, {high}] has high < low")
    return low, high
