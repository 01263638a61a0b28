"""Frozen-feature probes: how much a (pretrained) video encoder already knows about a label.

The encoder is frozen and run once over the data set. Two probes read its features:

- ridge: a ridge regression (scikit-learn, regularisation chosen by cross-validation)
  on pooled features - the mean and the spread over time of the encoder's features
  (:func:`echoclip.models.features.pooled_features`);
- attentive: a small cross-attention pooler over all tokens (ViT tokens or frame
  features) with a linear head, trained a few hundred steps. Masked-modelling
  features are known to be weak for linear probes and better read by attention.

Both are fitted on one part of the studies and scored (R², MAE) on held-out
patients, so no patient is on both sides.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from echoclip.errors import DataError
from echoclip.models.features import (
    pooled_features,
    time_steps,
    tokens,
    tower_kind,
    video_tower,
    videomae_tokens_by_time,
)
from echoclip.precision import autocast


def _encoder(model_or_encoder: Any) -> nn.Module:
    if isinstance(model_or_encoder, str | os.PathLike):
        from echoclip.models.encoders import build_encoder

        return build_encoder(model_or_encoder)
    return video_tower(model_or_encoder)


def _target_of(sample: dict[str, Any], target: str) -> float:
    if target in sample and not isinstance(sample[target], dict):
        return float(sample[target])
    return float(sample.get("labels", {}).get(target, float("nan")))


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset: Any,
    target: str = "ef",
    batch_size: int = 16,
    precision: str = "auto",
) -> dict[str, Any]:
    """Tokens ``float16 [N, L, C]``, pooled features ``[N, 2C]``, targets and patient ids of a data set.

    Samples that failed to load or have no finite target are left out. ``precision`` as in
    :mod:`echoclip.precision` (``auto``: bf16 where the hardware computes it natively).
    """
    encoder.eval()
    device = next(encoder.parameters()).device
    in_precision = autocast(precision, device)
    kind = tower_kind(encoder)
    all_tokens, pooled, targets, groups = [], [], [], []
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        if not pending:
            return
        x = torch.stack([s["video"] for s in pending]).to(device)
        with in_precision:
            tok = tokens(encoder, x).float()
        steps = videomae_tokens_by_time(tok, None, time_steps(encoder)) if kind == "videomae" else tok
        all_tokens.append(tok.half().cpu())
        pooled.append(pooled_features(steps).cpu())
        pending.clear()

    for i in range(len(dataset)):
        sample = dataset[i]
        if sample is None:
            continue
        y = _target_of(sample, target)
        if not np.isfinite(y):
            continue
        pending.append(sample)
        targets.append(y)
        groups.append(str(sample.get("patient_id", i)))
        if len(pending) == batch_size:
            flush()
    flush()
    if not targets:
        raise DataError(f"no samples with a finite {target!r} to probe")
    return {
        "tokens": torch.cat(all_tokens),
        "pooled": torch.cat(pooled).numpy().astype(np.float64),
        "y": np.asarray(targets, dtype=np.float64),
        "groups": np.asarray(groups),
    }


def split_by_group(groups: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row indices with every group (patient) on one side only."""
    from sklearn.model_selection import GroupShuffleSplit

    if len(np.unique(groups)) < 2:
        raise DataError("the probe needs at least two patients to hold one out")
    splitter = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
    train, test = next(splitter.split(np.zeros(len(groups)), groups=groups))
    return train, test


def ridge_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Predictions of a standardised ridge regression whose penalty is chosen by cross-validation."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 5, 15)))
    model.fit(x_train, y_train)
    return model.predict(x_test)


