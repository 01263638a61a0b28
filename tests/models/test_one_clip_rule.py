"""One video, one embedding: ``echoclip search --video``, ``echoclip embed`` and
``echoclip.embed_videos`` sample the same clip and give the same vector, bit for bit.

Bit for bit at the same batch size: CPU kernels sum in another order for another number
of clips per forward pass (up to 2.2e-7 apart here), which says nothing of the clips.
A query is one clip, so the index side runs one clip per pass too in this test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import echoclip
from echoclip.cli.main import main
from echoclip.data.transforms import ClipSampler, VideoTransform
from echoclip.data.video import Video, save_video
from echoclip.models import embed as embed_module
from echoclip.retrieval import EmbeddingStore
from echoclip.tokenizer import EchoTokenizer

# frame counts 31-200 and source rates 25-90 frames per second, resampled to the model's 12.5
VIDEOS = [
    (31, 25),
    (32, 90),
    (37, 70),
    (47, 30),
    (61, 25),
    (64, 60),
    (75, 50),
    (99, 90),
    (120, 30),
    (200, 25),
    (200, 90),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A small model directory and a manifest of lossless AVIs of every (frames, fps) pair."""
    root = tmp_path_factory.mktemp("clips")
    torch.manual_seed(0)
    model = echoclip.create_model("echoclip-tiny", video={"image_size": 32, "num_frames": 8})
    assert model.preprocess_config.fps == 12.5
    model.save_pretrained(root / "model", tokenizer=EchoTokenizer())
    rng = np.random.default_rng(0)
    rows = []
    for i, (n, fps) in enumerate(VIDEOS):
        base = rng.integers(0, 255, (1, 40, 48, 3), dtype=np.uint8)
        frames = np.clip(base.astype(int) + 3 * np.arange(n)[:, None, None, None], 0, 255).astype(np.uint8)
        save_video(frames, root / "videos" / f"v{i}.avi", fps=fps, codec="ffv1")
        rows.append(
            {
                "video_path": f"videos/v{i}.avi",
                "report": f"EF {40 + i}%.",
                "patient_id": str(i),
                "study_id": str(i),
            }
        )
    pd.DataFrame(rows).to_parquet(root / "manifest.parquet")
    return root


def test_the_index_and_a_query_take_the_same_frames():
    """The rule itself: a decoded video through the transform takes the sampler's frames."""
    for n, fps in VIDEOS:
        frames = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)
        video = Video(frames, fps)
        transform = VideoTransform(echoclip.create_model("echoclip-tiny").preprocess_config)
        clip = transform(video)
        taken = np.round(clip[0, :, 0, 0].numpy() * 0.19 * 255 + 0.12 * 255).astype(int)
        expected = ClipSampler(num_frames=16, fps=12.5).indices(n, fps)
        assert taken.tolist() == expected.tolist(), (n, fps)


def test_search_embed_and_embed_videos_give_identical_embeddings(folder, monkeypatch):
    model_dir, paths = folder / "model", [folder / "videos" / f"v{i}.avi" for i in range(len(VIDEOS))]
    embed = ["embed", "--model", str(model_dir), "--data", str(folder), "--out", str(folder / "emb")]
    assert main([*embed, "--dtype", "float32", "--batch-size", "1"]) == 0
    store = EmbeddingStore(folder / "emb" / "videos")
    stored = store.embeddings()
    order = [int(p.removeprefix("videos/v").removesuffix(".avi")) for p in store.metadata()["video_path"]]

    model = echoclip.load_model(model_dir)
    direct = echoclip.embed_videos(model, paths, batch_size=1, progress=False)
    batched = echoclip.embed_videos(model, paths, progress=False)

    queries = []
    real = embed_module.encode_videos
    monkeypatch.setattr(
        embed_module, "encode_videos", lambda *a, **k: queries.append(real(*a, **k)) or queries[-1]
    )
    assert main(["index", "--embeddings", str(folder / "emb"), "--out", str(folder / "idx")]) == 0
    for path in paths:
        assert (
            main(["search", "--index", str(folder / "idx"), "--model", str(model_dir), "--video", str(path)])
            == 0
        )
    searched = np.concatenate([q.features for q in queries])

    assert np.abs(stored - direct[order]).max() == 0
    assert np.abs(searched - direct).max() == 0
    assert np.abs(batched - direct).max() < 1e-6


def test_zero_shot_takes_file_paths_as_embed_videos_does(folder):
    model_dir = folder / "model"
    model, tokenizer = echoclip.load_model(model_dir), echoclip.get_tokenizer(model_dir)
    paths = [str(folder / "videos" / f"v{i}.avi") for i in range(3)]
    from_paths = echoclip.zero_shot(model, tokenizer, paths, prompts="ejection_fraction")
    from_embeddings = echoclip.zero_shot(
        model, tokenizer, echoclip.embed_videos(model, paths, progress=False), prompts="ejection_fraction"
    )
    assert (
        len(from_paths) == 3
        and from_paths["ejection_fraction"].tolist() == from_embeddings["ejection_fraction"].tolist()
    )
