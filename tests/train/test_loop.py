"""The training loop: learning, exact resume, atomic checkpoints, bad input."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from echoclip.errors import ConfigError, DataError, TrainingError
from echoclip.train.checkpoint import latest_checkpoint, list_checkpoints
from echoclip.train.config import TrainConfig
from echoclip.train.contrastive import ContrastiveObjective, augment_report, sample_rng
from echoclip.train.loop import EpochSampler, Trainer

from .toy import ToyClip, ToyClips, toy_tokenizer


def _objective(**kw) -> ContrastiveObjective:
    return ContrastiveObjective(toy_tokenizer, context_length=8, sentence_dropout=0.3, **kw)


def _config(tmp_path, **kw) -> TrainConfig:
    base = dict(
        out=str(tmp_path / "run"),
        steps=12,
        batch_size=8,
        lr=3e-2,
        warmup_steps=2,
        checkpoint_every=4,
        log_every=1,
        tensorboard=False,
        progress=False,
        seed=3,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_loss_falls_and_run_writes_outputs(tmp_path):
    torch.manual_seed(0)
    result = Trainer(ToyClip(), _objective(), ToyClips(64), _config(tmp_path, steps=40)).fit()
    losses = [float(r["loss"]) for r in result.history if r.get("loss") not in (None, "")]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    assert (result.final_dir / "model.safetensors").is_file()
    assert result.metrics_csv.read_text().startswith("step,")
    assert len(list_checkpoints(tmp_path / "run")) == 2  # keep_last


def test_resume_after_crash_gives_identical_weights_and_metrics(tmp_path):
    torch.manual_seed(0)
    reference = Trainer(ToyClip(), _objective(), ToyClips(40), _config(tmp_path / "a")).fit()

    class Crash(ContrastiveObjective):
        def loss(self, model, batch, step):
            if step == 10:
                raise KeyboardInterrupt  # a kill between checkpoints (step 8) and the end
            return super().loss(model, batch, step)

    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        Trainer(
            ToyClip(), Crash(toy_tokenizer, context_length=8), ToyClips(40), _config(tmp_path / "b")
        ).fit()
    assert latest_checkpoint(tmp_path / "b" / "run").name == "step_00000008"
    torch.manual_seed(123)  # the resumed process starts from different global RNG state
    resumed = Trainer(ToyClip(), _objective(), ToyClips(40), _config(tmp_path / "b"), resume=True).fit()

    a = load_file(reference.final_dir / "model.safetensors")
    b = load_file(resumed.final_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert reference.metrics_csv.read_text() == resumed.metrics_csv.read_text()


def test_half_written_checkpoint_is_ignored(tmp_path):
    Trainer(ToyClip(), _objective(), ToyClips(40), _config(tmp_path, steps=4)).fit()
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


def test_report_augmentation_never_drops_everything():
    report = "A. B. C. D."
    for i in range(200):
        out = augment_report(report, sample_rng(0, 0, i), dropout=0.9, shuffle=True)
        assert out and set(out.split()) <= {"A.", "B.", "C.", "D."}
    same = [augment_report(report, sample_rng(5, 1, 7), 0.3, False) for _ in range(3)]
    assert len(set(same)) == 1


def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(tmp_path):
    class NaNAt(ContrastiveObjective):
        def loss(self, model, batch, step):
            loss, fig = super().loss(model, batch, step)
            if step == 5:
                loss = loss * float("nan")
                fig["loss"] = float("nan")
            return loss, fig

    with pytest.raises(TrainingError, match="step 6.*step_00000004"):
        Trainer(ToyClip(), NaNAt(toy_tokenizer, context_length=8), ToyClips(40), _config(tmp_path)).fit()


@pytest.mark.parametrize(
    "kw, error",
    [
        (dict(lr=0.0), ConfigError),
        (dict(lr=float("nan")), ConfigError),
        (dict(batch_size=0), ConfigError),
        (dict(loss="triplet"), ConfigError),
    ],
)
def test_bad_config(tmp_path, kw, error):
    with pytest.raises(error):
        _config(tmp_path, **kw)


def test_bad_data(tmp_path):
    with pytest.raises(DataError, match="empty"):
        Trainer(ToyClip(), _objective(), ToyClips(0), _config(tmp_path)).fit()
    with pytest.raises(DataError, match="larger than"):
        Trainer(ToyClip(), _objective(), ToyClips(6), _config(tmp_path)).fit()
    with pytest.raises(DataError, match="no readable"):
        Trainer(ToyClip(), _objective(), ToyClips(16, bad=set(range(16))), _config(tmp_path)).fit()


def test_study_pairs_draw_one_video_per_study_and_skip_empty_reports():
    from echoclip.train.pairs import StudyPairs

    base = ToyClips(6)
    pairs = StudyPairs(base, ["s1", "s1", "s1", "s2", "s3", "s3"], ["R", "R", "R", "R2", "", ""], seed=0)
    assert len(pairs) == 2  # s3 has an empty report
    drawn = set()
    for epoch in range(12):
        pairs.set_epoch(epoch)
        item = pairs[0]
        drawn.add(round(float(item["video"].sum()), 4))
        assert item["index"] == 0
    assert len(drawn) == 3  # every video of study s1 is used over the epochs


def test_validation_every_n_steps_and_on_the_final_weights(tmp_path):
    torch.manual_seed(0)
    objective = _objective(val_dataset=ToyClips(16, seed=1))
    result = Trainer(ToyClip(), objective, ToyClips(64), _config(tmp_path, steps=10, val_every=4)).fit()
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
        objective = _objective(val_dataset=ToyClips(16, seed=1))
        config = _config(tmp_path / name, steps=6, val_every=val_every)
        result = Trainer(ToyClip(), objective, ToyClips(64), config).fit()
        weights.append(load_file(result.final_dir / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
