"""Model configs: the built-in registry, JSON round trips, user configs, and bad configs."""

from __future__ import annotations

import json
import math

import pytest

from echoclip.errors import ModelError
from echoclip.models.config import ModelConfig, load_config_file
from echoclip.models.factory import add_model_config, get_model_config, list_models

BUILTIN = [
    "echoclip-base",
    "echoclip-frames-convnext",
    "echoclip-mvit",
    "echoclip-r2plus1d",
    "echoclip-small",
    "echoclip-tiny",
    "echoclip-tiny-frames",
    "echoclip-vit-tiny",
]


def test_builtin_configs_are_listed_and_load():
    assert set(BUILTIN) <= set(list_models())
    for name in BUILTIN:
        cfg = get_model_config(name)
        assert cfg.name == name
        assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_tiny_config_is_the_planned_cpu_model():
    cfg = get_model_config("echoclip-tiny")
    assert (cfg.video.kind, cfg.video.backbone, cfg.video.aggregation) == ("frames", "convnet", "stats")
    assert cfg.video.backbone_kwargs["widths"] == [16, 32, 64, 128]
    assert (cfg.video.image_size, cfg.video.num_frames, cfg.preprocess["fps"]) == (64, 16, 12.5)
    assert cfg.text.value_embeddings and cfg.text.pool == "eos"
    assert cfg.logit_scale_init == pytest.approx(math.log(30)) and not cfg.learn_logit_scale


def test_published_echoclip_shape():
    cfg = get_model_config("echoclip-frames-convnext")
    vision = cfg.video.backbone_kwargs["vision_cfg"]
    assert (vision["timm_model_name"], vision["image_size"], cfg.embed_dim) == ("convnext_base", 224, 512)
    t = cfg.text
    assert (t.context_length, t.vocab_size, t.width, t.layers, t.heads, t.pool) == (
        77,
        49408,
        512,
        12,
        8,
        "argmax",
    )
    assert cfg.tokenizer == "clip" and cfg.preprocess["mean"][0] == pytest.approx(0.48145466)


def test_add_model_config_file_and_folder(tmp_path):
    d = get_model_config("echoclip-tiny").to_dict()
    d.pop("name")
    d["embed_dim"] = 64
    (tmp_path / "my-model.json").write_text(json.dumps(d))
    assert add_model_config(tmp_path / "my-model.json") == ["my-model"]
    assert "my-model" in list_models() and get_model_config("my-model").embed_dim == 64
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "other-model.json").write_text(json.dumps({**d, "embed_dim": 32}))
    assert add_model_config(folder) == ["other-model"]
    assert get_model_config("other-model").embed_dim == 32


def test_replace_changes_nested_fields_only():
    cfg = get_model_config("echoclip-tiny")
    new = cfg.replace(embed_dim=64, video={"num_frames": 8})
    assert (new.embed_dim, new.video.num_frames, new.video.image_size) == (64, 8, cfg.video.image_size)
    assert cfg.video.num_frames == 16
    with pytest.raises(ModelError, match="unknown keys"):
        cfg.replace(video={"num_frame": 8})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"embed_dim": 0}, "embed_dim"),
        ({"bogus": 1}, "unknown keys"),
        ({"video": {"kind": "frames", "aggregation": "median"}}, "aggregation"),
        ({"video": {"kind": "videomae", "image_size": 100}}, "multiple of patch_size"),
        ({"text": {"kind": "clip", "pool": "cls"}}, "pool"),
        ({"text": {"kind": "hf", "pool": "cls"}}, "hf_config and hf_path"),
        ({"tokenizer": "clip"}, "value_embeddings"),
        ({"preprocess": {"image_size": 32}}, "preprocess"),
    ],
)
def test_bad_configs_fail_with_the_field_named(change, message):
    d = get_model_config("echoclip-tiny").to_dict()
    d.update(change)
    with pytest.raises(ModelError, match=message):
        ModelConfig.from_dict(d)


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(ModelError, match="broken.json"):
        load_config_file(bad)
    with pytest.raises(ModelError, match="missing.json"):
        load_config_file(tmp_path / "missing.json")
    with pytest.raises(ModelError, match="unknown model 'nope'.*echoclip-tiny"):
        get_model_config("nope")
