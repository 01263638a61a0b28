"""Encoder checkpoints: writing, loading into a CLIP model's video tower, reports and errors."""

from __future__ import annotations

import json

import pytest
import torch

from echoclip.errors import ModelError
from echoclip.models.encoders import build_encoder, load_pretrained_encoder, read_encoder, save_encoder
from echoclip.models.factory import create_model

VIT = {"video": {"image_size": 32, "num_frames": 4, "patch_size": 8, "width": 32, "layers": 1, "heads": 2}}


def _tiny_vit(seed: int):
    torch.manual_seed(seed)
    return create_model("echoclip-vit-tiny", **VIT)


def test_videomae_encoder_round_trip_reports_untrained_parts(tmp_path):
    source = _tiny_vit(1)
    save_encoder(source.video_tower, tmp_path / "enc", prefixes=("model.",), info={"objective": "mae"})
    info = json.loads((tmp_path / "enc" / "encoder.json").read_text())
    assert info["video"]["kind"] == "videomae" and info["objective"] == "mae" and info["embed_dim"] == 128

    target = _tiny_vit(2)
    report = load_pretrained_encoder(target, tmp_path / "enc")
    tower_keys = set(target.video_tower.state_dict())
    assert set(report.matched) == {k for k in tower_keys if k.startswith("model.")}
    assert set(report.missing) == {k for k in tower_keys if not k.startswith("model.")}
    assert "proj.weight" in report.missing and report.unexpected == []
    for k in report.matched:
        assert torch.equal(target.video_tower.state_dict()[k], source.video_tower.state_dict()[k]), k
    # the projection was not in the checkpoint: it keeps the target's own initialisation
    assert not torch.equal(target.video_tower.proj.weight, source.video_tower.proj.weight)
    assert f"{len(report.matched)} tensors loaded" in report.summary()
    assert "proj.weight" in report.summary()


def test_frames_tower_loads_everything_including_batchnorm_statistics(tmp_path):
    torch.manual_seed(0)
    source = create_model("echoclip-tiny")
    with torch.no_grad():
        source.video_tower(torch.randn(2, 3, 16, 64, 64))  # train mode: running stats move
    save_encoder(source.video_tower, tmp_path / "run" / "final")
    torch.manual_seed(1)
    target = create_model("echoclip-tiny")
    report = load_pretrained_encoder(target.video_tower, tmp_path / "run")  # a run folder: uses final/
    assert report.missing == [] and report.unexpected == []
    x = torch.randn(1, 3, 16, 64, 64)
    source.eval()
    target.eval()
    assert torch.allclose(source.encode_video(x), target.encode_video(x))
    rebuilt = build_encoder(tmp_path / "run" / "final" / "encoder.safetensors")
    assert torch.allclose(rebuilt(x), source.video_tower(x))


def test_unexpected_tensors_are_reported(tmp_path):
    tower = _tiny_vit(0).video_tower
    save_encoder(tower, tmp_path)
    from safetensors.torch import load_file, save_file

    state = load_file(tmp_path / "encoder.safetensors")
    state["decoder.head.weight"] = torch.zeros(3, 3)
    save_file(state, tmp_path / "encoder.safetensors")
    report = load_pretrained_encoder(_tiny_vit(1), tmp_path)
    assert report.unexpected == ["decoder.head.weight"]


def test_other_architecture_is_an_error(tmp_path):
    save_encoder(_tiny_vit(0).video_tower, tmp_path)
    with pytest.raises(ModelError, match="video.kind='videomae'"):
        load_pretrained_encoder(create_model("echoclip-tiny"), tmp_path)
    wider = create_model("echoclip-vit-tiny", video={**VIT["video"], "width": 64, "heads": 2})
    with pytest.raises(ModelError, match="width"):
        load_pretrained_encoder(wider, tmp_path)


def test_shape_mismatch_without_config_is_an_error(tmp_path):
    save_encoder(_tiny_vit(0).video_tower, tmp_path)
    (tmp_path / "encoder.json").unlink()  # no config to compare: the shapes still are
    other = create_model("echoclip-vit-tiny", video={**VIT["video"], "mlp_ratio": 2.0})
    with pytest.raises(ModelError, match="do not fit"):
        load_pretrained_encoder(other, tmp_path)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(ModelError, match="no such encoder checkpoint"):
        load_pretrained_encoder(_tiny_vit(0), tmp_path / "missing")
    with pytest.raises(ModelError, match="not an encoder checkpoint"):
        read_encoder(tmp_path)
    (tmp_path / "encoder.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match="unreadable"):
        read_encoder(tmp_path)


def test_prefixes_load_only_the_backbone(tmp_path):
    torch.manual_seed(0)
    source = create_model("echoclip-tiny")
    save_encoder(source.video_tower, tmp_path)
    torch.manual_seed(1)
    target = create_model("echoclip-tiny")
    before = {k: v.clone() for k, v in target.video_tower.state_dict().items()}
    report = load_pretrained_encoder(target, tmp_path, prefixes=("backbone.",))
    state = target.video_tower.state_dict()
    assert report.matched and all(k.startswith("backbone.") for k in report.matched)
    assert set(report.left_out) == {k for k in state if not k.startswith("backbone.")}
    assert "proj.weight" in report.left_out and report.unexpected == []
    for k in report.matched:
        assert torch.equal(state[k], source.video_tower.state_dict()[k]), k
    for k in report.left_out:  # the aggregation and projection keep the target's own weights
        assert torch.equal(state[k], before[k]), k
    assert f"{len(report.left_out)} left out by prefix" in report.summary()
    with pytest.raises(ModelError, match="no tensor starts with head."):
        load_pretrained_encoder(target, tmp_path, prefixes=("head.",))
