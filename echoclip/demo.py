"""The whole loop on simulated echoes, in minutes on a CPU: the library behind ``echoclip demo``.

simulate (multi-view studies) -> tokenizer -> pretrain -> CLIP train from the pretrained
tower (at study level: the study embedding of a few of each study's videos meets its
report) -> optionally the same training from scratch (the ablation, same budget, in a
process of its own beside the first CLIP run) -> evaluate on held-out studies (zero-shot
EF, devices, findings, retrieval; at study level also the same model given one video of
each study) -> optionally frozen-feature probes -> embed and index the test set. Each
stage records itself in ``stages.json`` when it is done, so a second run (or a run after
a kill) skips finished stages and resumes training from its last checkpoint. Everything
lands under one folder; ``metrics.json`` holds the flat figures the README reports.
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
from echoclip.train.config import ContrastiveConfig, TrainConfig

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
    # the same for the findings a training report states (0 = off)
    finding_share: float
    device_concepts: bool
    # the same for a sentence stating a finding (the simulator's finding patterns); its
    # sentences are not taken first into the step's sentences, as a device's are, when
    # finding_first is false
    finding_concepts: bool
    finding_first: bool
    init_prefix: str
    probe_steps: int
    # the physical field of view of every clip, in cm (PreprocessConfig.field_cm); 0: off
    field_cm: float
    # the clip's cm per pixel as an input of the video embedding (ModelConfig.scale_embedding),
    # hidden from training clips at the rate scale_dropout
    scale_embedding: bool
    scale_dropout: float
    # ask the findings in the sentences the training reports state and deny them in
    # (echoclip.zeroshot.corpus_prompts) instead of the shipped findings prompts
    corpus_prompts: bool
    # train the CLIP arm from scratch too (beside the pretrained one) and evaluate it
    ablation: bool
    # the simulator's realism preset (echoclip.data.synthetic.realism): "clean" or "real"
    realism: str
    # the views each study records, each acquired videos_per_view times (a [min, max]
    # range, drawn per study and view) and missing from a study at the rate view_missing
    views: tuple[str, ...]
    videos_per_view: tuple[int, int]
    view_missing: float
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
        per_view = demo["videos_per_view"]
        per_view = (per_view, per_view) if isinstance(per_view, int) else tuple(per_view)
        if len(per_view) != 2:
            raise ConfigError(
                f"{source}: videos_per_view is a count or [min, max], not {demo['videos_per_view']!r}"
            )
        demo.update(views=tuple(demo["views"]), videos_per_view=per_view)
        return cls(**demo, pretrain=pretrain, train=train)

    @property
    def concept_patterns(self) -> dict[str, str]:
        """The concepts the contrastive terms do not contrast between phrasings (name ->
        regular expression): the simulator's devices and findings, as the recipe asks."""
        from echoclip.data.synthetic import DEVICE_PATTERNS, FINDING_PATTERNS, finding_concept

        patterns = {}
        if self.device_concepts:
            patterns.update({name: p.pattern for name, p in DEVICE_PATTERNS.items()})
        if self.finding_concepts:
            patterns.update({name: finding_concept(name) for name in FINDING_PATTERNS})
        return patterns

    @property
    def first_concepts(self) -> list[str] | None:
        """The concepts whose sentences the CLIP stages take first (``None``: all)."""
        from echoclip.data.synthetic import FINDINGS

        if self.finding_first or not self.finding_concepts:
            return None
        return [name for name in self.concept_patterns if name not in FINDINGS]

    @property
    def contrastive(self) -> ContrastiveConfig:
        """The recipe's ``[train.contrastive]`` with its device and finding concepts."""
        contrastive = self.train.contrastive
        if not self.concept_patterns:
            return contrastive
        return contrastive.updated(concept_patterns=self.concept_patterns, first_concepts=self.first_concepts)

    @property
    def draws_by_weight(self) -> bool:
        """Whether the CLIP stages draw training studies by their sample weight (a device or
        finding share is set)."""
        return bool(self.device_share or self.finding_share)

    def stages(self) -> list[tuple[str, Stage]]:
        """The stages this recipe runs: the ablation's two only with ``ablation``, the
        probes only with ``probe_steps``, one video per study against the study only at
        study level."""
        skipped = set() if self.ablation else {"clip_scratch", "evaluate_scratch"}
        if not self.probe_steps:
            skipped.add("probe")
        if self.train.level != "study":
            skipped.add("evaluate_one_video")
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
            "level": self.train.level,
            "videos_per_study": self.train.videos_per_study if self.train.level == "study" else None,
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
            "eval_one_video",
            "embeddings",
            "embeddings_studies",
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
                views=s.views,
                videos_per_view=s.videos_per_view,
                view_missing=s.view_missing,
                realism=s.realism,
                overwrite=True,
                progress=run.progress,
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
    table[SAMPLE_WEIGHT] = _sample_weights(table, s.device_share, s.finding_share)
    with atomic.writing(run.manifest) as tmp:
        table.to_parquet(tmp)
    counts = table["split"].value_counts().to_dict()
    return {"studies": int(table["study_id"].nunique()), **{f"videos_{k}": int(v) for k, v in counts.items()}}


