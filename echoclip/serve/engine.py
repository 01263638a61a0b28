"""What the web page asks of the model: embed a video or a text, search the index, read
zero-shot findings, draft a report. Everything is loaded once, when the server starts.

An index folder made by ``echoclip index`` holds ``videos/`` and ``reports/`` indexes (or
is one index itself); both were built from one model's embeddings, which must be the
model served (``Index.load`` checks its hash). Optionally, a section index
(``echoclip index --sections``) drafts a report for an uploaded video, and reference
reports with labels (``echoclip embed`` of the training split) give each device, finding
and the EF its neighbour label: the mean label of the nearest reports.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from echoclip.errors import DataError, VideoReadError

log = logging.getLogger(__name__)

PROMPT_SETS = ("ejection_fraction", "devices", "findings", "views")
# Index columns a result may show; anything else (file paths, patient ids) stays on the server.
RESULT_FIELDS = ("study_id", "view", "split", "report")
THUMBNAILS_CACHED = 512


class Engine:
    """A model, its tokenizer, the indexes of its embeddings and the prompt embeddings."""

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        index_dir: str | os.PathLike[str],
        *,
        device: str | None = None,
        prompt_sets: Sequence[str] = PROMPT_SETS,
        video_root: str | os.PathLike[str] | None = None,
        sections: str | os.PathLike[str] | None = None,
        neighbours: str | os.PathLike[str] | None = None,
        neighbours_k: int | None = None,
    ) -> None:
        import echoclip
        from echoclip.models.embed import default_device, model_device
        from echoclip.models.model_dir import model_identity
        from echoclip.zeroshot.predict import encode_prompts, model_logit_scale
        from echoclip.zeroshot.prompts import load_prompt_set

        identity = model_identity(model_dir)
        self.model_name = identity["name"]
        self.model_hash = identity["hash"]
        self.indexes = load_indexes(Path(index_dir), identity["hash"])
        self.sections = None if sections is None else load_section_index(Path(sections), identity["hash"])
        self.model = echoclip.load_model(model_dir)
        self.device = model_device(self.model, device or default_device())
        self.model.eval()
        self.tokenizer = echoclip.get_tokenizer(model_dir)
        self.prompt_sets = [load_prompt_set(p) for p in prompt_sets]
        texts = [t for ps in self.prompt_sets for t in ps.texts()]
        self.prompt_emb = encode_prompts(self.model, self.tokenizer, texts, device=self.device, cache=False)
        self.logit_scale = model_logit_scale(self.model)
        self.neighbours = None
        self.neighbours_k = None
        self._knn: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if neighbours is not None:
            self._load_neighbours(neighbours, neighbours_k)
        # one query at a time through the model: parallel requests would only share the same cores
        self._lock = threading.Lock()
        # indexes keep video paths relative to their data set's folder, which they record
        if video_root is None:
            video_root = next(
                (i.info.get("video_root") for i in self.indexes.values() if i.info.get("video_root")), None
            )
        self.video_root = Path(video_root) if video_root is not None else None
        self.thumbnail = lru_cache(maxsize=THUMBNAILS_CACHED)(self._thumbnail)

    @property
    def report_target(self) -> str:
        """The index a video query searches: reports when there is one, else the videos (with
        their study's report)."""
        return "reports" if "reports" in self.indexes else "videos"

    def embed_video(self, video: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """Unit-norm embedding ``[D]`` of a decoded :class:`~echoclip.data.video.Video`, and its
        layer statistics for :meth:`out_of_distribution` (``None`` for a model without a reference)."""
        from echoclip.models.embed import encode_videos

        with self._lock:
            out = encode_videos(self.model, [video], batch_size=1, on_error="raise", progress=False)
        return out.features[0], out.ood_features

    def embed_study(self, videos: Sequence[Any]) -> tuple[np.ndarray, np.ndarray | None]:
        """Unit-norm embedding ``[D]`` of a study's decoded videos, pooled by the model's study
        pooling (the mean without one; views unknown), and each video's layer statistics."""
        from echoclip.models.embed import encode_videos, pool_studies

        with self._lock:
            out = encode_videos(self.model, list(videos), batch_size=8, on_error="raise", progress=False)
            pooled = pool_studies(self.model, out.features, [0] * len(out.features), max_videos=len(videos))
        return pooled.features[0], out.ood_features

    def embed_text(self, text: str) -> np.ndarray:
        """Unit-norm embedding ``[D]`` of a report text."""
        from echoclip.models.embed import embed_reports

        with self._lock:
            emb = embed_reports(self.model, self.tokenizer, [text], progress=False)
        return emb[0]

    def search(self, target: str, query: np.ndarray, k: int) -> list[dict[str, Any]]:
        """The ``k`` nearest rows of the ``target`` index: rank, score, row and the public fields."""
        index = self.indexes.get(target)
        if index is None:
            raise DataError(f"the index has no {target}/ index to search")
        hits = index.search(query[None].astype(np.float32), min(k, len(index)))
        fields = [c for c in RESULT_FIELDS if c in hits.columns]
        return [
            {
                "rank": int(hit["rank"]),
                "score": float(hit["score"]),
                "row": int(hit["row"]),
                **{c: _text(hit[c]) for c in fields},
            }
            for _, hit in hits.iterrows()
        ]

    def zero_shot(self, emb: np.ndarray) -> dict[str, Any]:
        """EF with the spread of the model's belief, and a probability per device, finding and
        view; with reference reports, each EF, device and finding's neighbour label beside it."""
        from echoclip.zeroshot.prompts import BinaryTarget, RegressionTarget

        out: dict[str, Any] = {
            "ejection_fraction": None,
            "binary": [],
            "categorical": [],
            "neighbours_k": self.neighbours_k,
        }
        for prompt_set in self.prompt_sets:
            for name, target in prompt_set.targets.items():
                if isinstance(target, RegressionTarget):
                    if name == "ejection_fraction":
                        out["ejection_fraction"] = {
                            **self._regression(target, emb),
                            "neighbours": self._neighbour_label(name, emb, weighted=True),
                        }
                elif isinstance(target, BinaryTarget):
                    out["binary"].append(
                        {
                            "name": name,
                            "group": prompt_set.name,
                            **self._binary(target, emb),
                            "neighbours": self._neighbour_label(name, emb, weighted=False),
                        }
                    )
                else:
                    out["categorical"].append({"name": name, **self._categorical(target, emb)})
        return out

    def draft(self, emb: np.ndarray) -> dict[str, Any] | None:
        """The draft report of a video embedding from the section index: per section the
        consensus of the nearest reports' text, its study and similarity; ``None`` when the
        server has no section index."""
        from echoclip.zeroshot.drafts import model_temperature

        if self.sections is None:
            return None
        draft = self.sections.draft(emb[None], temperature=model_temperature(self.model))[0]
        out = draft.to_dict()
        for section in out["sections"]:
            section["study_id"] = _text(section["study_id"])
        return out

    def _load_neighbours(self, source: str | os.PathLike[str], k: int | None) -> None:
        """Reference reports and, per target with a label column among theirs, its known values."""
        from echoclip.zeroshot.neighbours import DEFAULT_K, load_neighbours

        self.neighbours = load_neighbours(source)
        self.neighbours_k = DEFAULT_K if k is None else int(k)
        if self.neighbours_k < 1:
            raise DataError(f"the neighbour count must be at least 1, not {self.neighbours_k}")
        columns = {str(c) for c in self.neighbours.labels.columns}
        for prompt_set in self.prompt_sets:
            for name, target in prompt_set.targets.items():
                label = getattr(target, "label", None)
                if (
                    target.kind not in ("regression", "binary")
                    or label is None
                    or label.column not in columns
                ):
                    continue
                emb, values = self.neighbours.for_label(label.column, label.below)
                known = np.isfinite(values)
                if known.any():
                    self._knn[name] = (emb[known], values[known])

    def _neighbour_label(self, name: str, emb: np.ndarray, *, weighted: bool) -> float | None:
        """The mean label of the ``k`` nearest reference reports (similarity-weighted for EF)."""
        from echoclip.zeroshot.scoring import knn_labels

        refs = self._knn.get(name)
        if refs is None:
            return None
        return float(knn_labels(emb[None], refs[0], refs[1], self.neighbours_k, weighted=weighted)[0])

    @property
    def has_ood_reference(self) -> bool:
        """Whether the model can tell a video unlike its training data (a calibrated reference)."""
        reference = getattr(self.model, "ood_reference", None)
        return reference is not None and reference.threshold is not None

    def out_of_distribution(self, features: np.ndarray | None) -> dict[str, Any] | None:
        """The video's OOD score (from its layer statistics; a study's: the mean of its videos'),
        the threshold, the flag and, when flagged, the warning to show; ``None`` for a model
        without a calibrated reference."""
        from echoclip.models.ood import OOD_WARNING, score_ood

        scores, flags = score_ood(self.model, features, rows=1)
        if flags is None:
            return None
        score = float(np.mean(scores))
        flagged = bool(score > self.model.ood_reference.threshold) if len(scores) > 1 else bool(flags[0])
        return {
            "score": score,
            "threshold": float(self.model.ood_reference.threshold),
            "out_of_distribution": flagged,
            "warning": OOD_WARNING if flagged else None,
        }

    def _emb(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.prompt_emb[t] for t in texts])

    def _regression(self, target: Any, emb: np.ndarray) -> dict[str, Any]:
        """The default scorer's value (EchoCLIP's rank method) and the standard deviation of the
        softmax over candidate values: a wide spread means the prompts barely tell values apart."""
        from echoclip.zeroshot.scoring import DEFAULT_METHODS, get_scorer

        prompt_emb = np.stack([self._emb(row) for row in target.prompts()])  # [V, P, D]
        values = target.values()
        method = DEFAULT_METHODS["regression"]
        value = float(get_scorer("regression", method)(emb[None], prompt_emb, values)[0])
        logits = self.logit_scale * (prompt_emb @ emb).mean(axis=1)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        mean = float(p @ values)
        sd = float(np.sqrt(max(0.0, float(p @ values**2) - mean**2)))
        return {"value": value, "sd": sd, "unit": target.unit, "method": method}

    def _binary(self, target: Any, emb: np.ndarray) -> dict[str, Any]:
        """A probability: the target's calibration when it has one, else the softmax of the
        model's logits over its positive and negative prompts."""
        from echoclip.zeroshot.calibration import Calibration
        from echoclip.zeroshot.scoring import calibrated, class_probabilities, similarity

        positive = self._emb(target.positive_texts())
        negative = self._emb(target.negative_texts()) if target.negative else None
        described = {"description": target.description or target.name.replace("_", " ")}
        if target.calibration is not None:
            p = calibrated(
                emb[None], positive, negative, calibration=Calibration.from_dict(target.calibration)
            )
            return {**described, "probability": float(p[0]), "method": "calibrated"}
        if negative is None:
            score = similarity(emb[None], positive)
            return {**described, "probability": None, "score": float(score[0]), "method": "similarity"}
        p = class_probabilities(emb[None], [positive, negative], logit_scale=self.logit_scale)
        return {**described, "probability": float(p[0, 0]), "method": "softmax"}

    def _categorical(self, target: Any, emb: np.ndarray) -> dict[str, Any]:
        from echoclip.zeroshot.scoring import class_probabilities

        classes = list(target.classes)
        p = class_probabilities(
            emb[None], [self._emb(target.class_texts(c)) for c in classes], logit_scale=self.logit_scale
        )[0]
        return {
            "predicted": classes[int(np.argmax(p))],
            "probabilities": {c: float(v) for c, v in zip(classes, p, strict=True)},
        }

    def _thumbnail(self, row: int) -> bytes:
        """JPEG of the middle frame of indexed video ``row``; DataError when it cannot be shown."""
        from echoclip.data.video import load_video
        from echoclip.serve.media import thumbnail

        index = self.indexes.get("videos")
        if index is None or index.metadata is None or "video_path" not in index.metadata.columns:
            raise DataError("the index holds no video files to show")
        if not 0 <= row < len(index):
            raise DataError(f"no video {row}: the index has {len(index)}")
        path = Path(str(index.metadata["video_path"].iloc[row]))
        if self.video_root is not None and not path.is_absolute():
            path = self.video_root / path
        try:
            video = load_video(path, indices=lambda n, fps: [n // 2])
        except VideoReadError:
            log.warning("thumbnail of indexed video %d: its file cannot be read", row)
            raise DataError(f"the file of video {row} cannot be read on the server") from None
        return thumbnail(video.frames[0])


def load_section_index(path: Path, model_hash: str) -> Any:
    """The section index at ``path``; one that records another model than the one served is refused."""
    from echoclip.zeroshot.drafts import SectionIndex, read_section_index_info

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    info = read_section_index_info(path)
    # an index built without a model identity cannot be checked, only trusted
    return SectionIndex.load(path, expected_model_hash=model_hash if info.get("model") else None)


def load_indexes(path: Path, model_hash: str) -> dict[str, Any]:
    """``{"videos": Index, "reports": Index}``, whichever of them ``path`` holds.

    A folder that is one index itself counts as ``videos`` when its rows name video files,
    else as ``reports``.
    """
    from echoclip.retrieval import Index, RetrievalError, find_index_folder

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    folders: dict[str, Path] = {}
    for target in ("videos", "reports"):
        try:
            folders[target] = find_index_folder(path, target)
        except RetrievalError:
            continue
    if not folders:
        raise DataError(
            f"{path}: no index here, nor videos/ or reports/ indexes (build them with `echoclip index`)"
        )
    if len(set(folders.values())) == 1:  # a single index: what its rows are decides its role
        index = Index.load(next(iter(folders.values())), expected_model_hash=model_hash)
        columns = [] if index.metadata is None else list(index.metadata.columns)
        return {"videos" if "video_path" in columns else "reports": index}
    return {target: Index.load(folder, expected_model_hash=model_hash) for target, folder in folders.items()}


def _text(value: Any) -> str | None:
    """A result field as text; a missing value (None, NaN, NA) as None."""
    import pandas as pd

    return None if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)) else str(value)
