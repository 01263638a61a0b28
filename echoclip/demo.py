"""The whole loop on simulated echoes, in minutes on a CPU: the library behind ``echoclip demo``.

simulate -> tokenizer -> pretrain -> CLIP train (from the pretrained tower) -> CLIP
train from scratch (the ablation, same budget, in a process of its own beside the
first CLIP run) -> evaluate both on held-out studies
(zero-shot EF, devices, findings, retrieval) -> frozen-feature probes -> embed and
index the test set. Each stage records itself in ``stages.json`` when it is done, so
a second run (or a run after a kill) skips finished stages and resumes training from
its last checkpoint. Everything lands under one folder; ``metrics.json`` holds the
flat figures the README reports.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from echoclip import atomic
from echoclip.allocator import allocator_name
from echoclip.atomic import jsonable, write_json
from echoclip.loop.config import LoopConfig, load_recipe
from echoclip.processes import BackgroundCall, peak_rss_mb
from echoclip.train.config import TrainConfig

log = logging.getLogger(__name__)

DEVICES = ("pacemaker", "tavr", "surgical_valve", "mitraclip", "impella")
FINDINGS = (
    "lv_dilation",
    "rv_dilation",
    "la_enlargement",
    "pericardial_effusion",
    "lv_hypertrophy",
    "reduced_lv_function",
)

# the manifest column of per-study sampling weights the CLIP stages draw by
SAMPLE_WEIGHT = "sample_weight"


@dataclass(frozen=True)
class DemoRecipe:
    """How much data and compute a demo run uses: a recipe of ``configs/recipes/demo-*.toml``.

    The ``[demo]`` table gives the fields below, ``[demo.pretrain]`` the loop of the
    pretraining stage and ``[train]`` (with ``[train.contrastive]``) both CLIP arms.
    """

    train_studies: int
    test_studies: int
    image_size: int
    frames: int
    fps: float
    model: str
    phrase_min_frequency: int
    device_share: float
    device_concepts: bool
    init_prefix: str
    probe_steps: int
    # the physical field of view of every clip, in cm (PreprocessConfig.field_cm); 0: off
    field_cm: float
    # the clip's cm per pixel as an input of the video embedding (ModelConfig.scale_embedding),
    # hidden from training clips at the rate scale_dropout
    scale_embedding: bool
    scale_dropout: float
    # train the CLIP arm from scratch too (beside the pretrained one) and evaluate it
    ablation: bool
    # the simulator's realism preset (echoclip.data.synthetic.realism): "clean" or "real"
    realism: str
    pretrain: LoopConfig
    train: TrainConfig

    @classmethod
    def load(cls, recipe: str | os.PathLike[str]) -> DemoRecipe:
        """A shipped recipe by name (``"demo-small"``) or a TOML file."""
        return cls.from_dict(load_recipe(recipe), source=str(recipe))

    @classmethod
    def from_dict(cls, recipe: dict[str, Any], source: str = "demo recipe") -> DemoRecipe:
        from echoclip.errors import ConfigError

        demo = dict(recipe.get("demo", {}))
        pretrain = LoopConfig.from_dict(demo.pop("pretrain", {}))
        train = TrainConfig.from_dict(recipe.get("train", {}))
        names = {f.name for f in fields(cls)} - {"pretrain", "train"}
        if set(demo) != names:
            missing, unknown = sorted(names - set(demo)), sorted(set(demo) - names)
            raise ConfigError(f"{source}: [demo] table lacks {missing} / has unknown {unknown}")
        return cls(**demo, pretrain=pretrain, train=train)

    def stages(self) -> list[tuple[str, Stage]]:
        """The stages this recipe runs: the ablation's two only with ``ablation``, the
        probes only with ``probe_steps``."""
        skipped = set() if self.ablation else {"clip_scratch", "evaluate_scratch"}
        if not self.probe_steps:
            skipped.add("probe")
        return [(name, stage) for name, stage in STAGES if name not in skipped]

    def model_overrides(self) -> dict[str, Any] | None:
        """Changes to the model config the recipe asks for: its field of view and scale embedding."""
        from echoclip.models.factory import get_model_config

        changes: dict[str, Any] = {}
        if self.field_cm:
            changes["preprocess"] = {
                **get_model_config(self.model).preprocess,
                "field_cm": float(self.field_cm),
            }
        if self.scale_embedding:
            changes.update(scale_embedding=True, scale_dropout=float(self.scale_dropout))
        return changes or None

    def settings(self) -> dict[str, Any]:
        """The recipe as flat names (``metrics.json``'s ``config.*``; a rerun's check of its folder)."""
        c = self.train.contrastive
        demo = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("pretrain", "train")}
        return {
            **demo,
            "pretrain_steps": self.pretrain.steps,
            "pretrain_lr": self.pretrain.lr,
            "clip_steps": self.train.steps,
            "batch_size": self.train.batch_size,
            "lr": self.train.lr,
            "precision": self.train.precision,
            "sentence_loss_weight": c.sentence_loss_weight,
            "max_sentences": c.max_sentences,
            "value_loss_weight": c.value_loss_weight,
            "value_sentences": c.value_sentences,
            "sentence_report_weight": c.sentence_report_weight,
        }


@dataclass
class DemoRun:
    """The folder layout of one demo run, and what its stages share in this process."""

    out: Path
    recipe: DemoRecipe
    seed: int
    progress: bool = True  # progress bars of decoding and training
    # decoded videos (path -> video), read by pretraining, the SSL arm and the probes:
    # each video is decoded once per process instead of once per stage
    videos: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def data(self) -> Path:
        return self.out / "data"

    @property
    def manifest(self) -> Path:
        return self.data / "manifest.parquet"


Stage = Callable[[DemoRun], dict[str, Any]]


def run_demo(
    out: str | os.PathLike[str] = "runs/demo",
    recipe: str | os.PathLike[str] | DemoRecipe = "demo-small",
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or finish) the demo in ``out`` and return the flat metrics written to ``metrics.json``.

    ``recipe`` is a shipped recipe (``"demo-small"``, ``"demo-medium"``, ``"demo-large"``),
    a TOML file in their format, or a :class:`DemoRecipe`.
    """
    from echoclip.errors import ConfigError

    if not isinstance(recipe, DemoRecipe):
        recipe = DemoRecipe.load(recipe)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = DemoRun(out, recipe, seed, progress=progress)
    state = _read_state(out) if not force else {}
    if state.get("settings") not in (None, _settings(run)) and not force:
        raise ConfigError(
            f"{out} holds a demo run with other settings; use another --out or --force to redo it"
        )
    if force:
        for stage_dir in (
            "data",
            "tokenizer",
            "ssl",
            "clip",
            "clip_scratch",
            "eval",
            "eval_scratch",
            "embeddings",
            "index",
            "probe",
        ):
            shutil.rmtree(out / stage_dir, ignore_errors=True)
        state = {}
    state["settings"] = _settings(run)
    state.setdefault("stages", {})
    state.setdefault("results", {})
    if allocator_name() != "mimalloc":
        log.info(
            "demo: running on the system allocator; `make demo` (or LD_PRELOAD=$(python -m "
            "echoclip.allocator) on x86_64 Linux) runs on mimalloc, which keeps memory flat"
        )
    _run_stages(run, state)
    metrics = collect_metrics(run, state)
    write_json(out / "metrics.json", metrics)
    return metrics


