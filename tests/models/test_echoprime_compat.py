"""EchoPrime's released format: checkpoints saved as EchoPrime saves them load with identical embeddings."""

from __future__ import annotations

import math
from fractions import Fraction
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from echoclip.errors import ModelError
from echoclip.models.echoprime_compat import (
    ECHOPRIME_VIEWS,
    ENCODER_FILE,
    TEXT_ENCODER_FILE,
    VIEW_CLASSIFIER_FILE,
    WordPieceTokenizer,
    load_echoprime,
    section_view_weights,
)
from echoclip.models.factory import create_model, get_model_config, get_tokenizer

# BiomedBERT's architecture, made small; the vocabulary size and positions come from the weights
TINY_BERT = {
    "model_type": "bert",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "hidden_act": "gelu",
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
}
# a WordPiece vocabulary: BERT's special tokens first ([PAD] 0, [CLS] 2, [SEP] 3, as BiomedBERT's)
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "%", "35", "60", "lv", "ejection", "fraction"]
VOCAB += ["is", "normal", "left", "ventricular", "size", "and", "function", "severe", "aortic", "stenosis"]
VOCAB += ["##s", "##ly"]
REPORTS = [
    "LV ejection fraction is 35%.",
    "Normal left ventricular size and function. Severe aortic stenosis. EF 60 %.",
]


class ReferenceTextEncoder(nn.Module):
    """EchoPrime's text encoder, as its checkpoint describes it: a masked-LM BERT
    (``backbone``) and a linear projection (``text_projection``) of the last layer's
    features at the first token."""

    def __init__(self, config) -> None:
        super().__init__()
        from transformers import BertForMaskedLM

        self.backbone = BertForMaskedLM(config)
        self.text_projection = nn.Linear(config.hidden_size, 512)

    def forward(self, input_ids, attention_mask):
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return self.text_projection(out.hidden_states[-1][:, 0])


def reference_video_encoder() -> nn.Module:
    """torchvision's mvit_v2_s with its last classifier layer giving 512 outputs, as EchoPrime's."""
    import torchvision

    net = torchvision.models.video.mvit_v2_s(weights=None)
    net.head[-1] = nn.Linear(net.head[-1].in_features, 512)
    return net.eval()


def reference_view_classifier() -> nn.Module:
    import torchvision

    net = torchvision.models.convnext_base(weights=None)
    net.classifier[-1] = nn.Linear(net.classifier[-1].in_features, len(ECHOPRIME_VIEWS))
    return net.eval()


def reference_text_encoder() -> ReferenceTextEncoder:
    from transformers import BertConfig

    config = {k: v for k, v in TINY_BERT.items() if k != "model_type"}
    return ReferenceTextEncoder(BertConfig(vocab_size=48, max_position_embeddings=40, **config)).eval()


def text_state_dict(encoder: ReferenceTextEncoder) -> dict[str, torch.Tensor]:
    state = encoder.state_dict()
    # older transformers saved this buffer in state dicts; a checkpoint may hold it
    state["backbone.bert.embeddings.position_ids"] = torch.arange(40)[None]
    return state


