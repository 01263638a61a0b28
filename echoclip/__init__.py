"""echoclip: echocardiography video-report foundation models.

The public API follows open_clip::

    import echoclip
    model, preprocess = echoclip.create_model_and_transforms("echoclip-tiny")
    tokenizer = echoclip.get_tokenizer("echoclip-tiny")
    video = echoclip.load_video("study.dcm")
    v = model.encode_video(preprocess(video)[None], normalize=True)

Names are resolved lazily so that ``import echoclip`` stays cheap (no torch import,
no model building, no file reading).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "EchoclipError": "echoclip.errors",
    "VideoReadError": "echoclip.errors",
    "DataError": "echoclip.errors",
    "ModelError": "echoclip.errors",
    "ConfigError": "echoclip.errors",
    "TrainingError": "echoclip.errors",
    "Video": "echoclip.data.video",
    "load_video": "echoclip.data.video",
    "save_video": "echoclip.data.video",
    "register_reader": "echoclip.data.video",
    "read_dicom": "echoclip.data.dicom",
    "Manifest": "echoclip.data.datasets",
    "EchoNetDynamic": "echoclip.data.datasets",
    "open_dataset": "echoclip.data.datasets",
    "EchoNetPediatric": "echoclip.data.public_datasets",
    "EchoNetLVH": "echoclip.data.public_datasets",
    "CAMUS": "echoclip.data.public_datasets",
    "TMED2": "echoclip.data.public_datasets",
    "read_nifti": "echoclip.data.nifti",
    "simulate_study": "echoclip.data.synthetic",
    "simulate_reports": "echoclip.data.synthetic",
    "simulate_dataset": "echoclip.data.synthetic.dataset",
    "list_models": "echoclip.models.factory",
    "add_model_config": "echoclip.models.factory",
    "get_model_config": "echoclip.models.factory",
    "create_model": "echoclip.models.factory",
    "create_model_and_transforms": "echoclip.models.factory",
    "load_model": "echoclip.models.factory",
    "get_tokenizer": "echoclip.models.factory",
    "load_open_clip_checkpoint": "echoclip.models.open_clip_compat",
    "embed_videos": "echoclip.models.embed",
    "embed_reports": "echoclip.models.embed",
    "embed_studies": "echoclip.models.embed",
    "zero_shot": "echoclip.zeroshot.predict",
    "load_prompt_set": "echoclip.zeroshot.prompts",
    "split_sections": "echoclip.zeroshot.sections",
    "build_section_index": "echoclip.zeroshot.drafts",
    "draft_report": "echoclip.zeroshot.drafts",
    "load_finetuned": "echoclip.finetune.model",
    "predict_views": "echoclip.views",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'echoclip' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