def _run_stages(run: DemoRun, state: dict[str, Any]) -> None:
    """Run the stages ``state`` does not hold yet, recording each in ``stages.json`` as it ends."""
    t0, wall_before = time.perf_counter(), state.get("wall_s", 0.0)
    done, results = state["stages"], state["results"]

    def record(
        name: str,
        result: dict[str, Any],
        seconds: float,
        peak: float | None,
        allocator: str,
        own: bool = False,
    ) -> None:
        results[name] = result
        if own:  # it ran in a process of its own
            state.setdefault("own_process", []).append(name)
        done[name] = round(seconds, 1)
        state.setdefault("peak_rss_mb", {})[name] = peak
        state.setdefault("allocator", {})[name] = allocator
        state["wall_s"] = round(wall_before + time.perf_counter() - t0, 1)
        write_json(run.out / "stages.json", state)

    stages = run.recipe.stages()
    names = [name for name, _ in stages]
    start_at = names.index(BESIDE_FROM) + 1
    join_at = names.index(BESIDE) if BESIDE in names else -1
    beside: _StageBeside | None = None
    try:
        for i, (name, stage) in enumerate(stages):
            if (
                i == start_at
                and join_at > 0
                and BESIDE not in done
                and any(n not in done for n in names[i:join_at])
            ):
                beside = _StageBeside.start(run, BESIDE)
            if name in done:
                log.info("demo: %s already done (%.0f s); reusing it", name, done[name])
                continue
            if name == BESIDE and beside is not None:
                log.info("demo: %s: waiting for it to finish in its own process ...", name)
                record(name, *beside.result(), own=True)
                beside = None
                continue
            log.info("demo: %s ...", name)
            t = time.perf_counter()
            result = jsonable(stage(run))
            record(name, result, time.perf_counter() - t, peak_rss_mb(), allocator_name())
    finally:
        if beside is not None:  # this process failed or was interrupted: end the other one too
            beside.stop()