def save_echoprime_format(folder, video=None, text=None, views=None):
    """Random-weight models saved as EchoPrime's release lays them out: ``model_data/weights/*.pt``."""
    weights = folder / "model_data" / "weights"
    weights.mkdir(parents=True)
    for name, state in ((ENCODER_FILE, video), (TEXT_ENCODER_FILE, text), (VIEW_CLASSIFIER_FILE, views)):
        if state is not None:
            torch.save(state, weights / name)
    (folder / "vocab").mkdir()
    (folder / "vocab" / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return folder / "model_data"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    torch.manual_seed(0)
    refs = SimpleNamespace(
        video=reference_video_encoder(), text=reference_text_encoder(), views=reference_view_classifier()
    )
    folder = save_echoprime_format(
        tmp_path_factory.mktemp("echoprime"),
        video=refs.video.state_dict(),
        text=text_state_dict(refs.text),
        views=refs.views.state_dict(),
    )
    loaded = load_echoprime(folder, vocab=folder.parent / "vocab", text_config=TINY_BERT)
    return SimpleNamespace(folder=folder, refs=refs, loaded=loaded)


def test_video_embeddings_equal_torchvision_mvit(published):
    model = published.loaded.model
    assert model.config.embed_dim == 512 and model.video_shape == (3, 16, 224, 224)
    clip = torch.randn(1, 3, 16, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.encode_video(clip)
        reference = published.refs.video(clip)
    assert ours.shape == (1, 512)
    assert (ours - reference).abs().max() < 1e-5


def test_text_embeddings_equal_bert_and_projection(published):
    from transformers import BertModel

    model, tokenizer = published.loaded.model, published.loaded.tokenizer
    assert model.config.text.vocab_size == 48 and model.config.text.context_length == 40
    ids = tokenizer(REPORTS)
    assert ids[0, 0] == 2 and ids[0, 1:3].tolist() == [VOCAB.index("lv"), VOCAB.index("ejection")]
    with torch.no_grad():
        ours = model.encode_text(ids)
        # EchoPrime pads every text to the full length; the padding is masked out
        padded = tokenizer.hf(REPORTS, padding="max_length", max_length=40, return_tensors="pt")
        reference = published.refs.text(padded["input_ids"], padded["attention_mask"])
        # a plain BertModel and the projection, with the same weights
        bert = BertModel(published.refs.text.backbone.config, add_pooling_layer=False).eval()
        bert.load_state_dict(published.refs.text.backbone.bert.state_dict())
        hidden = bert(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
        plain = published.refs.text.text_projection(hidden[:, 0])
    assert ours.shape == (2, 512)
    assert (ours - reference).abs().max() < 1e-5
    assert (ours - plain).abs().max() < 1e-5


def test_view_classifier_gives_a_probability_per_view(published):
    views = published.loaded.view_classifier
    assert views.views == ECHOPRIME_VIEWS and len(views.views) == 11
    clips = torch.randn(2, 3, 16, 224, 224, generator=torch.Generator().manual_seed(2))
    probs = views.classify_views(clips)
    assert probs.shape == (2, 11)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2))
    with torch.no_grad():
        reference = published.refs.views(clips[:, :, 0]).softmax(dim=-1)
    assert (probs - reference).abs().max() < 1e-5
    assert views.predict_views(clips) == [ECHOPRIME_VIEWS[i] for i in reference.argmax(dim=1)]
    with pytest.raises(ModelError, match="expected clips"):
        views(torch.zeros(3, 224, 224))


def test_wrong_or_corrupt_checkpoints_name_the_file(published, tmp_path):
    weights = published.folder / "weights"
    with pytest.raises(ModelError, match="no such EchoPrime weights folder"):
        load_echoprime(tmp_path / "nowhere")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    with pytest.raises(ModelError, match=f"no {ENCODER_FILE} here or in weights/"):
        load_echoprime(folder)
    (folder / ENCODER_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match=f"{TEXT_ENCODER_FILE}: no such file"):
        load_echoprime(folder)
    (folder / TEXT_ENCODER_FILE).symlink_to(weights / TEXT_ENCODER_FILE)
    with pytest.raises(ModelError, match=f"{ENCODER_FILE}: cannot read weights safely"):
        load_echoprime(folder, text_config=TINY_BERT)
    torch.save({"conv_proj.weight": Fraction(1, 3)}, folder / ENCODER_FILE)  # an object, not tensors
    with pytest.raises(ModelError, match=f"{ENCODER_FILE}: cannot read weights safely"):
        load_echoprime(folder, text_config=TINY_BERT)
    torch.save({"epoch": 3}, folder / ENCODER_FILE)
    with pytest.raises(ModelError, match=f"{ENCODER_FILE}: not a state dict of tensors"):
        load_echoprime(folder, text_config=TINY_BERT)
    # the text encoder's weights where the video encoder's belong
    (folder / ENCODER_FILE).unlink()
    (folder / ENCODER_FILE).symlink_to(weights / TEXT_ENCODER_FILE)
    with pytest.raises(ModelError, match=rf"{ENCODER_FILE}: weights do not match .*missing keys"):
        load_echoprime(folder, text_config=TINY_BERT)
    # a text encoder of another architecture than the one asked for
    (folder / ENCODER_FILE).unlink()
    (folder / ENCODER_FILE).symlink_to(weights / ENCODER_FILE)
    with pytest.raises(ModelError, match=rf"{TEXT_ENCODER_FILE}: weights do not match .*shape mismatches"):
        load_echoprime(folder, text_config={**TINY_BERT, "intermediate_size": 48})
    (folder / VIEW_CLASSIFIER_FILE).write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match=f"{VIEW_CLASSIFIER_FILE}: cannot read weights safely"):
        load_echoprime(folder, text_config=TINY_BERT)
    (folder / VIEW_CLASSIFIER_FILE).unlink()
    model, tokenizer, views = load_echoprime(folder, text_config=TINY_BERT)
    assert tokenizer is None and views is None and model.config.tokenizer == "bert"