def _sample_weights(table: Any, device_share: float, finding_share: float) -> Any:
    """Sampling weights of the training studies (1 elsewhere): the largest boost of the
    devices their reports name and of the findings they state."""
    import numpy as np

    from echoclip.data.synthetic import DEVICE_PATTERNS
    from echoclip.data.synthetic.anatomy import FINDINGS
    from echoclip.data.synthetic.reports import mentioned_findings
    from echoclip.train.balance import mention_weights, share_weights

    weights = np.ones(len(table))
    train = (table["split"] == "train").to_numpy()
    if not train.any():
        return weights
    reports = table.loc[train, "report"].astype(str).tolist()
    if device_share > 0:
        weights[train] = mention_weights(reports, DEVICE_PATTERNS, device_share)
    if finding_share > 0:
        stated = [mentioned_findings(r) for r in reports]
        mentions = np.array([[f in found for f in FINDINGS] for found in stated], dtype=bool)
        weights[train] = np.maximum(weights[train], share_weights(mentions, finding_share))
    return weights


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


def stage_evaluate_one_video(run: DemoRun) -> dict[str, Any]:
    """The study-level model given one video of each study instead of all of them: what
    pooling a study's views buys, measured on the same model and studies."""
    return _evaluate(run, "clip", "eval_one_video", manifest=_one_video_manifest(run), level="clip")


def _one_video_manifest(run: DemoRun) -> Path:
    """The manifest with one video drawn (seeded) from each study."""
    import pandas as pd

    path = run.data / "one_video.parquet"
    table = pd.read_parquet(run.manifest)
    one = table.groupby("study_id", sort=False).sample(n=1, random_state=run.seed)
    with atomic.writing(path) as tmp:
        one.sort_index().to_parquet(tmp)
    return path


def _evaluate(
    run: DemoRun, model_dir: str, out: str, manifest: Path | None = None, level: str | None = None
) -> dict[str, Any]:
    from echoclip.evaluate import evaluate
    from echoclip.models.factory import get_tokenizer, load_model

    path = run.out / model_dir / "final"
    model = load_model(path)
    return evaluate(
        model,
        get_tokenizer(path),
        manifest or run.manifest,
        run.out / out,
        prompt_sets=_prompt_sets(run),
        split="test",
        calibration_split="val",
        metrics_csv=run.out / model_dir / "metrics.csv",
        num_workers=min(2, os.cpu_count() or 1),  # decoding overlaps embedding
        level=level or run.recipe.train.level,
    )


def _prompt_sets(run: DemoRun) -> list[str]:
    """The prompt sets the demo evaluates with: the default ones, the findings read from the
    training reports where the recipe asks (``prompts/findings.json``)."""
    from echoclip.evaluate import DEFAULT_PROMPT_SETS

    sets = [str(name) for name in DEFAULT_PROMPT_SETS]
    if not run.recipe.corpus_prompts:
        return sets
    from echoclip.zeroshot.corpus_prompts import with_corpus_findings

    return with_corpus_findings(sets, run.manifest, "train", run.out / "prompts" / "findings.json")


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
    """Embed the test studies' videos and reports (and at study level the studies) and
    build the search indexes."""
    from echoclip.data.datasets import open_dataset
    from echoclip.data.transforms import VideoTransform
    from echoclip.models.embed import embed_dataset, embed_study_dataset
    from echoclip.models.factory import get_tokenizer, load_model
    from echoclip.models.model_dir import model_identity
    from echoclip.retrieval import EmbeddingStore, build_index

    model_dir = run.out / "clip" / "final"
    model = load_model(model_dir)
    tokenizer, identity = get_tokenizer(model_dir), model_identity(model_dir)
    test = open_dataset(run.manifest, "test", VideoTransform(model.preprocess_config))
    stores = {"videos": run.out / "embeddings", "reports": run.out / "embeddings"}
    embed_dataset(
        model,
        tokenizer,
        test,
        stores["videos"],
        model_identity=identity,
        overwrite=True,
        progress=run.progress,
    )
    if run.recipe.train.level == "study":
        stores["studies"] = run.out / "embeddings_studies"
        embed_study_dataset(
            model,
            tokenizer,
            test,
            stores["studies"],
            model_identity=identity,
            overwrite=True,
            progress=run.progress,
            videos=stores["videos"] / "videos",  # pooled, not encoded again
        )
    figures: dict[str, Any] = {}
    for kind, folder in stores.items():
        index = build_index(EmbeddingStore(folder / kind), factory="auto")
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
    ("evaluate_one_video", stage_evaluate_one_video),
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
    m.update(_study_metrics(run, ev, results.get("evaluate_one_video")))
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


def _zero_shot_aucs(zero_shot: dict[str, Any]) -> dict[str, Any]:
    """The AUC of each device and finding, by name."""
    return {name: zero_shot.get(name, {}).get("auc") for name in (*DEVICES, *FINDINGS)}


def _mean(values: Any) -> float | None:
    known = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(known) / len(known) if known else None


