"""Loading EchoPrime's released checkpoints.

EchoPrime (Vukadinovic et al., 2024; ``echonet/EchoPrime`` on GitHub) publishes
inference weights as plain PyTorch state dicts, in ``model_data/weights/`` of its
release archive::

    echo_prime_encoder.pt       torchvision's ``mvit_v2_s`` with the last layer of its
                                classifier (``head.1``) replaced by a linear 768 -> 512
                                layer with bias; keys exactly torchvision's
    echo_prime_text_encoder.pt  a module of two parts: ``backbone``, a transformers
                                ``BertForMaskedLM`` of BiomedBERT-base's architecture
                                (keys ``backbone.bert.*``, and ``backbone.cls.*``: the
                                masked-LM head, unused), and ``text_projection``, a linear
                                768 -> 512 layer with bias
    view_classifier.pt          torchvision's ``convnext_base`` with the last layer of its
                                classifier (``classifier.2``) giving 11 outputs, the views
                                of :data:`ECHOPRIME_VIEWS` in that order

How EchoPrime uses them (behaviour read from its inference code; none of it is copied):

- video: a clip is 16 frames of 224 x 224 (the first 32 frames of a video, every second
  one, zero-padded when shorter); each frame is centre-cropped to a square, 10 % is cut
  off each side, and it is resized bicubically; pixels in 0-255 are normalised by the
  mean (29.11, 28.08, 29.10) and std (47.99, 46.46, 47.20). The embedding is the
  encoder's 512-d output, not normalised.
- text: BiomedBERT's uncased WordPiece tokenizer
  (``microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract``, read from the Hugging Face
  hub and not in the archive), at most 512 tokens; the embedding is the projection of
  the last layer's features at the first token (``[CLS]``).
- views: the view classifier reads the first frame of the same normalised clip.
- studies: each video's embedding is weighted, per report section, by its classified
  view's entry in a fixed table of 15 sections x 11 views, kept as
  ``configs/views/echoprime.json`` (:func:`section_view_weights`).

:func:`load_echoprime` maps these onto the ``echoprime`` config
(``configs/models/echoprime.json``): a ``torchvision`` ``mvit_v2_s`` video tower whose
projection (with bias) is EchoPrime's ``head.1``, and an ``hf`` BERT text tower pooled
at ``[CLS]`` whose projection is ``text_projection``. Its embeddings equal EchoPrime's
for the same input tensors (in training mode, the video tower lacks the dropout that
torchvision's head puts before ``head.1``). Two parameters are not in the checkpoints and are filled:
BERT's pooler (the text tower's transformers ``BertModel`` has one, which pooling at
``[CLS]`` never reads; zeros) and ``logit_scale`` (EchoPrime releases no temperature;
the config's initial value). The ``echoprime`` preprocessing (that mean and std, in
[0, 1] units) resizes and centre-crops frames without EchoPrime's 10 % cut, and takes
consecutive frames at the source rate from the middle of a video; for EchoPrime's exact
clips, build the tensor as above.

EchoPrime's code and weights come under its own licence (an academic, non-commercial
one at the time of writing): users download the weights themselves; echoclip only reads
local files, with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from echoclip.errors import ModelError
from echoclip.models.clip_model import EchoCLIP
from echoclip.models.config import ModelConfig
from echoclip.models.model_dir import load_torch_weights, load_weights_checked
from echoclip.models.view_classifier import ViewClassifier

ENCODER_FILE = "echo_prime_encoder.pt"
TEXT_ENCODER_FILE = "echo_prime_text_encoder.pt"
VIEW_CLASSIFIER_FILE = "view_classifier.pt"
VIEW_CLASSIFIER_ARCH = "convnext_base"
CONFIG_NAME = "echoprime"

# the view classifier's outputs, in order
ECHOPRIME_VIEWS = (
    "A2C",
    "A3C",
    "A4C",
    "A5C",
    "Apical_Doppler",
    "Doppler_Parasternal_Long",
    "Doppler_Parasternal_Short",
    "Parasternal_Long",
    "Parasternal_Short",
    "SSN",
    "Subcostal",
)

_VIDEO_HEAD = "head.1."  # torchvision's mvit head is (dropout, linear): the linear is EchoPrime's projection
_BERT = "backbone.bert."
_MLM_HEAD = "backbone.cls."
_TEXT_PROJECTION = "text_projection."
_WORDS = _BERT + "embeddings.word_embeddings.weight"
_POSITIONS = _BERT + "embeddings.position_embeddings.weight"
# buffers that older transformers saved in state dicts and newer ones rebuild
_BERT_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


class EchoPrime(NamedTuple):
    """What :func:`load_echoprime` returns (a tuple: ``model, tokenizer, views = load_echoprime(...)``)."""

    model: EchoCLIP
    tokenizer: WordPieceTokenizer | None
    view_classifier: ViewClassifier | None


def load_echoprime(
    folder: str | os.PathLike[str],
    *,
    vocab: str | os.PathLike[str] | None = None,
    text_config: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
) -> EchoPrime:
    """``(model, tokenizer, view_classifier)`` from EchoPrime's released weights, in eval mode.

    Args:
        folder: the folder holding ``echo_prime_encoder.pt`` and ``echo_prime_text_encoder.pt``
            (and, optionally, ``view_classifier.pt``): the release's ``model_data/weights``,
            or ``model_data`` itself.
        vocab: a local folder with BiomedBERT's ``vocab.txt`` (EchoPrime reads its tokenizer
            from the hub; it is not in the archive). Without it the tokenizer is ``None``.
        text_config: the BERT architecture (a transformers config dict with ``model_type``),
            when it is not BiomedBERT-base's; the vocabulary size and the number of positions
            are read from the checkpoint.

    The view classifier is ``None`` when the folder has no ``view_classifier.pt``.

    Example::

        model, tokenizer, views = load_echoprime("model_data", vocab="BiomedBERT")
        v = model.encode_video(clips)                 # [N, 512], as EchoPrime's encoder
        t = model.encode_text(tokenizer(["Normal left ventricular size."]))
        probs = views.classify_views(clips)           # [N, 11], columns ECHOPRIME_VIEWS
    """
    weights = _weights_folder(Path(folder))
    video_file, text_file = weights / ENCODER_FILE, weights / TEXT_ENCODER_FILE
    if not text_file.is_file():
        raise ModelError(f"{text_file}: no such file (EchoPrime's text encoder, which the model needs)")
    video_state = _read_state_dict(video_file)
    text_state = _read_state_dict(text_file)
    config = echoprime_config(text_state, text_config=text_config, source=str(text_file))

    model = EchoCLIP(config)
    load_weights_checked(model.video_tower, convert_video_state_dict(video_state), source=str(video_file))
    load_weights_checked(
        model.text_tower, convert_text_state_dict(text_state, model.text_tower), source=str(text_file)
    )
    tokenizer = None
    if vocab is not None:
        tokenizer = WordPieceTokenizer(vocab, context_length=config.text.context_length)
        if tokenizer.vocab_size > config.text.vocab_size:
            raise ModelError(
                f"{vocab}: the vocabulary has {tokenizer.vocab_size} tokens but the text encoder's has "
                f"{config.text.vocab_size}: not the vocabulary of these weights"
            )
        model.tokenizer = tokenizer
    view_file = weights / VIEW_CLASSIFIER_FILE
    views = load_view_classifier(view_file) if view_file.is_file() else None
    if device is not None:
        model.to(device)
        if views is not None:
            views.to(device)
    return EchoPrime(model.eval(), tokenizer, views)


def echoprime_config(
    text_state: Mapping[str, torch.Tensor],
    text_config: Mapping[str, Any] | None = None,
    source: str = TEXT_ENCODER_FILE,
) -> ModelConfig:
    """The ``echoprime`` config, its text tower sized by EchoPrime's text encoder state dict."""
    from echoclip.models.factory import get_model_config

    base = get_model_config(CONFIG_NAME)
    for key in (_WORDS, _POSITIONS):
        if key not in text_state:
            raise ModelError(f"{source}: not EchoPrime's text encoder (no {key})")
    vocab_size, positions = (int(text_state[k].shape[0]) for k in (_WORDS, _POSITIONS))
    hf_config = dict(base.text.hf_config if text_config is None else text_config)
    hf_config["max_position_embeddings"] = positions
    return base.replace(text={"hf_config": hf_config, "vocab_size": vocab_size, "context_length": positions})