def test_echoprime_config_is_registered():
    cfg = get_model_config("echoprime")
    video, text = cfg.video, cfg.text
    assert (video.kind, video.backbone, video.image_size, video.num_frames) == (
        "torchvision",
        "mvit_v2_s",
        224,
        16,
    )
    assert video.proj_bias and text.proj_bias and (text.kind, text.pool) == ("hf", "cls")
    assert (cfg.embed_dim, cfg.tokenizer, text.context_length, text.hf_config["hidden_size"]) == (
        512,
        "bert",
        512,
        768,
    )
    # EchoPrime normalises 0-255 pixels; echoclip's preprocessing works in [0, 1]
    mean = [round(255 * m, 4) for m in cfg.preprocess["mean"]]
    assert mean == [29.1106, 28.0768, 29.0964]
    with pytest.raises(ModelError, match="vocab.txt"):
        get_tokenizer("echoprime")
    with torch.device("meta"):
        model = create_model("echoprime", vocab_size=30522)
    assert model.video_tower.proj.bias is not None and model.text_tower.proj.bias is not None


def test_a_loaded_echoprime_model_saves_as_a_model_directory_with_its_vocabulary(published, tmp_path):
    from echoclip.models.factory import load_model

    model, tokenizer = published.loaded.model, published.loaded.tokenizer
    folder = model.save_pretrained(tmp_path / "m", tokenizer=tokenizer)
    assert (folder / "vocab.txt").read_text().split() == VOCAB
    again = get_tokenizer(folder)
    assert isinstance(again, WordPieceTokenizer) and again.context_length == model.config.text.context_length
    torch.testing.assert_close(again(REPORTS), tokenizer(REPORTS), rtol=0, atol=0)
    loaded = load_model(folder)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.encode_text(again(REPORTS)), model.encode_text(tokenizer(REPORTS)), rtol=0, atol=0
        )


def test_wordpiece_tokenizer_cuts_long_texts_at_the_context_length(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tokenizer = WordPieceTokenizer(tmp_path / "vocab.txt", context_length=6)
    ids = tokenizer(REPORTS)
    assert ids.shape == (2, 6) and ids[:, -1].tolist() == [3, 3]  # [SEP] kept at the end
    assert tokenizer("normal")[0].tolist() == [2, VOCAB.index("normal"), 3]
    assert (tokenizer.vocab_size, tokenizer.pad_token_id, tokenizer.eos_token_id) == (len(VOCAB), 0, 3)
    with pytest.raises(ModelError, match="no vocab.txt"):
        WordPieceTokenizer(tmp_path / "elsewhere")


def test_section_view_table_is_echoprimes():
    table = section_view_weights()
    assert table.views == ECHOPRIME_VIEWS
    assert table.weights.shape == (15, 11) and len(table.sections) == 15
    assert table.sections[0] == "Left Ventricle" and table.sections[-1] == "Pulmonary Veins"
    assert float(table.weights.min()) == 0.0 and float(table.weights.max()) == 1.0
    # every section's most informative view has weight 1 (to float32 rounding)
    assert all(math.isclose(m, 1.0, abs_tol=1e-6) for m in table.weights.max(dim=1).values.tolist())
    assert table.row("Aortic Valve")[ECHOPRIME_VIEWS.index("A5C")] == 1.0
    with pytest.raises(ModelError, match="unknown section"):
        table.row("Postoperative Findings")
