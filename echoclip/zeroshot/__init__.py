"""Zero-shot prediction by prompts: prompt sets, scoring methods, calibration, ``zero_shot``.

``prompts`` reads and validates prompt sets, ``scoring`` turns embeddings into
predictions, ``calibration`` maps binary scores to probabilities and ``predict``
ties them to a model; ``sections`` splits reports into named sections, ``drafts``
assembles a report from the nearest sections, ``judge`` scores what drafts state against
the truth, ``neighbours`` serves the ``knn`` method. Names are resolved lazily (importing
this package does no work).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "zero_shot": "echoclip.zeroshot.predict",
    "encode_prompts": "echoclip.zeroshot.predict",
    "score_embeddings": "echoclip.zeroshot.predict",
    "load_prompt_set": "echoclip.zeroshot.prompts",
    "save_prompt_set": "echoclip.zeroshot.prompts",
    "list_prompt_sets": "echoclip.zeroshot.prompts",
    "PromptSet": "echoclip.zeroshot.prompts",
    "fit_calibration": "echoclip.zeroshot.calibration",
    "calibrate_prompt_set": "echoclip.zeroshot.calibration",
    "register_scorer": "echoclip.zeroshot.scoring",
    "split_sections": "echoclip.zeroshot.sections",
    "split_sentences": "echoclip.zeroshot.sections",
    "load_section_config": "echoclip.zeroshot.sections",
    "build_section_index": "echoclip.zeroshot.drafts",
    "draft_report": "echoclip.zeroshot.drafts",
    "draft_reports": "echoclip.zeroshot.drafts",
    "report_facts": "echoclip.zeroshot.judge",
    "judge_reports": "echoclip.zeroshot.judge",
    "judge_drafts": "echoclip.zeroshot.judge",
    "load_neighbours": "echoclip.zeroshot.neighbours",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'echoclip.zeroshot' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