class AttentiveProbe(nn.Module):
    """Learned queries attend over the tokens (with learned positions); a linear head reads them."""

    def __init__(self, num_tokens: int, width: int, queries: int = 4, heads: int = 4) -> None:
        super().__init__()
        heads = heads if width % heads == 0 else 1
        self.positions = nn.Parameter(torch.zeros(num_tokens, width))
        self.queries = nn.Parameter(torch.randn(queries, width) * 0.02)
        self.norm = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.head = nn.Sequential(nn.LayerNorm(queries * width), nn.Linear(queries * width, 1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.norm(tokens) + self.positions
        q = self.queries.expand(tokens.shape[0], -1, -1)
        pooled, _ = self.attention(q, x, x, need_weights=False)
        return self.head(pooled.flatten(1)).squeeze(-1)


def attentive_probe(
    train_tokens: torch.Tensor,
    y_train: np.ndarray,
    test_tokens: torch.Tensor,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
) -> np.ndarray:
    """Train an :class:`AttentiveProbe` on frozen tokens and predict the test tokens."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        probe = AttentiveProbe(train_tokens.shape[1], train_tokens.shape[2])
    mean, std = float(y_train.mean()), float(y_train.std() + 1e-8)
    y = torch.tensor((y_train - mean) / std, dtype=torch.float32)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    with torch.enable_grad():  # also when the caller runs under no_grad
        _fit(probe, opt, sched, train_tokens, y, steps, batch_size, g)
    probe.eval()
    with torch.no_grad():
        pred = torch.cat([probe(test_tokens[i : i + 256].float()) for i in range(0, len(test_tokens), 256)])
    return pred.numpy() * std + mean


def _fit(
    probe: nn.Module,
    opt: Any,
    sched: Any,
    tokens: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    batch_size: int,
    g: torch.Generator,
) -> None:
    n = len(y)
    for _ in range(steps):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=g)
        loss = F.mse_loss(probe(tokens[idx].float()), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()


def _scores(name: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, r2_score

    return {f"{name}.r2": float(r2_score(y, pred)), f"{name}.mae": float(mean_absolute_error(y, pred))}


def probe(
    model_or_encoder: Any,
    dataset: Any,
    target: str = "ef",
    *,
    test_dataset: Any | None = None,
    test_fraction: float = 0.3,
    attentive: bool = True,
    attentive_steps: int = 300,
    batch_size: int = 16,
    precision: str = "auto",
    seed: int = 0,
) -> dict[str, float]:
    """Ridge and attentive probes of ``target`` on frozen encoder features; R² and MAE on held-out data.

    ``model_or_encoder`` is an ``EchoCLIP`` model, a video tower, or an encoder
    checkpoint folder. Without ``test_dataset``, ``test_fraction`` of the patients of
    ``dataset`` are held out. Example::

        ds = Manifest("runs/sim/manifest.parquet", transform=VideoTransform(model.preprocess_config))
        probe("runs/ssl/final", ds, target="ef")   # {'ridge.r2': ..., 'attentive.r2': ..., ...}
    """
    encoder = _encoder(model_or_encoder)
    feats = extract_features(encoder, dataset, target, batch_size, precision)
    if test_dataset is not None:
        held = extract_features(encoder, test_dataset, target, batch_size, precision)
        train = {k: v for k, v in feats.items()}
        test = held
    else:
        tr, te = split_by_group(feats["groups"], test_fraction, seed)
        train = {k: v[tr] for k, v in feats.items()}
        test = {k: v[te] for k, v in feats.items()}
    if len(train["y"]) < 4 or len(test["y"]) < 2:
        raise DataError(
            f"too few samples to probe {target!r}: {len(train['y'])} to fit, {len(test['y'])} to test"
        )
    results: dict[str, float] = {"n_train": float(len(train["y"])), "n_test": float(len(test["y"]))}
    results.update(_scores("ridge", test["y"], ridge_probe(train["pooled"], train["y"], test["pooled"])))
    if attentive:
        pred = attentive_probe(train["tokens"], train["y"], test["tokens"], steps=attentive_steps, seed=seed)
        results.update(_scores("attentive", test["y"], pred))
    return results


def probe_against_random(
    encoder_dir: str | os.PathLike[str], dataset: Any, target: str = "ef", seed: int = 0, **kwargs: Any
) -> dict[str, dict[str, float]]:
    """:func:`probe` of a pretrained encoder and of the same tower freshly initialised, side by side.

    Returns ``{"pretrained": {...}, "random": {...}}``; ``kwargs`` go to :func:`probe`.
    """
    from echoclip.models.config import VideoTowerConfig
    from echoclip.models.encoders import build_encoder, read_encoder
    from echoclip.models.video_towers import build_video_tower

    pretrained = build_encoder(encoder_dir)
    _, info = read_encoder(encoder_dir)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        random_tower = build_video_tower(VideoTowerConfig(**info["video"]), int(info["embed_dim"]))
    return {
        "pretrained": probe(pretrained, dataset, target, seed=seed, **kwargs),
        "random": probe(random_tower, dataset, target, seed=seed, **kwargs),
    }