# -- stages --------------------------------------------------------------------------


def stage_simulate(run: DemoRun) -> dict[str, Any]:
    """Train/val studies from one seed, test studies from seeds training never saw."""
    import pandas as pd

    from echoclip.data.synthetic import simulate_dataset

    s = run.recipe
    parts = {"trainval": (s.train_studies, run.seed), "test": (s.test_studies, 1_000_003 + run.seed)}
    for name, (n, seed) in parts.items():
        if not (run.data / name / "manifest.parquet").is_file():
            simulate_dataset(
                run.data / name,
                n=n,
                seed=seed,
                size=s.image_size,
                frames=s.frames,
                fps=s.fps,
                realism=s.realism,
                overwrite=True,
                workers=os.cpu_count() or 1,
            )
    tables = []
    for name in parts:
        t = pd.read_parquet(run.data / name / "manifest.parquet")
        t["video_path"] = name + "/" + t["video_path"].astype(str)
        if name == "trainval":
            t["split"] = t["split"].replace({"test": "val"})  # held-out patients of this seed validate
        else:
            t["split"] = "test"
        tables.append(t)
    table = pd.concat(tables, ignore_index=True)
    table[SAMPLE_WEIGHT] = _device_weights(table, s.device_share)
    with atomic.writing(run.manifest) as tmp:
        table.to_parquet(tmp)
    counts = table["split"].value_counts().to_dict()
    return {"studies": int(table["study_id"].nunique()), **{f"videos_{k}": int(v) for k, v in counts.items()}}


def _device_weights(table: Any, share: float) -> Any:
    """Sampling weights of the training studies from the devices their reports name (1 elsewhere)."""
    import numpy as np

    from echoclip.data.synthetic import DEVICE_PATTERNS
    from echoclip.train.balance import mention_weights

    weights = np.ones(len(table))
    train = (table["split"] == "train").to_numpy()
    if share > 0 and train.any():
        weights[train] = mention_weights(table.loc[train, "report"].tolist(), DEVICE_PATTERNS, share)
    return weights


def _device_concepts() -> dict[str, str]:
    from echoclip.data.synthetic import DEVICE_PATTERNS

    return {name: pattern.pattern for name, pattern in DEVICE_PATTERNS.items()}


def stage_tokenizer(run: DemoRun) -> dict[str, Any]:
    import pandas as pd

    from echoclip.tokenizer import EchoTokenizer

    table = pd.read_parquet(run.manifest)
    reports = table.loc[table["split"] == "train", "report"].drop_duplicates().tolist()
    tok = EchoTokenizer.train(reports, phrase_min_frequency=run.recipe.phrase_min_frequency)
    tok.save(run.out / "tokenizer")
    lengths = [len(tok.encode(r)) for r in reports[:500]]
    return {"vocab_size": tok.vocab_size, "mean_tokens_per_report": sum(lengths) / len(lengths)}


def stage_pretrain(run: DemoRun) -> dict[str, Any]:
    from echoclip.pretrain.pretrain import pretrain

    result = pretrain(
        run.manifest,
        run.recipe.pretrain.updated(out=str(run.out / "ssl"), seed=run.seed, progress=run.progress),
        model=run.recipe.model,
        model_overrides=run.recipe.model_overrides(),
        train_split="train",
        val_split=None,
        resume=True,
        video_cache=run.videos,
    )
    return {"final_loss": _last_loss(result.history), "steps": result.step}


def stage_clip(run: DemoRun) -> dict[str, Any]:
    return _train(run, "clip", init=run.out / "ssl" / "final")


def stage_clip_scratch(run: DemoRun) -> dict[str, Any]:
    return _train(run, "clip_scratch", init=None)


