"""Study poolings: one embedding per study from its videos' embeddings, by name (``mean``,
``echoprime``, ``attention``), masked, view-aware, saved with the model, and learnable."""

from __future__ import annotations

import json
from importlib.resources import files

import pytest
import torch
import torch.nn.functional as F

from echoclip.errors import ModelError
from echoclip.models.config import STUDY_VIEWS, ModelConfig
from echoclip.models.factory import create_model, get_model_config, load_model
from echoclip.models.study_encoder import (
    STUDY_POOLINGS,
    AttentionPooling,
    StudyEncoder,
    StudyPooling,
    view_ids,
)
from echoclip.tokenizer import EchoTokenizer

POOLINGS = ("mean", "echoprime", "attention")


def _trained(encoder: StudyEncoder, seed: int = 0) -> StudyEncoder:
    """The encoder as after some training: every parameter (zero-initialised ones too) random."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in encoder.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return encoder


def _study(b: int = 3, n: int = 5, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, d, generator=g), torch.randint(-1, len(STUDY_VIEWS), (b, n), generator=g)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


@pytest.mark.parametrize("name", POOLINGS)
def test_each_pooling_gives_one_embedding_per_study(name):
    encoder = _trained(StudyEncoder(8, name)).eval()
    x, views = _study()
    assert encoder(x, views=views).shape == (3, 8)
    assert encoder(x).shape == (3, 8)  # views unknown
    with pytest.raises(ModelError, match=r"\[B, N, 8\]"):
        encoder(x[0])
    with pytest.raises(ModelError, match="no videos"):
        encoder(x, mask=torch.zeros(3, 5, dtype=torch.bool))


@pytest.mark.parametrize("name", POOLINGS)
def test_padding_videos_do_not_change_a_study(name):
    encoder = _trained(StudyEncoder(8, name)).eval()
    x, views = _study()
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    out = encoder(x, mask, views)
    padded = x.clone()
    padded[~mask] = float("nan")  # anything at all
    other_views = views.masked_fill(~mask, 3)
    assert torch.allclose(encoder(padded, mask, other_views), out, atol=1e-6)
    # study 0 alone, without its padding
    assert torch.allclose(encoder(x[:1, :3], views=views[:1, :3]), out[:1], atol=1e-6)


@pytest.mark.parametrize("name", POOLINGS)
def test_the_order_of_a_studys_videos_does_not_matter(name):
    encoder = _trained(StudyEncoder(8, name)).eval()
    x, views = _study()
    order = torch.randperm(5, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(encoder(x[:, order], views=views[:, order]), encoder(x, views=views), atol=1e-6)


def test_mean_is_the_mean_of_the_unit_video_embeddings():
    x, views = _study()
    mask = torch.tensor([[1, 1, 0, 0, 0]] * 3, dtype=torch.bool)
    out = StudyEncoder(8, "mean")(x, mask, views)
    assert torch.allclose(out, (_unit(x[:, 0]) + _unit(x[:, 1])) / 2, atol=1e-6)


def test_echoprime_weights_each_video_by_its_views_entry_in_the_table():
    table = json.loads((files("echoclip.configs") / "views" / "echoprime.json").read_text())
    weights = torch.tensor(table["weights"])
    column = {name: table["views"].index(name) for name in ("A4C", "Parasternal_Long", "Parasternal_Short")}
    x = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(0))
    names = ["A4C", "PLAX", "Parasternal_Short", None]  # echoclip's names, EchoPrime's, unknown
    entries = torch.stack(
        [
            weights[:, column["A4C"]],
            weights[:, column["Parasternal_Long"]],
            weights[:, column["Parasternal_Short"]],
            weights.mean(dim=1),  # an unknown view weighs the row's mean
        ],
        dim=1,
    )  # [15 sections, 4 videos]
    sections = _unit(entries @ _unit(x[0]))  # per section, the weighted sum at unit length
    views = view_ids([names])
    whole = StudyEncoder(8, "echoprime")(x, views=views)[0]
    assert torch.allclose(whole, sections.mean(dim=0), atol=1e-5)  # the mean of the sections
    row = table["sections"].index("Aortic Valve")
    one = StudyEncoder(8, "echoprime", options={"section": "Aortic Valve"})(x, views=views)[0]
    assert torch.allclose(one, sections[row], atol=1e-5)
    # the aortic valve row weighs A2C 0: a study of A2C videos only has no such section
    only_a2c = StudyEncoder(8, "echoprime", options={"section": "Aortic Valve"})(
        x, views=view_ids([["A2C"] * 4])
    )
    assert torch.allclose(only_a2c[0], _unit(x[0]).mean(dim=0), atol=1e-6)
    with pytest.raises(ModelError, match="unknown section 'Valves'"):
        StudyEncoder(8, "echoprime", options={"section": "Valves"})


def test_attention_starts_as_the_mean_and_can_differ_once_trained():
    x, views = _study()
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    torch.manual_seed(0)
    attention = StudyEncoder(8, "attention", options={"heads": 2}).eval()
    mean = StudyEncoder(8, "mean")
    assert torch.allclose(attention(x, mask, views), mean(x, mask, views), atol=1e-6)
    assert not torch.allclose(_trained(attention)(x, mask, views), mean(x, mask, views), atol=1e-3)
    weights = attention.pooling.weights(_unit(x), mask, views)
    assert weights.shape == (3, 2, 5) and torch.allclose(weights.sum(-1), torch.ones(3, 2))
    assert (weights[~mask.unsqueeze(1).expand_as(weights)] == 0).all()


class _Spy(StudyPooling):
    """Shows what the pooling was given: its share of unknown views, in every channel."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        return (views < 0).float().mean(1, keepdim=True).expand(-1, self.dim)


