"""The demo pipeline at toy size: every stage's outputs exist and load; a crash resumes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from echoclip import demo
from echoclip.allocator import allocator_name
from echoclip.demo import DemoRecipe, run_demo


def toy_recipe(pretrain_steps: int = 2, clip_steps: int = 3, probe_steps: int = 3) -> DemoRecipe:
    """The shipped small recipe at toy size (20 + 8 studies of 64 px, a few steps of 4
    studies), with the ablation that ``echoclip demo --ablation`` adds."""
    small = DemoRecipe.load("demo-small")
    return dataclasses.replace(
        small,
        train_studies=20,
        test_studies=8,
        image_size=64,
        probe_steps=probe_steps,
        ablation=True,
        pretrain=small.pretrain.updated(
            steps=pretrain_steps, batch_size=4, warmup_steps=0, checkpoint_every=1, log_every=1
        ),
        train=small.train.updated(
            steps=clip_steps, batch_size=4, warmup_steps=0, checkpoint_every=1, log_every=1
        ),
    )


TOY = toy_recipe()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    metrics = run_demo(out, TOY, seed=0, progress=False)
    return out, metrics


def test_every_stage_writes_loadable_outputs(finished):
    import echoclip
    from echoclip.retrieval import Index

    out, metrics = finished
    assert json.loads((out / "metrics.json").read_text()) == metrics
    for key in (
        "zeroshot.ef.mae",
        "zeroshot.ef.mae_mean_baseline",
        "zeroshot.ef.pearson",
        "retrieval.video_to_report.recall@10",
        "retrieval.video_to_report.chance_recall@10",
        "ablation.scratch.zeroshot.ef.mae",
        "time.total_s",
        "config.clip_steps",
        "ood.test_share_flagged",
    ):
        assert key in metrics, key
    assert metrics["config.precision_used"] in ("fp32", "bf16")
    assert metrics["zeroshot.ef.mae"] is not None and metrics["zeroshot.ef.mae_mean_baseline"] > 0
    assert all(f"zeroshot.device.{d}.auc" in metrics for d in demo.DEVICES)
    model = echoclip.load_model(out / "clip" / "final")
    assert model.ood_reference is not None and model.ood_reference.threshold is not None
    assert 0 <= metrics["ood.test_share_flagged"] <= 1
    assert echoclip.get_tokenizer(out / "clip" / "final").vocab_size <= model.config.text.vocab_size
    for name in ("metrics.json", "summary.md", "regression_ejection_fraction.png", "retrieval_ranks.png"):
        assert (out / "eval" / name).is_file(), name
    assert (out / "eval_scratch" / "metrics.json").is_file()
    assert (out / "eval_one_video" / "metrics.json").is_file()
    assert (out / "ssl" / "final").is_dir()
    reports = Index.load(out / "index" / "reports")
    assert reports.size == metrics.get("config.test_studies", TOY.test_studies) or reports.size > 0
    assert Index.load(out / "index" / "videos").size > Index.load(out / "index" / "studies").size > 0
    stages = json.loads((out / "stages.json").read_text())["stages"]
    assert list(stages) == [name for name, _ in demo.STAGES]
    table = pd.read_parquet(out / "data" / "manifest.parquet")
    assert (table[demo.SAMPLE_WEIGHT] >= 1).all()
    assert (table.loc[table["split"] != "train", demo.SAMPLE_WEIGHT] == 1).all()
    # the ablation trained in a process of its own, beside the SSL arm; this process ran
    # every other stage: its peak memory so far never falls
    state = json.loads((out / "stages.json").read_text())
    assert state["own_process"] == [demo.BESIDE]
    peaks = [metrics[f"memory.{name}_peak_rss_mb"] for name in stages if name != demo.BESIDE]
    assert all(p > 0 for p in peaks) and peaks == sorted(peaks)
    beside = metrics[f"memory.{demo.BESIDE}_peak_rss_mb"]
    assert metrics["memory.peak_rss_mb"] == pytest.approx(peaks[-1] + beside, abs=0.1)
    assert {metrics[f"memory.{name}_allocator"] for name in stages} == {allocator_name()}
    # the total is the run's wall time, not the sum of stages that overlapped
    assert metrics["time.total_s"] == state["wall_s"] > 0


def test_the_demo_trains_and_scores_multi_view_studies_beside_one_video_of_each(finished):
    out, metrics = finished
    table = pd.read_parquet(out / "data" / "manifest.parquet")
    per_study = table.groupby("study_id")["view"].agg(list)
    assert set(table["view"]) == set(TOY.views) and per_study.map(len).max() > 1
    assert all(len(views) == len(set(views)) for views in per_study)  # one video of each view
    assert json.loads((out / "eval" / "metrics.json").read_text())["level"] == "study"
    assert metrics["study.level"] == "study" and metrics["study.views"] == list(TOY.views)
    assert metrics["study.test_studies"] == TOY.test_studies < metrics["study.test_videos"]
    assert metrics["study.pooling"] == "mean"  # the recipe's, chosen by bench_study.py
    one_video = json.loads((out / "eval_one_video" / "metrics.json").read_text())
    assert "level" not in one_video and one_video["data"]["videos"] == TOY.test_studies
    for key in ("study.mean_auc", "study.one_video.mean_auc", "study.one_video.zeroshot.ef.mae"):
        assert metrics[key] is not None, key
    aucs = [metrics[f"zeroshot.device.{d}.auc"] for d in demo.DEVICES]
    aucs += [metrics[f"zeroshot.finding.{x}.auc"] for x in demo.FINDINGS]
    known = [a for a in aucs if a is not None]
    assert metrics["study.mean_auc"] == pytest.approx(sum(known) / len(known))
    from echoclip.cli.demo import _first_test_study

    files = _first_test_study(out)  # the demo's hint: search by the files of one test study
    first = table[table["split"] == "test"]["study_id"].iloc[0]
    assert sorted(files) == sorted(
        str(out / "data" / p) for p in table.loc[table["study_id"] == first, "video_path"]
    )
    assert all(Path(f).is_file() for f in files)
    header, *rows = demo.format_table(metrics).splitlines()
    assert header.split() == ["study", "one", "video", "scratch", "baseline"]
    mean_row = next(r for r in rows if r.startswith("mean AUC"))
    assert f"{metrics['study.one_video.mean_auc']:.3g}" in mean_row


def test_a_single_view_recipe_trains_at_clip_level_without_the_one_video_comparison():
    robust = DemoRecipe.load("demo-robust")
    assert robust.views == ("A4C",) and robust.train.level == "clip"
    assert "evaluate_one_video" not in [name for name, _ in robust.stages()]
    table = demo.format_table({"study.level": "clip", "zeroshot.ef.mae": 3.0})
    assert table.splitlines()[0].split() == ["SSL+CLIP", "baseline"]


def test_a_recipe_draws_by_weight_when_a_device_or_finding_share_is_set():
    small = DemoRecipe.load("demo-small")
    assert small.draws_by_weight
    assert (
        demo._clip_config(demo.DemoRun(Path("r"), small, seed=0), Path("x")).sample_weight_column
        == demo.SAMPLE_WEIGHT
    )
    for shares in ({"device_share": 0.0}, {"finding_share": 0.0}):
        assert dataclasses.replace(small, **shares).draws_by_weight
    plain = dataclasses.replace(small, device_share=0.0, finding_share=0.0)
    assert not plain.draws_by_weight
    assert demo._clip_config(demo.DemoRun(Path("r"), plain, seed=0), Path("x")).sample_weight_column is None


def test_a_recipe_names_the_device_and_finding_concepts_it_asks_for():
    from echoclip.data.synthetic import DEVICES, FINDINGS

    both = DemoRecipe.load("demo-small")
    assert both.device_concepts and both.finding_concepts and both.finding_first
    assert list(both.concept_patterns) == [*DEVICES, *FINDINGS]
    small = dataclasses.replace(both, finding_concepts=False)
    assert list(small.concept_patterns) == list(DEVICES)
    config = demo._clip_config(demo.DemoRun(Path("r"), both, seed=0), Path("x"))
    assert config.contrastive.concept_patterns == both.concept_patterns
    assert dataclasses.replace(small, device_concepts=False).concept_patterns == {}
    # the findings' sentences are concepts without being taken first unless finding_first
    assert config.contrastive.first_concepts is None
    masked = dataclasses.replace(both, finding_first=False)
    config = demo._clip_config(demo.DemoRun(Path("r"), masked, seed=0), Path("x"))
    assert config.contrastive.first_concepts == list(DEVICES)
    assert list(config.contrastive.concept_patterns) == [*DEVICES, *FINDINGS]


def test_a_recipe_with_a_bad_videos_per_view_is_refused():
    from echoclip.errors import ConfigError
    from echoclip.loop.config import load_recipe

    recipe = load_recipe("demo-small")
    recipe["demo"]["videos_per_view"] = [1, 2, 3]
    with pytest.raises(ConfigError, match="videos_per_view"):
        DemoRecipe.from_dict(recipe)
    recipe["demo"]["videos_per_view"] = [1, 2]
    assert DemoRecipe.from_dict(recipe).videos_per_view == (1, 2)


def test_sample_weights_draw_rare_devices_and_findings_more_often_in_training_only():
    table = pd.DataFrame(
        {
            "report": [
                "A PACEMAKER LEAD IS SEEN.",
                "THE RIGHT VENTRICLE IS SEVERELY DILATED.",
                "NORMAL RV SIZE.",
                "NORMAL STUDY.",
                "A PACEMAKER LEAD IS SEEN. THE RIGHT VENTRICLE IS SEVERELY DILATED.",
            ],
            "split": ["train", "train", "train", "train", "test"],
        }
    )
    # a pacemaker in 1 of 4 training reports, asked for in half of the draws: weight 2
    assert demo._sample_weights(table, 0.5, 0.0).tolist() == [2.0, 1.0, 1.0, 1.0, 1.0]
    # RV dilation stated in 1 of 4 (the denial "normal RV size" is no mention): weight 3
    assert demo._sample_weights(table, 0.0, 0.75).tolist() == [1.0, 3.0, 1.0, 1.0, 1.0]
    assert demo._sample_weights(table, 0.5, 0.75).tolist() == [2.0, 3.0, 1.0, 1.0, 1.0]
    assert demo._sample_weights(table, 0.0, 0.0).tolist() == [1.0] * 5


def test_a_crash_resumes_without_redoing_finished_stages(tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls: list[str] = []
    original = dict(demo.STAGES)

    def wrapped(name):
        def stage(run):
            calls.append(name)
            if name == "clip" and calls.count("clip") == 1:
                raise KeyboardInterrupt  # killed during CLIP training
            return original[name](run)

        return stage

    monkeypatch.setattr(demo, "STAGES", [(n, wrapped(n)) for n, _ in demo.STAGES])
    small = toy_recipe(pretrain_steps=1, clip_steps=2, probe_steps=1)
    with pytest.raises(KeyboardInterrupt):
        run_demo(out, small, progress=False)
    assert calls == ["simulate", "tokenizer", "pretrain", "clip"]
    run_demo(out, small, progress=False)
    assert calls.count("simulate") == 1 and calls.count("pretrain") == 1 and calls.count("clip") == 2
    with pytest.raises(ValueError, match="other settings"):
        run_demo(out, TOY, progress=False)


def test_a_recipe_without_the_ablation_or_probes_runs_the_pretrained_arm_alone():
    lean = dataclasses.replace(TOY, ablation=False, probe_steps=0)
    assert [name for name, _ in lean.stages()] == [
        "simulate",
        "tokenizer",
        "pretrain",
        "clip",
        "evaluate",
        "evaluate_one_video",
        "index",
    ]
    assert [name for name, _ in TOY.stages()] == [name for name, _ in demo.STAGES]


def test_a_field_of_view_reaches_the_models_preprocessing():
    assert TOY.model_overrides() is None
    wide = dataclasses.replace(TOY, field_cm=24.0).model_overrides()
    assert wide["preprocess"]["field_cm"] == 24.0 and wide["preprocess"]["fps"] == 12.5
    assert DemoRecipe.load("demo-small").settings()["field_cm"] == 0.0
    scaled = dataclasses.replace(TOY, scale_embedding=True, scale_dropout=0.2).model_overrides()
    assert scaled == {"scale_embedding": True, "scale_dropout": 0.2}


def test_the_robust_recipe_is_the_demo_recipe_on_real_studies_with_the_acquisition_augmentation():
    small, robust = DemoRecipe.load("demo-small"), DemoRecipe.load("demo-robust")
    augment = dataclasses.replace(small.train.augment, acquisition_p=0.2, acquisition_strength=0.75)
    # the single-view recipe its figures were measured with: one A4C video of 32 frames per
    # study, 700 clip-level steps of 40
    train = dataclasses.replace(
        small.train,
        augment=augment,
        level="clip",
        videos_per_study=4,
        study_pooling=None,
        steps=700,
        batch_size=40,
        checkpoint_every=175,
    )
    expected = dataclasses.replace(
        small,
        realism="real",
        ablation=False,
        probe_steps=0,
        views=("A4C",),
        view_missing=0.0,
        frames=32,
        fps=25.0,
        train=train,
    )
    assert robust == expected


def test_the_findings_are_asked_in_the_training_reports_own_sentences(finished):
    import pandas as pd

    from echoclip.zeroshot.prompts import load_prompt_set
    from echoclip.zeroshot.sections import split_sentences

    out, metrics = finished
    prompts = load_prompt_set(out / "prompts" / "findings.json")
    table = pd.read_parquet(out / "data" / "manifest.parquet")
    train = {s for r in table[table["split"] == "train"]["report"] for _, s in split_sentences(r)}
    test = {s for r in table[table["split"] == "test"]["report"] for _, s in split_sentences(r)}
    read = [t for t in prompts.targets.values() if set(t.texts()) <= train]
    assert read, "no finding was asked in the training reports' sentences"
    for target in read:  # test reports lend no prompt of their own
        assert not set(target.texts()) & (test - train)
    assert prompts.name == "findings" and not prompts.contexts