def _train(run: DemoRun, name: str, init: Path | None) -> dict[str, Any]:
    from echoclip.train.clip import train_clip

    result = train_clip(
        run.manifest,
        _clip_config(run, run.out / name),
        model=run.recipe.model,
        model_overrides=run.recipe.model_overrides(),
        tokenizer=run.out / "tokenizer",
        init=init,
        init_prefixes=(run.recipe.init_prefix,) if init is not None and run.recipe.init_prefix else None,
        resume=True,
        video_cache=run.videos,
        ood=name == "clip",  # only the served model is asked whether a video is unlike its data
    )
    return {
        "final_loss": _last_loss(result.history),
        "steps": result.step,
        **{f"val.{k}": v for k, v in result.validation.items()},
    }


def stage_evaluate(run: DemoRun) -> dict[str, Any]:
    return _evaluate(run, "clip", "eval")


def stage_evaluate_scratch(run: DemoRun) -> dict[str, Any]:
    return _evaluate(run, "clip_scratch", "eval_scratch")


def _evaluate(run: DemoRun, model_dir: str, out: str) -> dict[str, Any]:
    from echoclip.evaluate import evaluate
    from echoclip.models.factory import get_tokenizer, load_model

    path = run.out / model_dir / "final"
    model = load_model(path)
    return evaluate(
        model,
        get_tokenizer(path),
        run.manifest,
        run.out / out,
        split="test",
        calibration_split="val",
        metrics_csv=run.out / model_dir / "metrics.csv",
        num_workers=min(2, os.cpu_count() or 1),  # decoding overlaps embedding
    )


def stage_probe(run: DemoRun) -> dict[str, Any]:
    from echoclip.data.datasets import open_dataset
    from echoclip.data.transforms import VideoTransform
    from echoclip.models.factory import load_model
    from echoclip.pretrain.probe import probe_against_random

    preprocess = load_model(run.out / "clip" / "final").preprocess_config
    train = open_dataset(run.manifest, ["train", "val"], VideoTransform(preprocess))
    test = open_dataset(run.manifest, "test", VideoTransform(preprocess))
    for dataset in (train, test):  # both encoders and the attentive probes read every clip
        dataset.preload(progress=False, cache=run.videos)
    figures = probe_against_random(
        run.out / "ssl" / "final",
        train,
        target="ef",
        test_dataset=test,
        attentive_steps=run.recipe.probe_steps,
        seed=run.seed,
        precision=run.recipe.train.precision,
    )
    write_json(run.out / "probe" / "probe.json", figures)
    return figures


def stage_index(run: DemoRun) -> dict[str, Any]:
    """Embed the test studies' videos and reports and build the search indexes."""
    from echoclip.data.datasets import open_dataset
    from echoclip.data.transforms import VideoTransform
    from echoclip.models.embed import embed_dataset
    from echoclip.models.factory import get_tokenizer, load_model
    from echoclip.models.model_dir import model_identity
    from echoclip.retrieval import EmbeddingStore, build_index

    model_dir = run.out / "clip" / "final"
    model = load_model(model_dir)
    test = open_dataset(run.manifest, "test", VideoTransform(model.preprocess_config))
    stores = run.out / "embeddings"
    embed_dataset(
        model,
        get_tokenizer(model_dir),
        test,
        stores,
        model_identity=model_identity(model_dir),
        overwrite=True,
        progress=run.progress,
    )
    figures: dict[str, Any] = {}
    for kind in ("videos", "reports"):
        index = build_index(EmbeddingStore(stores / kind), factory="auto")
        index.save(run.out / "index" / kind)
        figures[f"{kind}.size"] = index.size
    return figures


# The ablation trains in a process of its own, beside the SSL arm, each process on half
# the threads: a CLIP step on half the threads is slower, but not twice as slow, so two
# such runs side by side end well before two full-width runs one after the other. It
# starts after pretraining, not at once, so that the two arms end together (started at
# once, it slowed pretraining and the SSL arm ended last). A rerun whose SSL arm is done
# trains the ablation here, on every thread. Measurements: docs/experiments.md.
BESIDE = "clip_scratch"
BESIDE_FROM = "pretrain"

# Both CLIP runs come before any evaluation: in one process, a CLIP run after `evaluate`
# grew in memory step by step, one after another CLIP run did not (docs/experiments.md).
# The cause is not found yet.
STAGES: list[tuple[str, Stage]] = [
    ("simulate", stage_simulate),
    ("tokenizer", stage_tokenizer),
    ("pretrain", stage_pretrain),
    ("clip", stage_clip),
    ("clip_scratch", stage_clip_scratch),
    ("evaluate", stage_evaluate),
    ("index", stage_index),
    ("evaluate_scratch", stage_evaluate_scratch),
    ("probe", stage_probe),
]