def convert_video_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """EchoPrime's ``mvit_v2_s`` keys -> keys of the ``torchvision`` video tower."""
    return {
        ("proj." + key.removeprefix(_VIDEO_HEAD) if key.startswith(_VIDEO_HEAD) else "backbone." + key): value
        for key, value in state_dict.items()
    }


def convert_text_state_dict(
    state_dict: Mapping[str, torch.Tensor], tower: torch.nn.Module | None = None
) -> dict[str, torch.Tensor]:
    """EchoPrime's text encoder keys -> keys of the ``hf`` text tower.

    The masked-LM head and saved buffers are dropped; ``tower`` (the text tower to load)
    gets zeros for BERT's pooler, which the checkpoint lacks and ``[CLS]`` pooling never reads.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(_MLM_HEAD):
            continue
        if key.startswith(_BERT):
            name = key.removeprefix(_BERT)
            if name not in _BERT_BUFFERS:
                out["model." + name] = value
        elif key.startswith(_TEXT_PROJECTION):
            out["proj." + key.removeprefix(_TEXT_PROJECTION)] = value
        else:
            out[key] = value  # reported as unexpected
    if tower is not None:
        for key, value in tower.state_dict().items():
            if key.startswith("model.pooler.") and key not in out:
                out[key] = torch.zeros_like(value)
    return out


def load_view_classifier(file: str | os.PathLike[str]) -> ViewClassifier:
    """EchoPrime's view classifier (``view_classifier.pt``), in eval mode."""
    file = Path(file)
    classifier = ViewClassifier(ECHOPRIME_VIEWS, arch=VIEW_CLASSIFIER_ARCH)
    state = {"net." + k: v for k, v in _read_state_dict(file).items()}
    load_weights_checked(classifier, state, source=str(file))
    return classifier.eval()


