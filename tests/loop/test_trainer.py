"""The training loop: learning, exact resume, atomic checkpoints, bad input."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from echoclip.errors import ConfigError, DataError, TrainingError
from echoclip.loop.checkpoint import latest_checkpoint, list_checkpoints
from echoclip.loop.trainer import EpochSampler, Trainer
from echoclip.train.config import ContrastiveConfig
from echoclip.train.contrastive import (
    ContrastiveObjective,
)
from tests.train.toy import ToyClip, ToyClips, toy_config, toy_objective, toy_tokenizer


def test_loss_falls_and_run_writes_outputs(tmp_path):
    torch.manual_seed(0)
    result = Trainer(ToyClip(), toy_objective(), ToyClips(64), toy_config(tmp_path, steps=40)).fit()
    losses = [float(r["loss"]) for r in result.history if r.get("loss") not in (None, "")]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    assert (result.final_dir / "model.safetensors").is_file()
    assert result.metrics_csv.read_text().startswith("step,")
    assert len(list_checkpoints(tmp_path / "run")) == 2  # keep_last


def test_resume_after_crash_gives_identical_weights_and_metrics(tmp_path):
    torch.manual_seed(0)
    reference = Trainer(ToyClip(), toy_objective(), ToyClips(40), toy_config(tmp_path / "a")).fit()

    class Crash(ContrastiveObjective):
        def loss(self, model, batch, step):
            if step == 10:
                raise KeyboardInterrupt  # a kill between checkpoints (step 8) and the end
            return super().loss(model, batch, step)

    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        Trainer(
            ToyClip(),
            Crash(toy_tokenizer, ContrastiveConfig(context_length=8)),
            ToyClips(40),
            toy_config(tmp_path / "b"),
        ).fit()
    assert latest_checkpoint(tmp_path / "b" / "run").name == "step_00000008"
    torch.manual_seed(123)  # the resumed process starts from different global RNG state
    resumed = Trainer(ToyClip(), toy_objective(), ToyClips(40), toy_config(tmp_path / "b"), resume=True).fit()

    a = load_file(reference.final_dir / "model.safetensors")
    b = load_file(resumed.final_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert reference.metrics_csv.read_text() == resumed.metrics_csv.read_text()


def test_a_data_worker_trains_the_same_weights_as_loading_in_process(tmp_path):
    # every item and every report's augmentation is seeded by its index, not by the process
    runs = []
    for workers in (0, 1):
        torch.manual_seed(0)
        objective = toy_objective(sentence_loss_weight=1.0, max_sentences=2)
        cfg = toy_config(tmp_path / f"w{workers}", steps=6, num_workers=workers)
        runs.append(
            load_file(Trainer(ToyClip(), objective, ToyClips(40), cfg).fit().final_dir / "model.safetensors")
        )
    assert runs[0].keys() == runs[1].keys()
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k]), k


def test_half_written_checkpoint_is_ignored(tmp_path):
    Trainer(ToyClip(), toy_objective(), ToyClips(40), toy_config(tmp_path, steps=4)).fit()
    run = tmp_path / "run"
    (run / "checkpoints" / "step_00000008.tmp").mkdir()
    (run / "checkpoints" / "step_00000012").mkdir()  # no train_state.pt: incomplete
    assert latest_checkpoint(run).name == "step_00000004"


def test_epoch_sampler_splits_ranks_like_one_big_batch():
    one = EpochSampler(20, seed=1, epoch=2).indices()
    r0 = EpochSampler(20, seed=1, epoch=2, rank=0, world_size=2).indices()
    r1 = EpochSampler(20, seed=1, epoch=2, rank=1, world_size=2).indices()
    assert sorted(one[:8]) == sorted(r0[:4] + r1[:4])
    assert EpochSampler(20, 1, 2, start=5).indices() == one[5:]
    assert EpochSampler(20, 1, 3).indices() != one


def test_weighted_epoch_sampler_draws_in_proportion_and_resumes():
    weights = [0.0] * 5 + [1.0] * 10 + [10.0] * 5  # a tenth of the weight each on the last five
    sampler = EpochSampler(2000, seed=1, epoch=0, weights=weights * 100)
    drawn = torch.tensor(sampler.indices()) % 20
    assert len(drawn) == 2000
    assert not (drawn < 5).any()  # weight 0: never drawn
    heavy = float((drawn >= 15).float().mean())
    assert 0.75 < heavy < 0.87  # 50 of 60 parts of the weight
    again = EpochSampler(2000, seed=1, epoch=0, weights=weights * 100, start=300).indices()
    assert again == sampler.indices()[300:]
    assert EpochSampler(2000, seed=1, epoch=1, weights=weights * 100).indices() != sampler.indices()
    for bad in ([1.0] * 19, [1.0] * 19 + [-1.0], [1.0] * 19 + [float("nan")], [0.0] * 20):
        with pytest.raises(DataError, match="sample weights"):
            EpochSampler(20, seed=1, epoch=0, weights=bad)


def test_trainer_draws_studies_by_the_data_sets_sample_weights(tmp_path):
    class Weighted(ToyClips):
        def __init__(self) -> None:
            super().__init__(32, bad=set(range(8)))
            self.sample_weights = [0.0] * 8 + [1.0] * 24  # the unreadable clips are never drawn

    torch.manual_seed(0)
    data = Weighted()
    Trainer(ToyClip(), toy_objective(), data, toy_config(tmp_path, steps=6)).fit()
    assert data.skipped == []
    unweighted = ToyClips(32, bad=set(range(8)))
    Trainer(ToyClip(), toy_objective(), unweighted, toy_config(tmp_path / "b", steps=6)).fit()
    assert unweighted.skipped  # without weights the same run reads them


def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(tmp_path):
    class NaNAt(ContrastiveObjective):
        def loss(self, model, batch, step):
            loss, fig = super().loss(model, batch, step)
            if step == 5:
                loss = loss * float("nan")
                fig["loss"] = float("nan")
            return loss, fig

    with pytest.raises(TrainingError, match="step 6.*step_00000004"):
        Trainer(
            ToyClip(),
            NaNAt(toy_tokenizer, ContrastiveConfig(context_length=8)),
            ToyClips(40),
            toy_config(tmp_path),
        ).fit()


@pytest.mark.parametrize(
    "kw, error",
    [
        (dict(lr=0.0), ConfigError),
        (dict(lr=float("nan")), ConfigError),
        (dict(batch_size=0), ConfigError),
        (dict(contrastive={"loss": "triplet"}), ConfigError),
    ],
)
def test_bad_config(tmp_path, kw, error):
    with pytest.raises(error):
        toy_config(tmp_path, **kw)


def test_bad_data(tmp_path):
    with pytest.raises(DataError, match="empty"):
        Trainer(ToyClip(), toy_objective(), ToyClips(0), toy_config(tmp_path)).fit()
    with pytest.raises(DataError, match="larger than"):
        Trainer(ToyClip(), toy_objective(), ToyClips(6), toy_config(tmp_path)).fit()
    with pytest.raises(DataError, match="no readable"):
        Trainer(ToyClip(), toy_objective(), ToyClips(16, bad=set(range(16))), toy_config(tmp_path)).fit()


def test_validation_every_n_steps_and_on_the_final_weights(tmp_path):
    torch.manual_seed(0)
    objective = toy_objective(val_dataset=ToyClips(16, seed=1))
    result = Trainer(ToyClip(), objective, ToyClips(64), toy_config(tmp_path, steps=10, val_every=4)).fit()
    validated = [
        int(r["step"]) for r in result.history if r.get("val/video_to_report.recall@5") not in (None, "")
    ]
    # the starting weights, every 4 steps, and the end even right after a mid-run validation
    assert validated == [0, 4, 8, 10]
    assert result.validation["n"] == 16.0


def test_validation_before_training_leaves_the_run_unchanged(tmp_path):
    weights = []
    for name, val_every in (("plain", 0), ("validated", 5)):
        torch.manual_seed(0)
        objective = toy_objective(val_dataset=ToyClips(16, seed=1))
        config = toy_config(tmp_path / name, steps=6, val_every=val_every)
        result = Trainer(ToyClip(), objective, ToyClips(64), config).fit()
        weights.append(load_file(result.final_dir / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
