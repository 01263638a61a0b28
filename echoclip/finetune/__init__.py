"""Fine-tuning a video encoder with a head for EF regression, EF < 50 % and findings.

::

    from echoclip.finetune import load_finetuned
    from echoclip.finetune.finetune import finetune
    from echoclip.loop.config import LoopConfig

    result = finetune("EchoNet-Dynamic", LoopConfig(out="runs/ft", epochs=20, batch_size=16),
                      init="runs/clip/final", head="stfnet", task="ef", test_clips=4)
    result.metrics["ef"]["mae"]
    model = load_finetuned("runs/ft/final")

Heads (:mod:`echoclip.finetune.heads`): ``linear``, ``attentive``, ``stfnet``.
Names are imported on first use, so ``import echoclip.finetune`` loads nothing heavy.
(``finetune`` itself is not re-exported here: it shares its name with its module.)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "FineTuneResult": "echoclip.finetune.finetune",
    "FineTuneObjective": "echoclip.finetune.finetune",
    "Task": "echoclip.finetune.finetune",
    "make_task": "echoclip.finetune.finetune",
    "FineTuneModel": "echoclip.finetune.model",
    "load_finetuned": "echoclip.finetune.model",
    "HEADS": "echoclip.finetune.heads",
    "create_head": "echoclip.finetune.heads",
    "predict": "echoclip.finetune.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'echoclip.finetune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