def test_dropout_drops_videos_and_hides_views_in_training_only_and_never_all_of_a_study():
    torch.manual_seed(0)
    n = 6
    # video i's embedding is the i-th unit vector: the mean shows which videos were kept
    x = torch.eye(n).expand(4000, n, n)
    mask = torch.ones(4000, n, dtype=torch.bool)
    mask[::2, 3:] = False
    encoder = StudyEncoder(n, "mean", video_dropout=0.5).train()
    kept = encoder(x, mask) > 0
    assert kept.any(dim=1).all() and not (kept & ~mask).any()  # never all, never padding
    assert (kept.sum() / mask.sum()).item() == pytest.approx(0.5, abs=0.05)
    assert torch.equal(encoder.eval()(x, mask) > 0, mask)
    STUDY_POOLINGS["spy"] = _Spy
    try:
        spy = StudyEncoder(n, "spy", view_dropout=0.3)
        views = torch.zeros(4000, n, dtype=torch.long)
        assert spy.train()(x, mask, views).mean().item() == pytest.approx(0.3, abs=0.02)
        assert spy.eval()(x, mask, views).max().item() == 0
    finally:
        del STUDY_POOLINGS["spy"]
    with pytest.raises(ModelError, match="video_dropout"):
        StudyEncoder(n, "mean", video_dropout=1.0)


def test_views_by_name_id_or_none_and_unknown_views_share_one_entry():
    assert view_ids(["A4C", "parasternal_long", "PSAX", None, "Bogus"]).tolist() == [
        STUDY_VIEWS.index("A4C"),
        STUDY_VIEWS.index("PLAX"),
        STUDY_VIEWS.index("PSAX"),
        -1,
        -1,
    ]
    assert view_ids([["A4C"], ["PLAX", "SSN"]]).tolist() == [[2, -1], [7, 9]]
    assert view_ids(["A4C", "PLAX"], vocabulary=("PLAX", "A4C")).tolist() == [1, 0]
    encoder = _trained(StudyEncoder(8, "attention")).eval()
    x, _ = _study(b=1, n=3)
    unknown = encoder(x)
    assert torch.equal(encoder(x, views=view_ids([[None, "Bogus", None]])), unknown)
    assert not torch.allclose(encoder(x, views=view_ids([["A4C", "PLAX", "PSAX"]])), unknown)
    with pytest.raises(ModelError, match="view ids"):
        encoder(x, views=torch.tensor([[0, 1, 11]]))


def test_encode_study_takes_clips_or_embeddings_one_study_or_a_batch(stand_in_tokenizer):
    torch.manual_seed(0)
    model = create_model("echoclip-tiny", tokenizer=stand_in_tokenizer).eval()  # no pooling: the mean
    assert model.study_encoder is None
    clips = torch.randn(2, 3, *model.video_shape)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    with torch.no_grad():
        videos = model.encode_video(clips.flatten(0, 1), normalize=True).view(2, 3, -1)
        one = model.encode_study(clips[0, :2])
        assert one.shape == (128,) and torch.allclose(one, _unit(videos[0, :2].mean(0)), atol=1e-5)
        assert torch.allclose(model.encode_study(videos[0, :2]), one, atol=1e-6)
        batch = model.encode_study(clips, mask=mask)
        assert batch.shape == (2, 128) and torch.allclose(batch[0], one, atol=1e-5)
        assert torch.allclose(model.encode_study(videos, mask=mask), batch, atol=1e-5)
        with pytest.raises(ModelError, match="encode_study takes"):
            model.encode_study(videos[0, 0])


