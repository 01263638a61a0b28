"""Published EchoCLIP format: an open_clip model saved by open_clip loads with identical embeddings."""

from __future__ import annotations

import json

import pytest
import torch

from echoclip.errors import ModelError
from echoclip.models.factory import get_tokenizer, load_model
from echoclip.models.open_clip_compat import load_open_clip_checkpoint

# the shape of the published EchoCLIP config (timm ConvNeXt image tower, CLIP text
# transformer), made small: timm's test ConvNeXt, 64 px, a narrow 2-layer text tower
SMALL = {
    "embed_dim": 64,
    "vision_cfg": {
        "timm_model_name": "test_convnext",
        "timm_model_pretrained": False,
        "timm_pool": "",
        "timm_proj": "linear",
        "timm_drop": 0.0,
        "timm_drop_path": 0.1,
        "image_size": 64,
    },
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
PUBLISHED = {
    "embed_dim": 512,
    "vision_cfg": {
        "timm_model_name": "convnext_base",
        "timm_model_pretrained": False,
        "timm_pool": "",
        "timm_proj": "linear",
        "timm_drop": 0.0,
        "timm_drop_path": 0.1,
        "image_size": 224,
    },
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
}
REPORTS = [
    "SEVERE AORTIC STENOSIS. LV EJECTION FRACTION IS 35%.",
    "A PACEMAKER LEAD IS SEEN IN THE RIGHT VENTRICLE.",
]


def save_published_format(tmp_path, name, model_cfg, weights="bin"):
    """An open_clip CLIP with random weights, created and saved as open_clip's hub folders are."""
    import open_clip
    from open_clip.push_to_hf_hub import save_config_for_hf

    (tmp_path / f"{name}.json").write_text(json.dumps(model_cfg))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None).eval()
    folder = tmp_path / "published"
    folder.mkdir()
    save_config_for_hf(model, folder / "open_clip_config.json", model_config=model_cfg)
    if weights == "bin":
        torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        save_file(model.state_dict(), folder / "open_clip_model.safetensors")
    return model, folder


def check_identical(reference, folder, num_frames=4, tol=1e-5):
    from open_clip.tokenizer import SimpleTokenizer

    model, tokenizer = load_open_clip_checkpoint(folder, num_frames=num_frames)
    assert isinstance(tokenizer, SimpleTokenizer)
    size = model.config.video.image_size
    clips = torch.randn(2, 3, num_frames, size, size, generator=torch.Generator().manual_seed(0))
    frames = clips.transpose(1, 2).reshape(-1, 3, size, size)
    ids = tokenizer(REPORTS)
    with torch.no_grad():
        ref_frames = reference.encode_image(frames).reshape(2, num_frames, -1)
        ref_text = reference.encode_text(ids)
        ours_frames = model.video_tower.forward_features(clips)
        ours_video = model.encode_video(clips)
        ours_text = model.encode_text(ids)
    assert (ours_frames - ref_frames).abs().max() < tol
    assert (ours_text - ref_text).abs().max() < tol
    # the published order: every frame's embedding scaled to unit length, then the average
    published = torch.nn.functional.normalize(ref_frames, dim=-1).mean(dim=1)
    assert (ours_video - published).abs().max() < tol
    assert model.logit_scale.item() == pytest.approx(reference.logit_scale.item())
    return model, tokenizer, clips, ids


@pytest.mark.parametrize("weights", ["bin", "safetensors"])
def test_small_open_clip_checkpoint_gives_identical_embeddings(weights, tmp_path):
    reference, folder = save_published_format(tmp_path, f"echoclip-test-small-{weights}", SMALL, weights)
    check_identical(reference, folder)


def test_loaded_checkpoint_saves_as_a_model_directory(tmp_path):
    reference, folder = save_published_format(tmp_path, "echoclip-test-small-dir", SMALL)
    model, tokenizer, clips, ids = check_identical(reference, folder)
    out = model.save_pretrained(tmp_path / "converted", tokenizer=tokenizer)
    loaded = load_model(out)
    with torch.no_grad():
        assert (loaded.encode_video(clips) - model.encode_video(clips)).abs().max() == 0
        assert (loaded.encode_text(ids) - model.encode_text(ids)).abs().max() == 0
    assert torch.equal(get_tokenizer(out)(REPORTS), ids)


def test_missing_or_foreign_checkpoints_fail_clearly(tmp_path):
    with pytest.raises(ModelError, match="no such open_clip checkpoint folder"):
        load_open_clip_checkpoint(tmp_path / "nowhere")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    with pytest.raises(ModelError, match="open_clip_config.json"):
        load_open_clip_checkpoint(folder)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": SMALL}))
    with pytest.raises(ModelError, match="open_clip_model.safetensors nor open_clip_pytorch_model.bin"):
        load_open_clip_checkpoint(folder)
    other_vocab = {**SMALL, "text_cfg": {**SMALL["text_cfg"], "vocab_size": 770}}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": other_vocab}))
    with pytest.raises(ModelError, match="phrase_file"):
        load_open_clip_checkpoint(folder)
    unsupported = {**SMALL, "text_cfg": {**SMALL["text_cfg"], "embed_cls": True}}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": unsupported}))
    with pytest.raises(ModelError, match="embed_cls"):
        load_open_clip_checkpoint(folder)


def test_weights_of_another_shape_list_the_keys(tmp_path):
    reference, folder = save_published_format(tmp_path, "echoclip-test-small-keys", SMALL)
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["model_cfg"]["text_cfg"]["layers"] = 3
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(
        ModelError, match=r"open_clip_pytorch_model.bin.*missing keys \(\d+\): text_tower.clip"
    ):
        load_open_clip_checkpoint(folder)


def test_echoclip_r_checkpoint_with_its_phrase_file(tmp_path):
    from echoclip.tokenizer import EchoClipRTokenizer

    phrases = tmp_path / "phrases.txt"
    phrases.write_text("SEVERE AORTIC STENOSIS. \nLV EJECTION FRACTION IS <#>%. \n")
    vocab = EchoClipRTokenizer(phrases).vocab_size
    cfg = {**SMALL, "text_cfg": {**SMALL["text_cfg"], "vocab_size": vocab}}
    reference, folder = save_published_format(tmp_path, "echoclip-test-small-r", cfg)
    model, tokenizer = load_open_clip_checkpoint(folder, num_frames=2, phrase_file=phrases)
    assert isinstance(tokenizer, EchoClipRTokenizer) and model.config.tokenizer == "echoclip-r"
    ids = tokenizer(REPORTS)
    with torch.no_grad():
        assert (model.encode_text(ids) - reference.encode_text(ids)).abs().max() < 1e-5


@pytest.mark.slow
def test_published_convnext_base_checkpoint_gives_identical_embeddings(tmp_path):
    reference, folder = save_published_format(tmp_path, "echoclip-test-convnext-base", PUBLISHED)
    model, *_ = check_identical(reference, folder, num_frames=2)
    assert model.config.embed_dim == 512 and model.config.video.image_size == 224
