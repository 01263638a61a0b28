"""The contrastive video-report objective: report augmentation, open_clip losses, validation."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from echoclip.errors import ConfigError
from echoclip.train.config import ContrastiveConfig

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def split_sentences(report: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(report.strip()) if s.strip()]


def augment_report(report: str, rng: random.Random, dropout: float, shuffle: bool) -> str:
    """Drop each sentence with probability ``dropout`` (never all of them), optionally shuffle.

    Training on shortened reports keeps single-finding prompts ("A PACEMAKER LEAD IS
    SEEN.") in distribution for zero-shot use.
    """
    sentences = split_sentences(report)
    if len(sentences) <= 1:
        return report.strip()
    kept = [s for s in sentences if rng.random() >= dropout]
    if not kept:
        kept = [rng.choice(sentences)]
    if shuffle:
        rng.shuffle(kept)
    return " ".join(kept)


_ENUMERATOR = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s*")
_LETTER = re.compile(r"[A-Za-z]")


def sentence_targets(reports: list[str]) -> tuple[list[str], torch.Tensor]:
    """The distinct sentences of a batch's reports, and which reports hold each one.

    Returns ``(sentences, holders)`` with ``holders[s, b]`` true when report ``b``
    contains sentence ``s``. Sentences are compared without case, list numbering or
    spacing, so "2) Trivial MR." in one report and "TRIVIAL MR." in another are one
    sentence with two positive videos rather than a false negative.
    """
    keys: dict[str, int] = {}
    sentences: list[str] = []
    pairs: list[tuple[int, int]] = []
    for b, report in enumerate(reports):
        for sentence in split_sentences(report):
            text = _ENUMERATOR.sub("", sentence).strip()
            if not _LETTER.search(text):
                continue  # a bare list number ("2.") left by the sentence split
            key = sentence_key(text)
            if key not in keys:
                keys[key] = len(sentences)
                sentences.append(text)
            pairs.append((keys[key], b))
    holders = torch.zeros(len(sentences), len(reports), dtype=torch.bool)
    for s, b in pairs:
        holders[s, b] = True
    return sentences, holders


def sentence_key(sentence: str) -> str:
    """What makes two sentences one: the text without case, list numbering or extra spacing."""
    return " ".join(_ENUMERATOR.sub("", sentence).strip().lower().split())


def report_holders(sentences: list[str], reports: list[str]) -> torch.Tensor:
    """``[S, B]``: true where report ``b`` (as the text tower reads it) holds sentence ``s``."""
    held = [{sentence_key(t) for t in split_sentences(report)} for report in reports]
    keys = [sentence_key(t) for t in sentences]
    return torch.tensor([[k in h for h in held] for k in keys], dtype=torch.bool).reshape(
        len(keys), len(reports)
    )


class ConceptMatcher:
    """Which concepts (name -> regular expression) the sentences and reports of a batch name.

    A report names a device or a finding in one of many phrasings ("TAVR in situ",
    "transcatheter aortic valve, well seated"). Concepts are matched sentence by
    sentence, and each sentence's matches are remembered: reports repeat their
    sentences, so after the first epoch a batch costs no regular-expression search.
    Strings are compiled to match without case.
    """

    _MAX_REMEMBERED = 1_000_000

    def __init__(self, patterns: Mapping[str, str | re.Pattern[str]] | None = None) -> None:
        self.patterns: dict[str, re.Pattern[str]] = {}
        for name, pattern in (patterns or {}).items():
            if isinstance(pattern, re.Pattern):
                self.patterns[name] = pattern
                continue
            try:
                self.patterns[name] = re.compile(pattern, re.IGNORECASE)
            except (re.error, TypeError) as e:
                raise ConfigError(f"concept {name!r}: invalid regular expression {pattern!r}: {e}") from None
        self._named: dict[str, tuple[bool, ...]] = {}

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def _sentence(self, sentence: str) -> tuple[bool, ...]:
        named = self._named.get(sentence)
        if named is None:
            if len(self._named) >= self._MAX_REMEMBERED:
                self._named.clear()
            named = self._named[sentence] = tuple(bool(p.search(sentence)) for p in self.patterns.values())
        return named

    def sentences(self, sentences: list[str]) -> torch.Tensor:
        """``[S, C]``: true where sentence ``s`` names concept ``c``."""
        rows = [self._sentence(t) for t in sentences]
        return torch.tensor(rows, dtype=torch.bool).reshape(len(sentences), len(self.patterns))

    def reports(self, reports: list[str]) -> torch.Tensor:
        """``[B, C]``: true where one of report ``b``'s sentences names concept ``c``."""
        out = torch.zeros(len(reports), len(self.patterns), dtype=torch.bool)
        for b, report in enumerate(reports):
            sentences = split_sentences(report)
            if sentences:
                out[b] = self.sentences(sentences).any(dim=0)
        return out

    def shared(self, sentences: list[str], reports: list[str]) -> torch.Tensor:
        """``[S, B]``: true where sentence ``s`` and report ``b`` name a concept in common.

        To a sentence of one phrasing, a video whose report uses another is not a
        negative, though it does not hold the sentence.
        """
        if not self.patterns or not sentences or not reports:
            return torch.zeros(len(sentences), len(reports), dtype=torch.bool)
        return (self.sentences(sentences).float() @ self.reports(reports).float().T) > 0


def sentence_to_video_loss(
    sentence_features: torch.Tensor,
    video_features: torch.Tensor,
    holders: torch.Tensor,
    scale: torch.Tensor,
    ignore: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-positive InfoNCE: each sentence picks, among the batch's videos, those whose report holds it.

    A full report mixes twenty sentences into one embedding, so a rare one (a
    pacemaker lead, an effusion) barely moves it; here every sentence has its own
    term, as a one-sentence zero-shot prompt does at test time. Videos where
    ``ignore [S, B]`` is true (and the report does not hold the sentence) are left out
    of that sentence's negatives: those whose report says the same in other words
    (:meth:`ConceptMatcher.shared`).
    """
    logits = scale * sentence_features @ video_features.T
    positive = logits.masked_fill(~holders, float("-inf"))
    if ignore is not None:
        logits = logits.masked_fill(ignore & ~holders, float("-inf"))
    return (torch.logsumexp(logits, dim=1) - torch.logsumexp(positive, dim=1)).mean()


def sentence_to_report_loss(
    sentence_features: torch.Tensor,
    report_features: torch.Tensor,
    holders: torch.Tensor,
    scale: torch.Tensor,
    ignore: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-positive InfoNCE of text against text: each sentence picks the reports that hold it.

    Between videos and reports a finding is learned only once both towers have started
    to see it, and a rare one (a pacemaker lead named in eight phrasings) can stay
    unseen by both for a whole run. Here the report embedding must carry each of its
    sentences to be found by them, from the first step, so the video side has
    something to align with. Sentences no report holds (all dropped) are left out;
    ``ignore`` is as in :func:`sentence_to_video_loss`.
    """
    kept = holders.any(dim=1)
    if not bool(kept.any()):
        return report_features.sum() * 0.0
    return sentence_to_video_loss(
        sentence_features[kept],
        report_features,
        holders[kept],
        scale,
        None if ignore is None else ignore[kept],
    )


# a number as a reader sees it: not a digit inside a word ("ML/M2", "A4C", "2D")
_NUMBER = re.compile(r"(?<![\w.])(\d+)(?:\.(\d+))?(?!\w)")
# the number of a list item ("3) Normal LV size.", "Summary: 1."), which states no value
_LIST_NUMBER = re.compile(r"(?:^|:)\s*-?\s*\d+[.)](?=\s|$)")


def shifted_values(
    sentence: str,
    rng: random.Random,
    num_variants: int,
    near: int = 10,
    far: int = 50,
    largest: int = 100,
) -> tuple[list[str], list[int]] | None:
    """Copies of one sentence with every value it states moved by the same number of steps.

    A value moves on the grid of its last digit: three steps move "EF 35 %" to 38 % and
    "LVIDd 4.8 cm" to 5.1 cm. Values between 0 and ``largest`` with at most one decimal
    move (the numbers that a tokenizer keeps as value tokens); others ("LVEDV 187 mL",
    "EF 0.55") and the numbers of list items stay as written. Half of the offsets are
    near (1 to ``near`` steps), half far (up to ``far``), each side chosen at random, and
    every moved value stays in range. Returns ``(variants, offsets in steps)``, K+1 of each
    with variant 0 the sentence itself, or None when no value can move or too few offsets
    are valid. The shift is made in the text, not on token ids, because a digit inside a
    word can share its token with the value.
    """
    listed = [m.span() for m in _LIST_NUMBER.finditer(sentence)]
    moving = []  # (match, steps per unit, value in steps): 35 -> (1, 35), 4.8 -> (10, 48)
    for m in _NUMBER.finditer(sentence):
        if any(start <= m.start() < end for start, end in listed):
            continue
        decimals = m.group(2)
        if decimals is None:
            per_unit, steps = 1, int(m.group(1))
        elif len(decimals) == 1:
            per_unit, steps = 10, int(m.group(1) + decimals)
        else:
            continue
        if steps <= largest * per_unit:
            moving.append((m, per_unit, steps))
    if not moving:
        return None
    valid = [
        d
        for d in range(-far, far + 1)
        if d and all(0 <= steps + d <= largest * per_unit for _, per_unit, steps in moving)
    ]
    near_offsets = [d for d in valid if abs(d) <= near]
    far_offsets = [d for d in valid if abs(d) > near]
    n_near = min(len(near_offsets), (num_variants + 1) // 2)
    n_far = min(len(far_offsets), num_variants - n_near)
    if n_near + n_far < num_variants:
        return None
    offsets = [0, *rng.sample(near_offsets, n_near), *rng.sample(far_offsets, n_far)]

    def written(per_unit: int, steps: int) -> str:
        return str(steps) if per_unit == 1 else f"{steps // 10}.{steps % 10}"

    variants = []
    for d in offsets:
        pieces, end = [], 0
        for m, per_unit, steps in moving:
            pieces += [sentence[end : m.start()], written(per_unit, steps + d)]
            end = m.end()
        variants.append("".join(pieces) + sentence[end:])
    return variants, offsets


def value_order_loss(
    variant_features: torch.Tensor,
    offsets: torch.Tensor,
    video_features: torch.Tensor,
    holders: torch.Tensor,
    scale: torch.Tensor,
    sigma: float,
) -> torch.Tensor:
    """Each video ranks the value-shifted copies of its report's numeric sentences.

    ``variant_features [S, K+1, D]`` are the embeddings of sentence ``s`` with its numbers
    moved by ``offsets [S, K+1]``; the target puts weight ``exp(-|offset| / sigma)`` on
    each copy, so a video must score its stated value highest and nearby values above far
    ones. Contrast between videos and reports compares a video's value only with the few
    other values its batch states, each inside a different sentence, and leaves the text
    embeddings of neighbouring values unordered; a zero-shot read-out over "EF 5 %" ...
    "EF 85 %" needs them in order.
    """
    logits = scale * torch.einsum("skd,bd->sbk", variant_features, video_features)
    target = torch.softmax(-offsets.abs() / sigma, dim=1).unsqueeze(1)
    per_pair = -(target * torch.log_softmax(logits, dim=2)).sum(dim=2)
    return per_pair[holders].mean()


def collate_studies(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Study items (``"videos"`` ``[n, 3, T, H, W]`` each) as one padded batch.

    ``video`` ``[B, N, 3, T, H, W]`` with ``N`` the most videos of a study in the batch,
    ``video_mask`` ``[B, N]`` (False for padding), ``views`` (a list of view names per
    study; ``None`` is unknown) and, when every item has it, ``cm_per_px`` ``[B, N, 2]``
    (NaN for padding).
    """
    n = max(int(s["videos"].shape[0]) for s in samples)
    first = samples[0]["videos"]
    video = first.new_zeros(len(samples), n, *first.shape[1:])
    mask = torch.zeros(len(samples), n, dtype=torch.bool)
    for b, s in enumerate(samples):
        k = int(s["videos"].shape[0])
        video[b, :k] = s["videos"]
        mask[b, :k] = True
    batch: dict[str, Any] = {
        "video": video,
        "video_mask": mask,
        "views": [list(s.get("views") or [None] * int(s["videos"].shape[0])) for s in samples],
    }
    if all("cm_per_px" in s for s in samples):
        scale = torch.full((len(samples), n, 2), float("nan"))
        for b, s in enumerate(samples):
            scale[b, : s["cm_per_px"].shape[0]] = s["cm_per_px"]
        batch["cm_per_px"] = scale
    return batch


def sample_rng(seed: int, epoch: int, index: int) -> random.Random:
    """Per-sample randomness that does not depend on workers, ranks or resumption."""
    return random.Random(f"{seed}:{epoch}:{index}")


class ContrastiveObjective:
    """CLIP (InfoNCE) or SigLIP loss between video and report embeddings.

    The losses are open_clip's; with several ranks the features are gathered with
    gradients (``gather_with_grad=True``), so N ranks with batch B train exactly like
    one rank with batch N*B.

    ``sentence_loss_weight > 0`` adds :func:`sentence_to_video_loss` over every distinct
    sentence of the batch's reports (or ``max_sentences`` of them); with several ranks
    each rank's sentences pick among that rank's videos.

    ``sentence_report_weight > 0`` adds :func:`sentence_to_report_loss` on the same
    sentences: each picks the reports (as the text tower reads them, after sentence
    dropout) that hold it.

    ``concept_patterns`` (concept name -> regular expression, matched without case) name
    what reports state in many phrasings, such as devices: a sentence that mentions a
    concept is not contrasted with the videos, or the reports, that mention it in other
    words (:meth:`ConceptMatcher.shared`), and when ``max_sentences`` draws a subset, the
    sentences that name a concept (of ``first_concepts``, by default any) are taken first.
    The patterns must match only
    statements that a concept is present ("NO PACEMAKER" would make every report a
    mention).

    ``value_loss_weight > 0`` adds :func:`value_order_loss` on up to ``value_sentences``
    of the batch's sentences that state values (an EF, a pressure, a size in cm), each
    with ``value_variants`` shifted copies; the tokenizer must have ``value_token_values()``.

    The names above are fields of its :class:`~echoclip.train.config.ContrastiveConfig`.

    Items of several videos (``"videos"``, from study-level :class:`StudyPairs`) make
    study batches (:func:`collate_studies`): the model's study embedding of each
    (``forward`` with a ``mask`` and ``views``) takes the video's place in every term.
    """

    def __init__(
        self,
        tokenizer: Callable[..., torch.Tensor],
        config: ContrastiveConfig | None = None,
        *,
        seed: int = 0,
        val_dataset: Any | None = None,
        zero_shot_prompts: str | dict | None = None,
        study_level: bool = False,
        val_views: Sequence[Any] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        # validate study embeddings (the videos of each held-out study, pooled) against reports
        self.study_level = study_level
        self.val_views = None if val_views is None else list(val_views)
        self.config = config if config is not None else ContrastiveConfig()
        self.seed = seed
        self.val_dataset = val_dataset
        self.zero_shot_prompts = zero_shot_prompts
        self.concepts = ConceptMatcher(self.config.concept_patterns)
        first = self.config.first_concepts
        # the columns of ConceptMatcher.sentences whose sentences _sentence_subset takes first
        self._first_columns = [
            i for i, name in enumerate(self.concepts.patterns) if first is None or name in first
        ]
        self._loss_fn: nn.Module | None = None

    # -- data --------------------------------------------------------------------------

    def collate(self, samples: list[Any], epoch: int) -> dict[str, Any] | None:
        samples = [s for s in samples if s is not None]
        if not samples:
            return None
        reports = [
            augment_report(
                s["report"],
                sample_rng(self.seed, epoch, int(s.get("index", i))),
                self.config.sentence_dropout,
                self.config.shuffle_sentences,
            )
            for i, s in enumerate(samples)
        ]
        batch = {"text": self.tokenizer(reports, context_length=self.config.context_length)}
        if "videos" in samples[0]:
            batch.update(collate_studies(samples))
        else:
            batch["video"] = torch.stack([s["video"] for s in samples])
            if all("cm_per_px" in s for s in samples):
                batch["cm_per_px"] = torch.stack([s["cm_per_px"] for s in samples])
        uses_sentences = self.config.sentence_loss_weight > 0 or self.config.sentence_report_weight > 0
        if not uses_sentences and self.config.value_loss_weight <= 0:
            return batch
        # every sentence of the full report, including those the dropout left out
        sentences, holders = sentence_targets([s["report"] for s in samples])
        if self.config.value_loss_weight > 0:
            batch.update(self._value_variants(sentences, holders, samples, epoch))
        if uses_sentences:
            if not sentences:
                return batch
            if 0 < self.config.max_sentences < len(sentences):
                # a random subset keeps the term unbiased (each sentence's loss stands alone)
                # and bounds the text tower's work per step
                indices = ",".join(str(int(s.get("index", i))) for i, s in enumerate(samples))
                rng = random.Random(f"{self.seed}:{epoch}:sentences:{indices}")
                keep = sorted(self._sentence_subset(sentences, rng))
                sentences, holders = [sentences[k] for k in keep], holders[keep]
            batch["sentences"] = self.tokenizer(sentences, context_length=self.config.context_length)
            batch["sentence_holders"] = holders
            if self.concepts:
                full = [s["report"] for s in samples]
                batch["sentence_ignore"] = self.concepts.shared(sentences, full)
            if self.config.sentence_report_weight > 0:
                batch["sentence_report_holders"] = report_holders(sentences, reports)
                if self.concepts:
                    batch["sentence_report_ignore"] = self.concepts.shared(sentences, reports)
        return batch

    def _sentence_subset(self, sentences: list[str], rng: random.Random) -> list[int]:
        """``max_sentences`` indices: the sentences naming a concept of ``first_concepts``
        first, the rest drawn at random."""
        columns = self._first_columns
        named = (
            self.concepts.sentences(sentences)[:, columns].any(dim=1).nonzero().flatten().tolist()
            if columns
            else []
        )
        if len(named) >= self.config.max_sentences:
            return rng.sample(named, self.config.max_sentences)
        named_set = set(named)
        others = [k for k in range(len(sentences)) if k not in named_set]
        return named + rng.sample(others, self.config.max_sentences - len(named))

    def _value_variants(
        self, sentences: list[str], holders: torch.Tensor, samples: list[Any], epoch: int
    ) -> dict[str, torch.Tensor]:
        """Shifted copies of up to ``value_sentences`` of the batch's numeric sentences (see :func:`shifted_values`)."""
        if not hasattr(self.tokenizer, "value_token_values"):
            # a tokenizer that spells numbers in pieces gives shifted copies no order to learn
            raise ConfigError("value_loss_weight > 0 needs a tokenizer with value_token_values()")
        indices = ",".join(str(int(s.get("index", i))) for i, s in enumerate(samples))
        rng = random.Random(f"{self.seed}:{epoch}:values:{indices}")
        order = list(range(len(sentences)))
        rng.shuffle(order)
        texts: list[str] = []
        offsets, kept = [], []
        for k in order:
            if len(kept) == self.config.value_sentences:
                break
            shifted = shifted_values(sentences[k], rng, self.config.value_variants)
            if shifted is not None:
                texts += shifted[0]
                offsets.append(shifted[1])
                kept.append(k)
        if not kept:
            return {}
        # every copy of every kept sentence in one call: [S * (K+1), L] -> [S, K+1, L]
        ids = self.tokenizer(texts, context_length=self.config.context_length)
        return {
            "value_variants": ids.reshape(len(kept), -1, ids.shape[-1]),
            "value_offsets": torch.tensor(offsets, dtype=torch.float32),
            "value_holders": holders[kept],
        }

    # -- loss --------------------------------------------------------------------------

    def _build_loss(self) -> nn.Module:
        import torch.distributed as dist
        from open_clip.loss import ClipLoss, SigLipLoss

        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        if self.config.loss == "siglip":
            return SigLipLoss(rank=rank, world_size=world)
        return ClipLoss(
            local_loss=False, gather_with_grad=True, cache_labels=True, rank=rank, world_size=world
        )

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict]:
        if self._loss_fn is None:
            self._loss_fn = self._build_loss()
        device = next(model.parameters()).device
        scale = {}
        if "cm_per_px" in batch and getattr(getattr(model, "module", model), "uses_scale", False):
            scale["cm_per_px"] = batch["cm_per_px"].to(device, non_blocking=True)
        if "video_mask" in batch:  # study level: the study embedding meets the report
            scale["mask"] = batch["video_mask"].to(device, non_blocking=True)
            scale["views"] = batch["views"]
        out = model(
            batch["video"].to(device, non_blocking=True), batch["text"].to(device, non_blocking=True), **scale
        )
        sentence_features = None
        if "sentences" in batch:
            sentences = batch["sentences"].to(device)
            sentence_features = model.encode_text(sentences, normalize=True)
        variant_features = None
        if self.config.value_loss_weight > 0 and "value_variants" in batch:
            variants = batch["value_variants"].to(device)
            variant_features = model.encode_text(variants.flatten(0, 1), normalize=True)
            variant_features = variant_features.view(*variants.shape[:2], -1)
        # similarities and softmax in fp32 even under bf16 autocast: bf16 keeps 8 bits of a
        # cosine, an error of about 0.1 in a logit at scale 30, which is as large as the
        # gaps between the embeddings of neighbouring EF values
        with torch.autocast(device.type, enabled=False):
            video_features = out["video_features"].float()
            text_features = out["text_features"].float()
            scale = out["logit_scale"].float()
            bias = out.get("logit_bias")
            if self.config.loss == "siglip":
                if bias is None:
                    raise ValueError(
                        "the siglip loss needs a model with a logit_bias (set logit_bias_init in its config)"
                    )
                loss = self._loss_fn(video_features, text_features, scale, bias.float())
            else:
                loss = self._loss_fn(video_features, text_features, scale)
            figures = {"loss": float(loss.detach()), "logit_scale": float(scale.detach())}
            if sentence_features is not None and self.config.sentence_loss_weight > 0:
                sentence_loss = sentence_to_video_loss(
                    sentence_features.float(),
                    video_features,
                    batch["sentence_holders"].to(device),
                    scale,
                    _on(batch.get("sentence_ignore"), device),
                )
                figures["report_loss"] = figures["loss"]
                figures["sentence_loss"] = float(sentence_loss.detach())
                loss = loss + self.config.sentence_loss_weight * sentence_loss
                figures["loss"] = float(loss.detach())
            if sentence_features is not None and "sentence_report_holders" in batch:
                text_loss = sentence_to_report_loss(
                    sentence_features.float(),
                    text_features,
                    batch["sentence_report_holders"].to(device),
                    scale,
                    _on(batch.get("sentence_report_ignore"), device),
                )
                figures.setdefault("report_loss", figures["loss"])
                figures["sentence_report_loss"] = float(text_loss.detach())
                loss = loss + self.config.sentence_report_weight * text_loss
                figures["loss"] = float(loss.detach())
            if variant_features is not None:
                value_loss = value_order_loss(
                    variant_features.float(),
                    batch["value_offsets"].to(device),
                    video_features,
                    batch["value_holders"].to(device),
                    scale,
                    self.config.value_sigma,
                )
                figures.setdefault("report_loss", figures["loss"])
                figures["value_loss"] = float(value_loss.detach())
                loss = loss + self.config.value_loss_weight * value_loss
                figures["loss"] = float(loss.detach())
        return loss, figures

    # -- validation --------------------------------------------------------------------

    def validate(self, model: nn.Module) -> dict[str, float]:
        if self.val_dataset is None or len(self.val_dataset) == 0:
            return {}
        video_emb, text_emb, efs = self._embed_validation(model)
        if len(video_emb) < 2:
            return {}
        from echoclip.retrieval import metrics as rm

        sim = video_emb @ text_emb.T
        ranks = rm.ranks_of_true_pairs(sim)
        what = "study_to_report" if self.study_level else "video_to_report"
        figures = {
            f"{what}.recall@1": rm.recall_at_k(ranks, 1),
            f"{what}.recall@5": rm.recall_at_k(ranks, 5),
            f"{what}.recall@10": rm.recall_at_k(ranks, 10),
            f"{what}.mean_rank": rm.mean_rank(ranks),
            "n": float(len(ranks)),
        }
        figures.update(self._zero_shot_ef(model, video_emb, efs))
        return figures

    def _embed_validation(self, model: nn.Module) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from echoclip.models.embed import embed_reports, encode_videos

        batch = self.config.val_batch_size
        videos = encode_videos(model, self.val_dataset, batch_size=batch, on_error="drop", progress=False)
        if len(videos.features) == 0:
            return np.zeros((0, 1)), np.zeros((0, 1)), np.zeros(0)
        features, meta = videos.features, videos.meta
        if self.study_level:
            features, meta = self._pool_studies(model, features, meta)
        reports = [m["report"] for m in meta]
        texts = embed_reports(
            model, self.tokenizer, reports, batch, progress=False, context_length=self.config.context_length
        )
        efs = np.asarray([float(m.get("ef", float("nan"))) for m in meta])
        return features, texts, efs

    def _pool_studies(
        self, model: nn.Module, features: np.ndarray, meta: list[dict[str, Any]]
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Unit study embeddings of the held-out videos (grouped by ``study_id``), and one
        metadata row per study (its first video's)."""
        groups: dict[str, list[int]] = {}
        for i, m in enumerate(meta):
            groups.setdefault(str(m.get("study_id", i)), []).append(i)
        studies = list(groups.values())
        device = next(model.parameters()).device
        pooled = []
        for start in range(0, len(studies), self.config.val_batch_size):
            chunk = studies[start : start + self.config.val_batch_size]
            n = max(len(rows) for rows in chunk)
            x = torch.zeros(len(chunk), n, features.shape[1])
            mask = torch.zeros(len(chunk), n, dtype=torch.bool)
            views = []
            for b, rows in enumerate(chunk):
                x[b, : len(rows)] = torch.from_numpy(np.asarray(features[rows], dtype=np.float32))
                mask[b, : len(rows)] = True
                views.append([self._val_view(meta[r]) for r in rows])
            pooled.append(model.encode_study(x.to(device), views=views, mask=mask.to(device)).float().cpu())
        return torch.cat(pooled).numpy(), [meta[rows[0]] for rows in studies]

    def _val_view(self, meta: dict[str, Any]) -> Any:
        if self.val_views is None or "index" not in meta:
            return None
        return self.val_views[int(meta["index"])]

    def _zero_shot_ef(self, model: nn.Module, video_emb: np.ndarray, efs: np.ndarray) -> dict[str, float]:
        if self.zero_shot_prompts is None or not np.isfinite(efs).any():
            return {}
        try:
            from echoclip.zeroshot.predict import zero_shot
        except ImportError:
            return {}
        preds = zero_shot(model, self.tokenizer, video_emb, prompts=self.zero_shot_prompts)
        column = _prediction_column(preds)
        ok = np.isfinite(efs)
        return {"zeroshot.ef.mae": float(np.mean(np.abs(preds[column].to_numpy()[ok] - efs[ok])))}

    # -- saving ------------------------------------------------------------------------

    def save_model(self, model: nn.Module, directory: Path) -> None:
        model.save_pretrained(directory, tokenizer=self.tokenizer)


def _on(mask: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if mask is None else mask.to(device)


def _prediction_column(preds: Any) -> str:
    for name in ("ef", "ejection_fraction", "prediction"):
        if name in preds.columns:
            return name
    return str(preds.columns[0])