def _study_metrics(run: DemoRun, ev: dict[str, Any], one: dict[str, Any] | None) -> dict[str, Any]:
    """``study.*``: the level the model met reports at, what its test studies held, the mean
    AUC over devices and findings, and (at study level) the same model given one video of
    each study (``study.one_video.*``)."""
    data = ev.get("data", {})
    m: dict[str, Any] = {
        "study.level": run.recipe.train.level,
        "study.views": list(run.recipe.views),
        "study.test_studies": data.get("studies"),
        "study.test_videos": data.get("videos"),
        "study.pooling": data.get("pooling"),
        "study.mean_auc": _mean(_zero_shot_aucs(ev.get("zero_shot", {})).values()),
    }
    if one is not None:
        zs = one.get("zero_shot", {})
        aucs = _zero_shot_aucs(zs)
        m["study.one_video.mean_auc"] = _mean(aucs.values())
        m["study.one_video.zeroshot.ef.mae"] = zs.get("ejection_fraction", {}).get("mae")
        for name, auc in aucs.items():
            m[f"study.one_video.zeroshot.{'device' if name in DEVICES else 'finding'}.{name}.auc"] = auc
        m["study.one_video.retrieval.video_to_report.recall@10"] = (
            one.get("retrieval", {}).get("video_to_report", {}).get("recall@10")
        )
    return m


def format_table(metrics: dict[str, Any]) -> str:
    """The final table ``echoclip demo`` prints: the trained model, and beside it the same
    model given one video of each study (study level) and the ablation (when it ran)."""

    def f(key: str, digits: int = 3) -> str:
        v = metrics.get(key)
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}g}"

    study = metrics.get("study.level") == "study"
    unit = "study" if study else "video"  # what a report is retrieved by, and retrieves
    # (header, prefix of its keys, its mean AUC's key)
    columns: list[tuple[str, str, str | None]] = [("study" if study else "SSL+CLIP", "", "study.mean_auc")]
    if study:
        columns.append(("one video", "study.one_video.", "study.one_video.mean_auc"))
    if any(k.startswith("ablation.scratch.") and v is not None for k, v in metrics.items()):
        columns.append(("scratch", "ablation.scratch.", None))

    def row(label: str, key: str, baseline: str = "", beside: bool = True) -> tuple[str, ...]:
        return (
            label,
            *[f(prefix + key) if beside or not prefix else "" for _, prefix, _ in columns],
            baseline,
        )

    blank = [""] * (len(columns) - 1)
    probe_rows = []
    if metrics.get("probe.ef.r2.pretrained") is not None:  # the probes ran
        probe_rows.append(
            (
                "EF probe R² (attentive)",
                f("probe.ef.r2.pretrained"),
                *blank,
                f"random init {f('probe.ef.r2.random')}",
            )
        )
    rows = [
        row(
            "zero-shot EF MAE (%)", "zeroshot.ef.mae", f"mean predictor {f('zeroshot.ef.mae_mean_baseline')}"
        ),
        row("zero-shot EF Pearson r", "zeroshot.ef.pearson", beside=False),
        *[row(f"device AUC: {d}", f"zeroshot.device.{d}.auc") for d in DEVICES],
        *[row(f"finding AUC: {x}", f"zeroshot.finding.{x}.auc") for x in FINDINGS],
        (
            "mean AUC, devices and findings",
            *[f(mean) if mean else "" for _, _, mean in columns],
            "",
        ),
        row(
            f"{unit}->report recall@10",
            "retrieval.video_to_report.recall@10",
            f"chance {f('retrieval.video_to_report.chance_recall@10')}",
        ),
        row(f"report->{unit} recall@10", "retrieval.report_to_video.recall@10", beside=False),
        *probe_rows,
        ("total time (s)", f("time.total_s", 4), *blank, ""),
        ("peak memory (MB)", f("memory.peak_rss_mb", 5), *blank, ""),
    ]
    width = max(len(r[0]) for r in rows)
    header = "  ".join([f"{'':{width}}", *[f"{name:>10}" for name, _, _ in columns], "baseline"])
    lines = [header] + ["  ".join([f"{r[0]:{width}}", *[f"{c:>10}" for c in r[1:-1]], r[-1]]) for r in rows]
    return "\n".join(lines)


# -- helpers -------------------------------------------------------------------------


def _clip_config(run: DemoRun, out: Path) -> TrainConfig:
    """The recipe's ``[train]`` for one CLIP arm, with the simulator's device concepts and weights."""
    recipe = run.recipe
    return recipe.train.updated(
        out=str(out),
        seed=run.seed,
        progress=run.progress,
        sample_weight_column=SAMPLE_WEIGHT if recipe.draws_by_weight else None,
        contrastive=recipe.contrastive,
    )


def _settings(run: DemoRun) -> dict[str, Any]:
    return jsonable({**run.recipe.settings(), "seed": run.seed})  # as stages.json holds it


def _last_loss(history: list[dict[str, Any]]) -> float | None:
    for row in reversed(history):
        if row.get("loss") not in (None, ""):
            return float(row["loss"])
    return None


def _read_state(out: Path) -> dict[str, Any]:
    path = out / "stages.json"
    return json.loads(path.read_text()) if path.is_file() else {}