def test_a_batch_of_studies_trains_end_to_end_through_the_video_tower(stand_in_tokenizer):
    torch.manual_seed(0)
    model = create_model(
        "echoclip-tiny", tokenizer=stand_in_tokenizer, study_pooling="attention", study_video_dropout=0.3
    ).train()
    clips = torch.randn(2, 3, *model.video_shape)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    out = model.encode_study(clips, views=[["A4C", "PLAX"], ["PSAX", None, "A2C"]], mask=mask)
    out.sum().backward()
    assert out.shape == (2, 128)
    for part in (model.video_tower, model.study_encoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_an_attention_model_saves_and_loads_its_study_encoder(tmp_path):
    torch.manual_seed(0)
    model = create_model(
        "echoclip-tiny",
        tokenizer=EchoTokenizer(),
        study_pooling="attention",
        study_views=["A4C", "A2C", "PLAX", "PSAX"],
        study_video_dropout=0.2,
        study_view_dropout=0.1,
        study_options={"heads": 4},
    ).eval()
    _trained(model.study_encoder)
    x, _ = _study(b=2, n=3, d=128)
    views = [["A4C", "PLAX", None], ["PSAX", "parasternal_long"]]
    with torch.no_grad():
        out = model.encode_study(x, views=views)
        assert not torch.allclose(out, model.encode_study(x))
        loaded = load_model(model.save_pretrained(tmp_path / "m"))
        assert loaded.config == model.config and loaded.study_encoder.pooling.heads == 4
        assert torch.allclose(loaded.encode_study(x, views=views), out, atol=1e-6)
        ids = loaded.study_encoder.view_ids(views[0])  # one study, by ids
        assert ids.tolist() == [0, 2, -1] and torch.allclose(
            loaded.encode_study(x[0], views=ids), out[0], atol=1e-6
        )
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["study_views"] == ["A4C", "A2C", "PLAX", "PSAX"] and saved["study_pooling"] == "attention"


def test_configs_without_a_study_pooling_are_as_before(tmp_path):
    old = get_model_config("echoclip-tiny").to_dict()
    assert not any(key.startswith("study_") for key in old)  # config.json unchanged
    assert ModelConfig.from_dict(old).study_pooling is None
    model = create_model("echoclip-tiny", tokenizer=EchoTokenizer())
    saved = json.loads((model.save_pretrained(tmp_path / "m") / "config.json").read_text())
    assert not any(key.startswith("study_") for key in saved)
    assert load_model(tmp_path / "m").study_encoder is None
    with pytest.raises(ModelError, match="study_view_dropout: set study_pooling"):
        ModelConfig.from_dict({**old, "study_view_dropout": 0.1})


def test_an_unknown_pooling_name_is_one_error_naming_the_choices(stand_in_tokenizer):
    with pytest.raises(
        ModelError, match=r"unknown study pooling 'medain'; known: \['attention', 'echoprime', 'mean'\]"
    ):
        create_model("echoclip-tiny", tokenizer=stand_in_tokenizer, study_pooling="medain")
    with pytest.raises(ModelError, match="bad options"):
        StudyEncoder(8, "mean", options={"heads": 2})
    with pytest.raises(ModelError, match="heads must divide"):
        AttentionPooling(8, heads=3)


def test_attention_learns_to_read_the_one_view_that_carries_the_label():
    """Only A4C videos hold the label (a direction ``u``); other views are noise. The mean
    dilutes the signal with them; trained attention should weight A4C and separate the labels
    better than the mean."""
    torch.manual_seed(0)
    d, n = 16, 6
    views = ("A4C", "A2C", "PLAX", "PSAX")
    u = _unit(torch.randn(d))

    def studies(b: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 2, (b,), generator=g) * 2 - 1
        v = torch.randint(0, len(views), (b, n), generator=g)
        v[:, 0] = 0  # each study has an A4C video
        x = torch.randn(b, n, d, generator=g) + 2.0 * (v == 0).unsqueeze(-1) * y[:, None, None] * u
        return x, v, y

    def separation(z: torch.Tensor, y: torch.Tensor) -> float:
        s = z @ u
        pos, neg = s[y > 0], s[y < 0]
        return ((pos.mean() - neg.mean()) / ((pos.var() + neg.var()) / 2).sqrt()).item()

    encoder = StudyEncoder(d, "attention", views=views, video_dropout=0.1, view_dropout=0.1)
    probe = torch.nn.Linear(d, 1)
    optimizer = torch.optim.Adam([*encoder.parameters(), *probe.parameters()], lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        x, v, y = studies(128, g)
        loss = F.binary_cross_entropy_with_logits(probe(encoder(x, views=v)).squeeze(-1), (y > 0).float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, v, y = studies(2000, torch.Generator().manual_seed(2))
    with torch.no_grad():
        learned = separation(encoder.eval()(x, views=v), y)
        mean = separation(StudyEncoder(d, "mean")(x), y)
        weights = encoder.pooling.weights(_unit(x), torch.ones(2000, n, dtype=torch.bool), v)
    a4c_share = (weights[:, 0] * (v == 0)).sum(-1).mean().item()  # chance: 2.25 of 6 videos
    assert learned > 1.5 * mean, (learned, mean)
    assert a4c_share > 0.8, a4c_share