class _StageBeside:
    """One stage of the run in a process of its own while this process runs the others."""

    def __init__(self, call: BackgroundCall, threads: int) -> None:
        self._call, self._threads = call, threads

    @classmethod
    def start(cls, run: DemoRun, name: str) -> _StageBeside:
        import torch

        threads = torch.get_num_threads()
        theirs = max(1, threads // 2)
        log.info(
            "demo: %s starts in its own process on %d thread(s), beside the next stages; its losses go to %s",
            name,
            theirs,
            run.out / name / "metrics.csv",
        )
        call = BackgroundCall(_run_stage_alone, run.out, run.recipe, run.seed, name, theirs)
        torch.set_num_threads(max(1, threads - theirs))
        return cls(call, threads)

    def result(self) -> tuple[dict[str, Any], float, float | None, str]:
        """Wait for the stage: its result, seconds, peak memory (MB) and allocator."""
        try:
            return self._call.result()
        finally:
            self._restore_threads()

    def stop(self) -> None:
        self._call.stop()
        self._restore_threads()

    def _restore_threads(self) -> None:
        import torch

        torch.set_num_threads(self._threads)


def _run_stage_alone(
    out: Path, recipe: DemoRecipe, seed: int, name: str, threads: int
) -> tuple[dict[str, Any], float, float | None, str]:
    """Run one stage in this (background) process, quietly, on ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    t = time.perf_counter()
    result = jsonable(dict(STAGES)[name](DemoRun(out, recipe, seed, progress=False)))
    return result, time.perf_counter() - t, peak_rss_mb(), allocator_name()


# -- metrics -------------------------------------------------------------------------


def collect_metrics(run: DemoRun, state: dict[str, Any]) -> dict[str, Any]:
    """The flat, stable metric names of ``metrics.json``."""
    import pandas as pd

    from echoclip.precision import resolve_precision

    results = state["results"]
    m: dict[str, Any] = {}
    ev, ev0 = results.get("evaluate", {}), results.get("evaluate_scratch", {})
    zs = ev.get("zero_shot", {})
    ef = zs.get("ejection_fraction", {})
    table = pd.read_parquet(run.manifest)
    train_mean = float(table.loc[table["split"] == "train", "ef"].mean())
    test_ef = table.loc[table["split"] == "test"].drop_duplicates("study_id")["ef"].to_numpy(float)
    m["zeroshot.ef.mae"] = ef.get("mae")
    m["zeroshot.ef.mae_mean_baseline"] = float(abs(test_ef - train_mean).mean())
    m["zeroshot.ef.r2"] = ef.get("r2")
    m["zeroshot.ef.pearson"] = ef.get("pearson_r")
    for d in DEVICES:
        m[f"zeroshot.device.{d}.auc"] = zs.get(d, {}).get("auc")
    for f in FINDINGS:
        m[f"zeroshot.finding.{f}.auc"] = zs.get(f, {}).get("auc")
    r = ev.get("retrieval", {})
    v2r = r.get("video_to_report", {})
    for k in (1, 5, 10):
        m[f"retrieval.video_to_report.recall@{k}"] = v2r.get(f"recall@{k}")
    m["retrieval.video_to_report.mean_rank"] = v2r.get("mean_rank")
    n_test = ev.get("data", {}).get("studies") or len(test_ef)
    m["retrieval.video_to_report.chance_recall@10"] = min(1.0, 10 / max(1, n_test))
    m["retrieval.report_to_video.recall@10"] = r.get("report_to_video", {}).get("recall@10")
    # test videos the model's OOD reference takes for unlike its training videos (2.5 % expected)
    m["ood.test_share_flagged"] = (ev.get("out_of_distribution") or {}).get("share")
    m["ablation.scratch.zeroshot.ef.mae"] = ev0.get("zero_shot", {}).get("ejection_fraction", {}).get("mae")
    m["ablation.scratch.retrieval.video_to_report.recall@10"] = (
        ev0.get("retrieval", {}).get("video_to_report", {}).get("recall@10")
    )
    for d in DEVICES:
        m[f"ablation.scratch.zeroshot.device.{d}.auc"] = ev0.get("zero_shot", {}).get(d, {}).get("auc")
    probe = results.get("probe", {})
    for which in ("pretrained", "random"):
        for kind in ("ridge", "attentive"):
            m[f"probe.ef.{kind}.r2.{which}"] = probe.get(which, {}).get(f"{kind}.r2")
    m["probe.ef.r2.pretrained"] = probe.get("pretrained", {}).get("attentive.r2")
    m["probe.ef.r2.random"] = probe.get("random", {}).get("attentive.r2")
    for stage, secs in state["stages"].items():
        m[f"time.{stage}_s"] = secs
    # the wall time of the runs that did the work (stages beside one another overlap);
    # runs recorded before that figure existed ran their stages one after another
    m["time.total_s"] = state.get("wall_s", round(sum(state["stages"].values()), 1))
    # the peak of the process that ran a stage, so far, when the stage ended (a stage's
    # figure also covers those before it in that process); the run's peak adds the peak
    # of a stage that ran beside the others in its own process
    peaks = {k: v for k, v in state.get("peak_rss_mb", {}).items() if v is not None}
    for stage, mb in peaks.items():
        m[f"memory.{stage}_peak_rss_mb"] = mb
    own = set(state.get("own_process", []))
    main = [mb for stage, mb in peaks.items() if stage not in own]
    m["memory.peak_rss_mb"] = (
        round(max(main, default=0.0) + sum(peaks.get(stage, 0.0) for stage in own), 1) if peaks else None
    )
    # "mimalloc" or "system" for each stage: the peaks above depend on it (see echoclip.allocator)
    for stage, name in state.get("allocator", {}).items():
        m[f"memory.{stage}_allocator"] = name
    for k, v in run.recipe.settings().items():
        m[f"config.{k}"] = v
    m["config.seed"] = run.seed
    m["config.precision_used"] = resolve_precision(run.recipe.train.precision)
    return jsonable(m)


def format_table(metrics: dict[str, Any]) -> str:
    """The final table ``echoclip demo`` prints."""

    def f(key: str, digits: int = 3) -> str:
        v = metrics.get(key)
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}g}"

    rows = [
        (
            "zero-shot EF MAE (%)",
            f("zeroshot.ef.mae"),
            f("ablation.scratch.zeroshot.ef.mae"),
            f"mean predictor {f('zeroshot.ef.mae_mean_baseline')}",
        ),
        ("zero-shot EF Pearson r", f("zeroshot.ef.pearson"), "", ""),
        *[
            (
                f"device AUC: {d}",
                f(f"zeroshot.device.{d}.auc"),
                f(f"ablation.scratch.zeroshot.device.{d}.auc"),
                "",
            )
            for d in DEVICES
        ],
        *[(f"finding AUC: {x}", f(f"zeroshot.finding.{x}.auc"), "", "") for x in FINDINGS],
        (
            "video->report recall@10",
            f("retrieval.video_to_report.recall@10"),
            f("ablation.scratch.retrieval.video_to_report.recall@10"),
            f"chance {f('retrieval.video_to_report.chance_recall@10')}",
        ),
        ("report->video recall@10", f("retrieval.report_to_video.recall@10"), "", ""),
        ("EF probe R² (attentive)", f("probe.ef.r2.pretrained"), f("probe.ef.r2.random"), "random init"),
        ("total time (s)", f("time.total_s", 4), "", ""),
        ("peak memory (MB)", f("memory.peak_rss_mb", 5), "", ""),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':{width}}  {'SSL+CLIP':>10}  {'scratch':>10}  baseline"]
    lines += [f"{a:{width}}  {b:>10}  {c:>10}  {d}" for a, b, c, d in rows]
    return "\n".join(lines)


# -- helpers -------------------------------------------------------------------------


def _clip_config(run: DemoRun, out: Path) -> TrainConfig:
    """The recipe's ``[train]`` for one CLIP arm, with the simulator's device concepts and weights."""
    recipe = run.recipe
    contrastive = recipe.train.contrastive
    if recipe.device_concepts:
        contrastive = contrastive.updated(concept_patterns=_device_concepts())
    return recipe.train.updated(
        out=str(out),
        seed=run.seed,
        progress=run.progress,
        sample_weight_column=SAMPLE_WEIGHT if recipe.device_share > 0 else None,
        contrastive=contrastive,
    )


def _settings(run: DemoRun) -> dict[str, Any]:
    return {**run.recipe.settings(), "seed": run.seed}


def _last_loss(history: list[dict[str, Any]]) -> float | None:
    for row in reversed(history):
        if row.get("loss") not in (None, ""):
            return float(row["loss"])
    return None


def _read_state(out: Path) -> dict[str, Any]:
    path = out / "stages.json"
    return json.loads(path.read_text()) if path.is_file() else {}
