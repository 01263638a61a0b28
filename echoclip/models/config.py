"""Model configs: JSON files (``configs/models/*.json``) read into frozen dataclasses.

A config is data: the factory turns it into modules, a model directory stores it as
``config.json``, and :meth:`ModelConfig.to_dict` / :meth:`ModelConfig.from_dict`
round-trip exactly. Unknown keys are errors, so a typo never silently falls back to
a default.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from echoclip.errors import ModelError

FRAME_BACKBONES = ("convnet", "timm", "open_clip")
AGGREGATIONS = ("mean", "stats", "transformer")
TEXT_POOLS = {"clip": ("eos", "argmax", "mean"), "hf": ("cls", "mean")}
TOKENIZER_KINDS = ("echo", "clip", "echoclip-r", "bert")
# the view vocabulary of study poolings: EchoPrime's view classes in their output order,
# under the names echoclip uses for them (PLAX for Parasternal_Long, ...)
STUDY_VIEWS: tuple[str, ...] = (
    "A2C",
    "A3C",
    "A4C",
    "A5C",
    "Apical_Doppler",
    "Doppler_PLAX",
    "Doppler_PSAX",
    "PLAX",
    "PSAX",
    "SSN",
    "Subcostal",
)
# the fields that only a study pooling reads; a config without one leaves them out of to_dict
STUDY_FIELDS = ("study_pooling", "study_views", "study_video_dropout", "study_view_dropout", "study_options")


@dataclass(frozen=True)
class VideoTowerConfig:
    """The video tower: what it is built from and the clip shape it takes.

    Attributes:
        kind: ``videomae`` (a ViT over space-time tubelets), ``frames`` (an image
            backbone applied per frame, then temporal aggregation) or ``torchvision``
            (a video network from ``torchvision.models.video``).
        image_size, num_frames: the clip the tower takes, ``[B, 3, num_frames, image_size, image_size]``.
        patch_size, tubelet_size, width, layers, heads, mlp_ratio: the ViT of ``videomae``.
        pool: ``mean`` or ``attentive`` pooling of ``videomae`` tokens.
        backbone: for ``frames``, ``convnet`` (a plain conv stack), ``timm`` (any timm
            model by name) or ``open_clip`` (an open_clip image tower, EchoCLIP's shape);
            for ``torchvision``, the model name (``r2plus1d_18``, ``mvit_v2_s``).
        backbone_kwargs: arguments of the backbone (``widths`` of ``convnet``, the timm
            ``model_name``, the open_clip ``vision_cfg``).
        aggregation: how ``frames`` combines frame features over time: ``mean``
            (EchoCLIP), ``stats`` (mean, std and range over time, then an MLP) or
            ``transformer`` (a small temporal transformer, PanEcho-style).
        hidden: width of the ``stats`` MLP (default: the frame feature width).
        temporal_layers, temporal_heads: the temporal transformer of ``aggregation="transformer"``.
        projection: a linear projection to the model's embedding dimension at the end
            (off for open_clip backbones, which project themselves).
        proj_bias: give that projection a bias (EchoPrime's video encoder has one).
        grad_checkpointing: trade compute for memory in the backbone.
    """

    kind: str
    image_size: int = 112
    num_frames: int = 16
    patch_size: int = 16
    tubelet_size: int = 2
    width: int = 192
    layers: int = 6
    heads: int = 3
    mlp_ratio: float = 4.0
    pool: str = "mean"
    backbone: str = "convnet"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    aggregation: str = "mean"
    hidden: int | None = None
    temporal_layers: int = 2
    temporal_heads: int = 4
    projection: bool = True
    proj_bias: bool = False
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.proj_bias and not self.projection:
            raise ModelError("video: proj_bias needs projection (there is no projection to give a bias)")
        # the kind itself is checked by the tower registry, which users may extend
        _check_positive(
            "video",
            self,
            (
                "image_size",
                "num_frames",
                "patch_size",
                "tubelet_size",
                "width",
                "layers",
                "heads",
                "temporal_layers",
                "temporal_heads",
            ),
        )
        if self.kind == "videomae":
            _check_choice("video.pool", self.pool, ("mean", "attentive"))
            if self.image_size % self.patch_size or self.num_frames % self.tubelet_size:
                raise ModelError(
                    f"video: image_size {self.image_size} must be a multiple of patch_size {self.patch_size} "
                    f"and num_frames {self.num_frames} a multiple of tubelet_size {self.tubelet_size}"
                )
            if self.width % self.heads:
                raise ModelError(f"video: width {self.width} is not divisible by heads {self.heads}")
        if self.kind == "frames":
            _check_choice("video.backbone", self.backbone, FRAME_BACKBONES)
            _check_choice("video.aggregation", self.aggregation, AGGREGATIONS)


@dataclass(frozen=True)
class TextTowerConfig:
    """The report tower.

    Attributes:
        kind: ``clip`` (open_clip's causal text transformer) or ``hf`` (a transformers
            encoder built from ``hf_config`` or loaded from the local folder ``hf_path``).
        context_length, vocab_size, width, heads, layers, mlp_ratio, quick_gelu, proj_bias:
            the ``clip`` transformer, as open_clip's ``text_cfg``.
        pool: ``eos`` (features at the first end token, else the last non-pad token),
            ``argmax`` (at the largest id: CLIP's end token) or ``mean`` (over the
            tokens that are not padding) for ``clip``; ``cls`` or ``mean`` for ``hf``.
        eos_token_id, pad_token_id: the tokenizer's special ids (filled from the tokenizer).
        value_embeddings: add a learned function of each number token's value to its
            embedding, so that prompts over a range of values start ordered.
        value_frequencies, value_scale: Fourier features of ``value / value_scale``.
            Fewer frequencies make a smoother value axis: ``echoclip-tiny`` uses 3
            (periods of 2, 1 and 0.5 ``value_scale``), which read EF better in zero-shot
            than 6 (docs/experiments.md).
    """

    kind: str = "clip"
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0
    quick_gelu: bool = False
    proj_bias: bool = False
    pool: str = "eos"
    eos_token_id: int | None = None
    pad_token_id: int = 0
    value_embeddings: bool = False
    value_frequencies: int = 6
    value_scale: float = 100.0
    hf_config: dict[str, Any] | None = None
    hf_path: str | None = None
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.kind in TEXT_POOLS:
            _check_choice(f"text.pool (for kind {self.kind!r})", self.pool, TEXT_POOLS[self.kind])
        _check_positive(
            "text", self, ("context_length", "vocab_size", "width", "heads", "layers", "value_frequencies")
        )
        if self.kind == "hf" and (self.hf_config is None) == (self.hf_path is None):
            raise ModelError("text: an 'hf' tower needs exactly one of hf_config and hf_path")
        if self.kind == "clip" and self.width % self.heads:
            raise ModelError(f"text: width {self.width} is not divisible by heads {self.heads}")


@dataclass(frozen=True)
class ModelConfig:
    """A whole EchoCLIP model: two towers, the shared embedding size, the temperature.

    Attributes:
        name: the config's name (the JSON file's stem for built-in configs).
        embed_dim: size of the joint video/text embedding.
        video, text: the towers.
        tokenizer: ``echo`` (:class:`echoclip.tokenizer.EchoTokenizer`), ``clip``
            (open_clip's BPE tokenizer, as the published EchoCLIP), ``echoclip-r``
            (:class:`echoclip.tokenizer.EchoClipRTokenizer`, built from its phrase file) or
            ``bert`` (a BERT WordPiece vocabulary, as EchoPrime's BiomedBERT: built from its
            ``vocab.txt``, see :mod:`echoclip.models.echoprime_compat`).
        logit_scale_init: initial log of the logit scale (open_clip: ``log(1/0.07)``).
        learn_logit_scale: train the temperature, or keep it fixed at its initial value.
        logit_bias_init: a learnable logit bias for the SigLIP loss (``None``: no bias).
        preprocess: fields of :class:`echoclip.data.transforms.PreprocessConfig` other than
            the clip shape (``fps``, ``mean``, ``std``), which the video tower fixes.
        scale_embedding: add an embedding of the clip's cm per pixel to the video embedding
            (:class:`echoclip.models.scale_embedding.ScaleEmbedding`), so sizes can be read.
        scale_dropout: the rate at which training hides a known scale (the unknown vector
            is learned from these).
        study_pooling: how ``encode_study`` pools a study's video embeddings, a name in
            :data:`echoclip.models.study_encoder.STUDY_POOLINGS` (``mean``, ``echoprime``,
            ``attention``); ``None``: no study module, and ``encode_study`` takes the mean.
        study_views: the view names that view ids index (:data:`STUDY_VIEWS` by default).
        study_video_dropout, study_view_dropout: in training, the rate at which a study's
            videos are dropped (never all) and views hidden (replaced by unknown).
        study_options: keyword arguments of the pooling (``heads``, ``section``).
    """

    name: str
    embed_dim: int
    video: VideoTowerConfig
    text: TextTowerConfig
    tokenizer: str = "echo"
    logit_scale_init: float = math.log(1 / 0.07)
    learn_logit_scale: bool = True
    logit_bias_init: float | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)
    scale_embedding: bool = False
    scale_dropout: float = 0.0
    study_pooling: str | None = None
    study_views: tuple[str, ...] = STUDY_VIEWS
    study_video_dropout: float = 0.0
    study_view_dropout: float = 0.0
    study_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_choice("tokenizer", self.tokenizer, TOKENIZER_KINDS)
        self._check_study()
        if not (isinstance(self.embed_dim, int) and self.embed_dim > 0):
            raise ModelError(f"embed_dim must be a positive integer, got {self.embed_dim!r}")
        bad = sorted(set(self.preprocess) - {"fps", "mean", "std", "field_cm"})
        if bad:
            raise ModelError(
                f"preprocess: unknown keys {bad}; the video tower sets image_size and num_frames"
            )
        if self.scale_embedding and self.video.kind == "frames" and self.video.aggregation == "mean":
            raise ModelError(
                "scale_embedding: a frames tower with mean aggregation embeds single frames; "
                "give it another aggregation to condition on the scale"
            )
        if not 0.0 <= self.scale_dropout < 1.0:
            raise ModelError(f"scale_dropout must be in [0, 1), got {self.scale_dropout!r}")
        if self.text.value_embeddings and self.tokenizer != "echo":
            raise ModelError(
                f"text.value_embeddings needs the 'echo' tokenizer's value tokens, not {self.tokenizer!r}"
            )

    def _check_study(self) -> None:
        # the pooling's name is checked by the pooling registry, which users may extend
        views = self.study_views
        if isinstance(views, str) or not all(isinstance(v, str) and v for v in views) or not views:
            raise ModelError(f"study_views must be a list of view names, got {views!r}")
        if len(set(views)) != len(views):
            raise ModelError(f"study_views must be distinct, got {list(views)}")
        object.__setattr__(self, "study_views", tuple(views))  # JSON gives a list
        for name in ("study_video_dropout", "study_view_dropout"):
            rate = getattr(self, name)
            if not (isinstance(rate, (int, float)) and 0.0 <= rate < 1.0):
                raise ModelError(f"{name} must be in [0, 1), got {rate!r}")
        if not isinstance(self.study_options, dict):
            raise ModelError(f"study_options must be an object, got {self.study_options!r}")
        if self.study_pooling is None:
            changed = [f.name for f in fields(self) if f.name in STUDY_FIELDS and not _is_default(self, f)]
            if changed:
                raise ModelError(f"{', '.join(changed)}: set study_pooling to use them")

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready data; without a study pooling, the study fields are left
        out, so such a model's ``config.json`` is as before they existed."""
        d = asdict(self)
        if self.study_pooling is None:
            for name in STUDY_FIELDS:
                d.pop(name)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], name: str | None = None) -> ModelConfig:
        """Build from a JSON-style dict; ``name`` is used when the dict has none."""
        d = dict(d)
        if name is not None:
            d.setdefault("name", name)
        _check_keys("model config", d, cls)
        for key, sub in (("video", VideoTowerConfig), ("text", TextTowerConfig)):
            if not isinstance(d.get(key), dict):
                raise ModelError(f"model config: {key!r} must be an object")
            _check_keys(key, d[key], sub)
            d[key] = sub(**d[key])
        if "name" not in d:
            raise ModelError("model config has no name")
        return cls(**d)

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with top-level fields changed; ``video``/``text`` may be dicts of changes."""
        for key in ("video", "text"):
            if isinstance(changes.get(key), dict):
                sub = getattr(self, key)
                _check_keys(key, changes[key], type(sub))
                changes[key] = replace(sub, **changes[key])
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise ModelError(
                f"unknown model config fields {unknown}; known: {sorted(f.name for f in fields(self))}"
            )
        return replace(self, **changes)


def load_config_file(path: str | Path) -> ModelConfig:
    """Read one ``*.json`` model config; its name defaults to the file's stem."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: no such model config file") from None
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ModelError(f"{path}: a model config must be a JSON object")
    try:
        return ModelConfig.from_dict(d, name=path.stem)
    except (ModelError, TypeError) as e:
        raise ModelError(f"{path}: {e}") from None


def _is_default(cfg: Any, f: Any) -> bool:
    default = f.default_factory() if f.default_factory is not MISSING else f.default
    return getattr(cfg, f.name) == default


def _check_keys(where: str, d: dict[str, Any], cls: type) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ModelError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")


def _check_choice(what: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ModelError(f"{what} must be one of {list(choices)}, got {value!r}")


def _check_positive(where: str, cfg: Any, names: tuple[str, ...]) -> None:
    for n in names:
        v = getattr(cfg, n)
        if not (isinstance(v, int) and not isinstance(v, bool) and v > 0):
            raise ModelError(f"{where}.{n} must be a positive integer, got {v!r}")
