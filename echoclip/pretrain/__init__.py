"""Self-supervised pretraining of video towers, and what reads its result.

::

    from echoclip.pretrain import estimate_period, probe, load_pretrained_encoder
    from echoclip.pretrain.pretrain import pretrain

    period = estimate_period(video.frames)                 # cardiac period in frames
    result = pretrain("runs/sim", LoopConfig(out="runs/ssl", steps=300), model="echoclip-tiny")
    load_pretrained_encoder(clip_model, result.final_dir)  # -> LoadReport
    probe(result.final_dir, dataset, target="ef")          # ridge / attentive probe R², MAE

Names are imported on first use, so ``import echoclip.pretrain`` loads nothing heavy.
(``pretrain`` itself is not re-exported here: it shares its name with its module.)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "estimate_period": "echoclip.data.cardiac",
    "make_mask": "echoclip.pretrain.masking",
    "make_masks": "echoclip.pretrain.masking",
    "PretrainConfig": "echoclip.pretrain.objectives",
    "probe": "echoclip.pretrain.probe",
    "load_pretrained_encoder": "echoclip.models.encoders",
    "LoadReport": "echoclip.models.encoders",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'echoclip.pretrain' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