class WordPieceTokenizer:
    """A BERT WordPiece tokenizer (EchoPrime's: BiomedBERT's uncased vocabulary), called as
    echoclip's tokenizers are: ``tokenizer(texts) -> Long [B, L]``.

    Each text is ``[CLS] ... [SEP]``, cut to ``context_length`` tokens. Rows are padded to
    the longest text of the call, not to ``context_length``: the text tower masks padding
    out, so more of it would change only the cost.

    Args:
        vocab: a folder with ``vocab.txt`` (as BiomedBERT's on the Hugging Face hub), or that file.
    """

    def __init__(self, vocab: str | os.PathLike[str], context_length: int = 512) -> None:
        from transformers import BertTokenizerFast

        folder = Path(vocab)
        if folder.name == "vocab.txt":
            folder = folder.parent
        if not (folder / "vocab.txt").is_file():
            raise ModelError(f"{folder}: no vocab.txt (a BERT WordPiece vocabulary)")
        self.hf = BertTokenizerFast.from_pretrained(str(folder), local_files_only=True)
        self.context_length = context_length
        self.vocab_size = len(self.hf)
        self.pad_token_id = int(self.hf.pad_token_id)
        self.eos_token_id = int(self.hf.sep_token_id)

    def save(self, folder: str | os.PathLike[str]) -> None:
        """Write the vocabulary to ``folder`` as Hugging Face writes a BERT tokenizer
        (``vocab.txt``, ``tokenizer.json``, ``tokenizer_config.json``), so that a model
        directory keeps it and ``get_tokenizer`` reads it back."""
        self.hf.save_pretrained(str(folder))
        vocab = sorted(self.hf.get_vocab().items(), key=lambda item: item[1])
        (Path(folder) / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        encoded = self.hf(
            texts,
            padding="longest",
            truncation=True,
            max_length=context_length or self.context_length,
            return_tensors="pt",
        )
        return encoded["input_ids"]


@dataclass(frozen=True)
class SectionViewWeights:
    """EchoPrime's fixed weight of each view for each report section.

    Attributes:
        sections: the report sections (rows), views: the views (columns, :data:`ECHOPRIME_VIEWS`),
        weights: ``float32 [len(sections), len(views)]``.
    """

    sections: tuple[str, ...]
    views: tuple[str, ...]
    weights: torch.Tensor

    def row(self, section: str) -> torch.Tensor:
        """One section's weight of each view."""
        try:
            return self.weights[self.sections.index(section)]
        except ValueError:
            raise ModelError(f"unknown section {section!r}; known: {list(self.sections)}") from None


def section_view_weights() -> SectionViewWeights:
    """The table of ``configs/views/echoprime.json`` (from EchoPrime's ``assets/MIL_weights.csv``)."""
    from importlib.resources import files

    data = json.loads((files("echoclip.configs") / "views" / "echoprime.json").read_text())
    return SectionViewWeights(
        sections=tuple(data["sections"]),
        views=tuple(data["views"]),
        weights=torch.tensor(data["weights"], dtype=torch.float32),
    )


def _weights_folder(folder: Path) -> Path:
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such EchoPrime weights folder")
    for candidate in (folder, folder / "weights"):
        if (candidate / ENCODER_FILE).is_file():
            return candidate
    raise ModelError(
        f"{folder}: no {ENCODER_FILE} here or in weights/ (EchoPrime's release unpacks to model_data/weights/)"
    )


def _read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    state = load_torch_weights(file)
    bad = [k for k, v in state.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise ModelError(f"{file}: not a state dict of tensors (entries such as {bad[:3]} are not tensors)")
    return dict(state)
