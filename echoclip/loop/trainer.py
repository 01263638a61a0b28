"""One training loop for contrastive training and self-supervised pretraining.

What is trained is described by an :class:`Objective` (how a batch becomes a loss,
how samples are collated, how the model is validated and saved); the
:class:`Trainer` owns everything else: ``torchrun`` (DDP or FSDP), AdamW and the cosine
schedule, gradient accumulation and clipping, bf16 autocast, atomic checkpoints and
exact resume (model, optimizer, scheduler, step, data position, RNG of every rank),
NaN detection, progress, ``metrics.csv`` and TensorBoard.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from echoclip import atomic
from echoclip.errors import DataError, TrainingError
from echoclip.loop.checkpoint import (
    latest_checkpoint,
    load_train_state,
    load_weights,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from echoclip.loop.config import LoopConfig
from echoclip.loop.distributed import (
    DistInfo,
    all_reduce_mean,
    average_gradients,
    barrier,
    broadcast_flag,
    full_model_state,
    full_optimizer_state,
    init_distributed,
    load_full_optimizer_state,
    shard_model,
)
from echoclip.loop.optim import build_optimizer, cosine_with_warmup
from echoclip.precision import autocast

log = logging.getLogger(__name__)


class Objective(Protocol):
    """What a run optimises. Implemented by the contrastive and the pretraining objectives."""

    def collate(self, samples: list[Any], epoch: int) -> Any:
        """Turn the samples of one micro-batch into model input; ``None`` if all failed."""

    def loss(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one micro-batch and scalar figures to log."""

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Held-out figures (run on rank 0 only); empty when there is nothing to validate."""

    def save_model(self, model: nn.Module, directory: Path) -> None:
        """Write the model (a model directory users can load)."""


class EpochSampler(Sampler[int]):
    """This rank's shuffled sample indices for one epoch, from a given position.

    The permutation depends only on ``(seed, epoch)``; rank ``r`` of ``w`` takes every
    ``w``-th index as ``DistributedSampler`` does, so ``w`` ranks with batch ``B`` see
    the same samples per step as one rank with batch ``w*B``. ``start`` skips samples
    already consumed, which is how a resumed run continues mid-epoch.

    With ``weights`` (one per sample, not normalised) an epoch is ``n`` draws with
    replacement in proportion to them, as ``WeightedRandomSampler`` draws: rare
    studies come up more often, common ones less.
    """

    def __init__(
        self,
        n: int,
        seed: int,
        epoch: int,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
        weights: Sequence[float] | None = None,
    ) -> None:
        self.n, self.seed, self.epoch = n, seed, epoch
        self.rank, self.world_size, self.start = rank, world_size, start
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if self.weights is not None and (
            len(self.weights) != n
            or not bool(torch.isfinite(self.weights).all())
            or bool((self.weights < 0).any())
            or not self.weights.sum() > 0
        ):
            raise DataError(f"sample weights must be {n} finite numbers >= 0, not all 0")

    def indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is None:
            perm = torch.randperm(self.n, generator=g).tolist()
        else:
            perm = torch.multinomial(self.weights, self.n, replacement=True, generator=g).tolist()
        per_rank = self.n // self.world_size
        return perm[self.rank :: self.world_size][:per_rank][self.start :]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return max(0, self.n // self.world_size - self.start)


@dataclass
class TrainResult:
    step: int
    epoch: int
    final_dir: Path
    metrics_csv: Path
    history: list[dict[str, float]] = field(default_factory=list)
    validation: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


class _CollateForEpoch:
    """A picklable collate function that knows the epoch (workers get a fresh copy per epoch)."""

    def __init__(self, objective: Objective, epoch: int) -> None:
        self.objective, self.epoch = objective, epoch

    def __call__(self, samples: list[Any]) -> Any:
        return self.objective.collate(samples, self.epoch)


class MetricsLog:
    """``metrics.csv`` (one row per logged step) and TensorBoard scalars, on rank 0.

    On resume the rows after the checkpoint's step are dropped first, so a resumed run
    ends with exactly the rows of an uninterrupted one.
    """

    def __init__(self, out: Path, enabled: bool, tensorboard: bool, resume_step: int | None) -> None:
        self.path = out / "metrics.csv"
        self.enabled = enabled
        self.rows: list[dict[str, Any]] = []
        self._writer = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        elif self.path.exists():
            self.path.unlink()
        self._rewrite()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(out / "tensorboard"))
            except ImportError:  # pragma: no cover - tensorboard is a dependency
                log.warning("tensorboard is not installed; logging to metrics.csv only")

    def _columns(self) -> list[str]:
        cols: list[str] = []
        for r in self.rows:
            cols += [k for k in r if k not in cols]
        return cols

    def _rewrite(self) -> None:
        with atomic.writing(self.path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self._columns() or ["step"])
            w.writeheader()
            w.writerows(self.rows)

    def add(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.rows.append(row)
        self._rewrite()
        if self._writer is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, int | float) and math.isfinite(v):
                    self._writer.add_scalar(k, v, row["step"])
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class Trainer:
    """Runs an :class:`Objective` on a model and a map-style dataset.

    Example::

        result = Trainer(model, objective, dataset, LoopConfig(out="runs/x", steps=100)).fit()
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        dataset: Dataset,
        config: LoopConfig,
        resume: bool = False,
    ) -> None:
        self.model = model
        self.objective = objective
        self.dataset = dataset
        self.config = config
        self.resume = resume
        self._sharded = False  # FSDP across ranks (set by fit)
        self._twin: nn.Module | None = None

    # -- setup -------------------------------------------------------------------------

    def _steps_per_epoch(self, info: DistInfo) -> int:
        cfg = self.config
        n = len(self.dataset)  # type: ignore[arg-type]
        if n == 0:
            raise DataError("the training data set is empty")
        per_rank = n // info.world_size
        global_batch = cfg.batch_size * info.world_size
        if per_rank < cfg.batch_size * cfg.grad_accum:
            raise DataError(
                f"the batch ({global_batch} per step x {cfg.grad_accum} accumulation) is larger than "
                f"the training data set ({n} samples); lower --batch-size"
            )
        return per_rank // (cfg.batch_size * cfg.grad_accum)

    def _autocast(self, info: DistInfo) -> contextlib.AbstractContextManager:
        return autocast(self.config.precision, info.device)

    # -- the loop ----------------------------------------------------------------------

    def fit(self) -> TrainResult:
        cfg = self.config
        info = init_distributed()
        out = Path(cfg.out)
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
        barrier(info)
        steps_per_epoch = self._steps_per_epoch(info)
        total_steps = cfg.steps or cfg.epochs * steps_per_epoch

        random.seed(cfg.seed + info.rank)
        np.random.seed((cfg.seed + info.rank) % 2**32)
        torch.manual_seed(cfg.seed + info.rank)

        model = self.model.to(info.device)
        if cfg.grad_checkpointing and hasattr(model, "set_grad_checkpointing"):
            model.set_grad_checkpointing(True)
        resume_from = latest_checkpoint(out) if self.resume else None
        if resume_from is not None:
            load_weights(model, resume_from / "model")  # whole weights, before any sharding
        self._sharded = cfg.strategy == "fsdp" and info.distributed
        # with FSDP, rank 0 keeps an unsharded copy on the CPU to validate and save
        self._twin = copy.deepcopy(model).cpu() if self._sharded and info.is_main else None
        replicated = shard_model(model) if self._sharded else []
        optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas, cfg.eps)
        scheduler = cosine_with_warmup(optimizer, cfg.warmup_steps, total_steps, cfg.min_lr_ratio)

        step, epoch, position = 0, 0, 0
        window: list[float] = []  # losses since the last logged row
        if resume_from is not None:
            state, rng = load_train_state(resume_from, info.rank)
            if self._sharded:
                load_full_optimizer_state(model, optimizer, state["optimizer"])
            else:
                optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            step, epoch, position = int(state["step"]), int(state["epoch"]), int(state["position"])
            window = [float(v) for v in state.get("loss_window", [])]
            if rng is not None:
                set_rng_state(rng)
            if info.is_main:
                log.info("resumed from %s (step %d, epoch %d)", resume_from, step, epoch)
        elif self.resume and info.is_main:
            log.info("no checkpoint in %s; starting from scratch", out / "checkpoints")

        train_model: nn.Module = model
        if info.distributed and not self._sharded:
            train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[info.device.index] if info.device.type == "cuda" else None
            )
        if cfg.compile:
            train_model = torch.compile(train_model)  # type: ignore[assignment]

        metrics = MetricsLog(out, info.is_main, cfg.tensorboard, step if resume_from is not None else None)
        progress = self._progress(info, total_steps, step)
        t_start = time.perf_counter()
        last_good: Path | None = resume_from
        validation: dict[str, float] = {}
        clips_seen, t_window = 0, time.perf_counter()
        if cfg.val_every and step == 0:
            # the start of every held-out curve, as open_clip evaluates before training;
            # the random state is put back, so training is the same with or without it
            saved = rng_state()
            validation = self._validate(info, model, metrics, 0)
            set_rng_state(saved)

        while step < total_steps:
            loader = self._loader(info, epoch, position)
            micro, batches_in_epoch = 0, 0
            accumulated: dict[str, float] = {}
            for batch in loader:
                position += 1
                if batch is None:  # every sample of this micro-batch failed to load
                    continue
                batches_in_epoch += 1
                micro += 1
                final_micro = micro == cfg.grad_accum
                sync = (
                    train_model.no_sync()
                    if info.distributed and not final_micro and hasattr(train_model, "no_sync")
                    else contextlib.nullcontext()
                )
                if self._sharded:
                    model.set_requires_gradient_sync(final_micro)  # type: ignore[operator]
                with sync, self._autocast(info):
                    loss, figures = self.objective.loss(train_model, batch, step)
                (loss / cfg.grad_accum).backward()
                for k, v in figures.items():
                    accumulated[k] = accumulated.get(k, 0.0) + v / cfg.grad_accum
                clips_seen += _batch_size(batch)
                if not final_micro:
                    continue
                micro = 0
                loss_value = all_reduce_mean(accumulated.get("loss", float(loss.detach())), info)
                if broadcast_flag(not math.isfinite(loss_value), info):
                    metrics.close()
                    where = f"; the last good checkpoint is {last_good}" if last_good else ""
                    raise TrainingError(f"the loss became {loss_value} at step {step + 1}{where}")
                average_gradients(replicated, info)
                grad_norm = (
                    _as_float(nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
                    if cfg.grad_clip > 0
                    else float("nan")
                )
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                step += 1
                window.append(loss_value)
                progress.update(1)

                if step % cfg.log_every == 0 or step == total_steps:
                    elapsed = time.perf_counter() - t_window
                    row = {
                        "step": step,
                        "epoch": epoch,
                        "loss": float(np.mean(window)),
                        "lr": scheduler.get_last_lr()[0],
                        "grad_norm": grad_norm,
                        **{k: v for k, v in accumulated.items() if k != "loss"},
                    }
                    if info.is_main:
                        progress.set_postfix(
                            loss=f"{row['loss']:.3f}",
                            lr=f"{row['lr']:.2e}",
                            clips_s=f"{clips_seen * info.world_size / max(elapsed, 1e-9):.1f}",
                        )
                    metrics.add(row)
                    window, clips_seen, t_window = [], 0, time.perf_counter()
                accumulated = {}

                if cfg.val_every and step % cfg.val_every == 0 and step < total_steps:
                    validation = self._validate(info, model, metrics, step)
                if step % cfg.checkpoint_every == 0 or step == total_steps:
                    per_rank = len(self.dataset) // info.world_size  # type: ignore[arg-type]
                    at_epoch_end = (position + 1) * cfg.batch_size > per_rank
                    last_good = self._checkpoint(
                        info,
                        out,
                        step,
                        model,
                        optimizer,
                        scheduler,
                        epoch + 1 if at_epoch_end else epoch,
                        0 if at_epoch_end else position,
                        window,
                    )
                if step >= total_steps:
                    break
            else:
                if batches_in_epoch == 0 and position > 0:
                    raise DataError(self._no_readable_data_message())
                # an incomplete accumulation at the end of an epoch is dropped
                optimizer.zero_grad(set_to_none=True)
                epoch += 1
                position = 0
                continue
            break

        progress.close()
        if step == total_steps:  # the final weights are always validated
            validation = self._validate(info, model, metrics, step)
        final_dir = out / "final"
        whole = self._whole_model(model)
        if info.is_main:
            with atomic.writing_dir(final_dir) as tmp:
                self.objective.save_model(whole, tmp)
        barrier(info)
        metrics.close()
        return TrainResult(
            step=step,
            epoch=epoch,
            final_dir=final_dir,
            metrics_csv=metrics.path,
            history=[dict(r) for r in metrics.rows],
            validation=validation,
            seconds=time.perf_counter() - t_start,
        )

    # -- pieces ------------------------------------------------------------------------

    def _loader(self, info: DistInfo, epoch: int, position: int) -> DataLoader:
        cfg = self.config
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        sampler = EpochSampler(
            len(self.dataset),  # type: ignore[arg-type]
            cfg.seed,
            epoch,
            info.rank,
            info.world_size,
            start=position * cfg.batch_size,
            weights=getattr(self.dataset, "sample_weights", None),
        )
        # A generator of our own keeps the DataLoader from drawing on the global RNG, so a
        # resumed run's model randomness (dropout) continues exactly where it stopped.
        g = torch.Generator().manual_seed(cfg.seed * 7919 + epoch * 31 + info.rank)
        return DataLoader(
            self.dataset,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=cfg.num_workers,
            collate_fn=_CollateForEpoch(self.objective, epoch),
            drop_last=True,
            generator=g,
            persistent_workers=False,
        )

    def _no_readable_data_message(self) -> str:
        skipped = getattr(self.dataset, "skipped", None)
        if skipped:
            first = skipped[0]
            return (
                f"no readable training samples: all {len(skipped)} videos seen failed to load "
                f"(first: {first})"
            )
        return "no readable training samples in a whole epoch"

    def _whole_model(self, model: nn.Module) -> nn.Module:
        """The model with all its weights on rank 0: itself, or under FSDP the unsharded copy
        refreshed from the shards (every rank must call this)."""
        if not self._sharded:
            return model
        state = full_model_state(model)
        if self._twin is None:
            return model  # not rank 0: nothing to hold
        self._twin.load_state_dict(state)
        return self._twin

    def _validate(self, info: DistInfo, model: nn.Module, metrics: MetricsLog, step: int) -> dict[str, float]:
        model = self._whole_model(model)
        if not info.is_main:
            return {}
        was_training = model.training
        if self._sharded:
            model.to(info.device)
        model.eval()
        with torch.no_grad(), self._autocast(info):
            figures = self.objective.validate(model)
        model.train(was_training)
        if self._sharded:
            model.cpu()
        if figures:
            metrics.add({"step": step, **{f"val/{k}": v for k, v in figures.items()}})
            log.info("step %d validation: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in figures.items()))
        return figures

    def _checkpoint(
        self,
        info: DistInfo,
        out: Path,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        epoch: int,
        position: int,
        window: list[float],
    ) -> Path:
        states = [rng_state()]
        if info.distributed:
            gathered: list[Any] = [None] * info.world_size
            dist.all_gather_object(gathered, states[0])
            states = gathered
        path = latest_checkpoint(out) or out
        whole = self._whole_model(model)
        optimizer_state = full_optimizer_state(model, optimizer) if self._sharded else optimizer.state_dict()
        if info.is_main:
            train_state = {
                "optimizer": optimizer_state,
                "scheduler": scheduler.state_dict(),
                "step": step,
                "epoch": epoch,
                "position": position,
                "loss_window": list(window),
                "world_size": info.world_size,
                "config": _plain(self.config.to_dict()),
            }
            path = save_checkpoint(
                out, step, whole, train_state, states, self.objective.save_model, self.config.keep_last
            )
        barrier(info)
        return path

    def _progress(self, info: DistInfo, total: int, initial: int) -> Any:
        from tqdm.auto import tqdm

        return tqdm(
            total=total,
            initial=initial,
            desc="train",
            unit="step",
            disable=not (info.is_main and self.config.progress),
            dynamic_ncols=True,
        )


def _as_float(value: torch.Tensor) -> float:
    """A scalar tensor as a float; a sharded (DTensor) norm is made whole first."""
    full = getattr(value, "full_tensor", None)
    return float(full() if full is not None else value)


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict):
        for v in batch.values():
            if isinstance(v, torch.Tensor):
                return int(v.shape[0])
    if isinstance(batch, Sequence) and batch and isinstance(batch[0], torch.Tensor):
        return int(batch[0].shape[0])
    return 0


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """Config values as plain Python types (safe for ``torch.load(weights_only=True)``)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if k != "extra"}


__all__ = ["Trainer", "TrainResult", "Objective", "EpochSampler", "MetricsLog"]
