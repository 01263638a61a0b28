"""embed_videos / embed_reports: order, normalisation, inputs of every kind, unreadable samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echoclip.data.video import Video
from echoclip.errors import VideoReadError
from echoclip.models.embed import embed_reports, embed_videos
from echoclip.models.factory import create_model_and_transforms


@pytest.fixture
def model_and_preprocess(stand_in_tokenizer):
    model, preprocess = create_model_and_transforms("echoclip-tiny", tokenizer=stand_in_tokenizer)
    return model.eval(), preprocess


def videos(n: int) -> list[Video]:
    rng = np.random.default_rng(0)
    return [Video(rng.integers(0, 255, (30, 72, 80, 3), dtype=np.uint8), fps=25.0) for _ in range(n)]


class FlakyDataset(torch.utils.data.Dataset):
    """Yields dicts as the data sets do; item 1 is unreadable (None) and item 3 raises."""

    def __init__(self, clips: torch.Tensor) -> None:
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int):
        if i == 1:
            return None
        if i == 3:
            raise VideoReadError(f"clip{i}.avi: truncated file")
        return {"video": self.clips[i], "report": "", "index": i}


def test_embed_videos_matches_encode_video_in_order(model_and_preprocess):
    model, preprocess = model_and_preprocess
    vids = videos(5)
    emb = embed_videos(model, vids, batch_size=2, progress=False)
    with torch.no_grad():
        expected = model.encode_video(torch.stack([preprocess(v) for v in vids]), normalize=True).numpy()
    assert emb.dtype == np.float32 and emb.shape == (5, 128)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(emb, expected, atol=1e-5)
    # raw uint8 frames, preprocessed clips and one stacked tensor give the same rows
    clips = torch.stack([preprocess(v) for v in vids])
    np.testing.assert_allclose(embed_videos(model, clips, batch_size=3, progress=False), emb, atol=1e-5)
    # uint8 frames [T, H, W, 3] go through the model's transform as well
    from_frames = embed_videos(model, [v.frames for v in vids], batch_size=2, progress=False)
    with torch.no_grad():
        expected = model.encode_video(
            torch.stack([preprocess(v.frames) for v in vids]), normalize=True
        ).numpy()
    np.testing.assert_allclose(from_frames, expected, atol=1e-5)


def test_unreadable_samples_get_nan_rows_and_the_rest_stays_aligned(model_and_preprocess, caplog):
    model, _ = model_and_preprocess
    clips = torch.randn(5, *model.video_shape, generator=torch.Generator().manual_seed(0))
    emb = embed_videos(model, FlakyDataset(clips), batch_size=2, progress=False)
    assert np.isnan(emb[[1, 3]]).all() and not np.isnan(emb[[0, 2, 4]]).any()
    with torch.no_grad():
        expected = model.encode_video(clips[[0, 2, 4]], normalize=True).numpy()
    np.testing.assert_allclose(emb[[0, 2, 4]], expected, atol=1e-5)
    assert "2 of 5 videos could not be read" in caplog.text


def test_embed_reports_matches_encode_text(model_and_preprocess, stand_in_tokenizer):
    model, _ = model_and_preprocess
    texts = [f"LV EJECTION FRACTION IS {v}%." for v in range(0, 100, 7)]
    emb = embed_reports(model, stand_in_tokenizer, texts, batch_size=4, progress=False)
    with torch.no_grad():
        expected = model.encode_text(stand_in_tokenizer(texts), normalize=True).numpy()
    assert emb.dtype == np.float32 and emb.shape == (len(texts), 128)
    np.testing.assert_allclose(emb, expected, atol=1e-5)
    with pytest.raises(TypeError, match="sequence of texts"):
        embed_reports(model, stand_in_tokenizer, "one report", progress=False)


def test_embedding_leaves_a_training_model_in_training_mode(model_and_preprocess, stand_in_tokenizer):
    model, _ = model_and_preprocess
    model.train()
    embed_reports(model, stand_in_tokenizer, ["EF 50%"], progress=False)
    assert model.training
