"""Realism of the simulator against a real apical cine: grey levels, speckle, and a patch classifier.

The real cine is pydicom-data's ``color3d_jpeg_baseline.dcm`` (SonoSite, 120 frames at
30 fps, an apical view), read by ``echoclip.load_video`` (cropped to the ultrasound
region, text masked), turned grey (BT.601 luma), resampled by area averaging to the
simulator's scale (the median ``cm_per_px`` of the ``before`` arm's studies, so one
centimetre is as many pixels in both) and placed in a ``--size``-pixel square frame
with its fan's top row and apex column where the simulator puts its own. The real fan
is ``fidelity.fan_mask`` (where any frame is above 3 grey levels, as one solid
region); a simulated study's fan is its ground-truth sector mask. Both are eroded by
one pixel, so the resampled edge counts in neither. Colour-Doppler pixels
(``fidelity.colour_flow``) are not grey-scale echo and leave the fan in every frame
(the real cine is a B-mode clip and has none: ``real_colour_share``; each arm's
``colour_share`` is the share of its fan's pixels left out).

Arms, ``--studies`` A4C studies each (seeds 0, 1, ...), ``--frames`` frames of
``--size`` pixels:

- ``before``: the simulator at ``--before`` (a git revision; its ``echoclip/`` package
  is extracted to a temporary folder and run there, in a process of its own);
- ``clean`` and ``real``: the working tree's simulator with ``realism="clean"`` /
  ``"real"`` (while ``simulate_study`` has no ``realism`` keyword, ``clean`` is its
  default and ``real`` is skipped, and the line says so).

Figures per arm against the real cine (``echoclip.data.synthetic.fidelity``), over the
fan pixels of all frames:

- ``histogram_w1`` / ``histogram_js``: the Wasserstein-1 distance between the fan's
  256-bin grey-level histograms (in grey levels) and their Jensen–Shannon distance;
- ``snr_tissue`` / ``snr_blood``: the speckle SNR (mean/SD of the raw grey levels) in
  tissue and in blood, the median over frames, and ``*_diff``, its absolute difference
  from the real cine's. Tissue and blood are found by one rule in every frame, real or
  simulated: on the 5×5 local mean over the fan, 2 px inside its edge and below its top
  15 % of rows (the near field), blood is at or below the 25th percentile of the frame,
  tissue at or above the 75th (in the real cine the darkest quarter also takes the far
  lateral fan where no echo returns, not only the chambers);
- ``patch_auc``: the 5-fold cross-validated AUC of a logistic regression telling
  ``--patches`` real ``--patch``-pixel fan patches (non-overlapping within a frame) from
  as many simulated ones by 8 statistics (mean, SD, skewness, kurtosis, mean
  |gradient|, lag-1 autocorrelation along rows and columns, share of pixels below 16),
  and ``patch_effect``, each statistic's simulated-minus-real mean in real SDs.

``real_halves`` (the cine's first half against its second) is the floor of the
histogram distance and the AUC; ``before_vs_clean`` checks the two arms that render the
same seeds; ``closer`` says, per step, whether each figure came closer to the real cine.

Prints one JSON line (with the date and the machine), appends it to ``--results`` and
draws ``--figure``: a row per arm of end-diastolic(-like) frames and the fan histogram
against the real cine's.

    python benchmarks/bench_realism.py [--studies 8 --size 112 --before 5b1515e --figure docs/realism.png]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from machine import describe_machine, emit

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "realism.jsonl"
REAL_FILE = "color3d_jpeg_baseline.dcm"
ARMS = ("before", "clean", "real")
NO_PRESET = 3  # the render process's exit status when its simulator has no such preset

# run in a process of its own, with the simulator under test first on PYTHONPATH
RENDER = """
import inspect, sys
import numpy as np
from echoclip.data.synthetic import simulate_study

out, size, frames, preset, seeds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
has_realism = "realism" in inspect.signature(simulate_study).parameters
if preset and not has_realism and preset != "clean":
    sys.exit(3)  # NO_PRESET
kwargs = {"realism": preset} if preset and has_realism else {}
studies = [simulate_study(int(s), view="A4C", size=size, frames=frames, **kwargs) for s in seeds.split(",")]
# a realism preset's frame rate sets each clip's length: keep the common length
length = min(len(s.video.frames) for s in studies)
np.savez(
    out,
    frames=np.stack([s.video.frames[:length] for s in studies]),
    fans=np.stack([s.truth.sector_mask for s in studies]),
    ed=np.array([min(s.truth.ed_frame, length - 1) for s in studies]),
    cm_per_px=np.array([s.truth.cm_per_px for s in studies]),
    realism_keyword=np.array(has_realism),
)
"""


def _r(value: Any, digits: int = 3) -> Any:
    value = float(value)
    return None if value != value else round(value, digits)


def _render(arm: str, args: argparse.Namespace, work: Path) -> dict[str, np.ndarray] | None:
    """Frames, fans, end-diastolic frames and scale of one arm's studies (None: its simulator lacks the preset)."""
    if arm == "before":
        package = work / "before"
        package.mkdir()
        archive = subprocess.Popen(
            ["git", "archive", args.before, "echoclip"], cwd=ROOT, stdout=subprocess.PIPE
        )
        subprocess.run(["tar", "-x", "-C", str(package)], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            raise SystemExit(f"git archive {args.before} failed")
        path, preset = package, ""
    else:
        path, preset = ROOT, arm
    out = work / f"{arm}.npz"
    seeds = ",".join(str(args.seed + i) for i in range(args.studies))
    env = {**os.environ, "PYTHONPATH": str(path)}
    done = subprocess.run(
        [sys.executable, "-c", RENDER, str(out), str(args.size), str(args.frames), preset, seeds],
        cwd=work,
        env=env,
    )
    if done.returncode == NO_PRESET:
        return None
    done.check_returncode()
    with np.load(out) as data:
        return dict(data)


def _real(size: int, cm_per_px: float, top: int, apex: float) -> tuple[np.ndarray, float, float]:
    """The real cine's grey frames at ``cm_per_px``, in a ``size`` square with the fan's top at row ``top``
    and its apex at column ``apex``; the source's own scale; and the share of its fan in colour flow."""
    from PIL import Image
    from pydicom.data import get_testdata_file

    import echoclip
    from echoclip.data.synthetic.fidelity import colour_flow, fan_mask, to_grey

    video = echoclip.load_video(get_testdata_file(REAL_FILE))
    source = float(video.meta["cm_per_px"][0])
    grey = np.clip(np.rint(to_grey(video.frames)), 0, 255).astype(np.uint8)
    colour = float(colour_flow(video.frames)[:, fan_mask(grey)].mean())
    scale = source / cm_per_px
    h, w = round(grey.shape[1] * scale), round(grey.shape[2] * scale)
    small = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BOX)) for f in grey])
    fan = fan_mask(small)
    rows = np.nonzero(fan.any(axis=1))[0]
    first = rows[0]
    centre = np.nonzero(fan[first])[0].mean()
    pad = 2 * size
    padded = np.pad(small, ((0, 0), (pad, pad), (pad, pad)))
    y0 = pad + first - top
    x0 = pad + round(centre - apex)
    return padded[:, y0 : y0 + size, x0 : x0 + size].astype(np.float32), source, colour


def _tissue_blood_figures(frames: np.ndarray, fans: np.ndarray) -> dict[str, float]:
    """Median over frames of the speckle SNR and mean grey level in tissue and blood."""
    from echoclip.data.synthetic.fidelity import speckle_snr, tissue_blood

    values: dict[str, list[float]] = {k: [] for k in ("snr_tissue", "snr_blood", "mean_tissue", "mean_blood")}
    for frame, fan in zip(frames, fans, strict=True):
        tissue, blood = tissue_blood(frame, fan)
        values["snr_tissue"].append(speckle_snr(frame[tissue]))
        values["snr_blood"].append(speckle_snr(frame[blood]))
        values["mean_tissue"].append(float(frame[tissue].mean()))
        values["mean_blood"].append(float(frame[blood].mean()))
    return {k: float(np.nanmedian(v)) for k, v in values.items()}


def _figures(
    real: tuple[np.ndarray, np.ndarray], sim: tuple[np.ndarray, np.ndarray], args: argparse.Namespace
) -> dict[str, Any]:
    """Every figure of one set of frames (``sim``: grey ``[N, H, W]`` and fans) against the real ones."""
    from echoclip.data.synthetic.fidelity import PATCH_FEATURES, histogram_distance, patch_auc, patch_features

    (real_frames, real_fans), (frames, fans) = real, sim
    real_pixels, pixels = real_frames[real_fans], frames[fans]
    ours, theirs = _tissue_blood_figures(frames, fans), _tissue_blood_figures(real_frames, real_fans)
    rng = np.random.default_rng(args.seed)
    real_patches = patch_features(real_frames, real_fans, args.patches, rng, patch=args.patch)
    patches = patch_features(frames, fans, args.patches, rng, patch=args.patch)
    spread = real_patches.std(axis=0)
    effect = (patches.mean(axis=0) - real_patches.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    return {
        "histogram_w1": _r(histogram_distance(pixels, real_pixels)),
        "histogram_js": _r(histogram_distance(pixels, real_pixels, "jensen_shannon")),
        "fan_mean": _r(pixels.mean(), 1),
        "fan_median": _r(np.median(pixels), 1),
        **{k: _r(v, 2) for k, v in ours.items()},
        "snr_tissue_diff": _r(abs(ours["snr_tissue"] - theirs["snr_tissue"])),
        "snr_blood_diff": _r(abs(ours["snr_blood"] - theirs["snr_blood"])),
        "patch_auc": _r(patch_auc(real_patches, patches, seed=args.seed), 4),
        "patch_effect": {name: _r(e, 2) for name, e in zip(PATCH_FEATURES, effect, strict=True)},
    }


def _frames_and_fans(rendered: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, float]:
    """All of an arm's frames as grey ``[N*T, H, W]``, with each frame's (eroded) fan less its colour
    flow; and the share of the fans' pixels that colour flow took."""
    from scipy import ndimage

    from echoclip.data.synthetic.fidelity import colour_flow, to_grey

    frames = to_grey(rendered["frames"])
    n, t = frames.shape[:2]
    fans = np.stack([ndimage.binary_erosion(f, structure=np.ones((3, 3))) for f in rendered["fans"]])
    fans = np.repeat(fans, t, axis=0)
    colour = colour_flow(rendered["frames"]).reshape(fans.shape) & fans
    return frames.reshape(fans.shape), fans & ~colour, float(colour.sum() / max(int(fans.sum()), 1))


def _draw(
    path: Path, real: np.ndarray, real_fan: np.ndarray, arms: dict[str, dict], grey: dict, figures: dict
) -> None:
    """A row per arm: two end-diastolic(-like) frames and the fan histogram against the real cine's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from echoclip.data.synthetic.fidelity import grey_histogram

    means = real[:, real_fan].mean(axis=1)
    # the real cine has no ground truth: its darkest fan has the largest chambers (end-diastole-like),
    # its brightest the smallest (end-systole-like)
    rows = [("real cine", real[int(np.argmin(means))], real[int(np.argmax(means))], "ED-like", "ES-like")]
    for arm, rendered in arms.items():
        t, ed = rendered["frames"].shape[1], rendered["ed"]
        last = min(1, len(ed) - 1)
        rows.append(
            (arm, grey[arm][0][ed[0]], grey[arm][0][last * t + ed[last]], "seed 0, ED", f"seed {last}, ED")
        )
    real_hist = grey_histogram(real[:, real_fan])
    fig, axes = plt.subplots(
        len(rows), 3, figsize=(7.5, 2.3 * len(rows)), gridspec_kw={"width_ratios": [1, 1, 1.6]}
    )
    for (name, a, b, title_a, title_b), ax in zip(rows, np.atleast_2d(axes), strict=True):
        for image, cell, title in ((a, ax[0], title_a), (b, ax[1], title_b)):
            cell.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            cell.set_title(f"{name}: {title}", fontsize=8)
            cell.axis("off")
        ax[2].plot(real_hist, color="black", lw=1, label="real cine")
        f = figures["real_cine" if name == "real cine" else name]
        if name == "real cine":
            title = f"fan histogram; SNR tissue/blood {f['snr_tissue']:.2f}/{f['snr_blood']:.2f}"
        else:
            frames, fans = grey[name]
            ax[2].plot(grey_histogram(frames[fans]), color="tab:red", lw=1, label=name)
            title = f"W1 {f['histogram_w1']:.1f}, SNR t/b {f['snr_tissue']:.2f}/{f['snr_blood']:.2f}, AUC {f['patch_auc']:.2f}"
        ax[2].set_title(title, fontsize=8)
        ax[2].set_yscale("log")
        ax[2].set_ylim(1e-5, 1)
        ax[2].set_xlim(0, 255)
        ax[2].set_xlabel("grey level", fontsize=7)
        ax[2].tick_params(labelsize=7)
        ax[2].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=72, format="png")
    plt.close(fig)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=8, help="simulated A4C studies per arm")
    parser.add_argument("--size", type=int, default=112, help="frame size in pixels (square)")
    parser.add_argument("--frames", type=int, default=64, help="frames per simulated study")
    parser.add_argument("--patches", type=int, default=1000, help="patches per side for the classifier")
    parser.add_argument("--patch", type=int, default=16, help="patch size in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--before", default="5b1515e", help="git revision of the simulator before the change")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    parser.add_argument(
        "--figure", default=str(ROOT / "docs" / "realism.png"), help="PNG to draw ('' for none)"
    )
    parser.add_argument("--results", default=str(RESULTS), help="JSONL to append the line to ('' for none)")
    args = parser.parse_args()

    from scipy import ndimage

    from echoclip.data.synthetic.fidelity import fan_mask, histogram_distance, patch_auc, patch_features

    with tempfile.TemporaryDirectory(prefix="bench-realism-") as tmp:
        rendered = {arm: _render(arm, args, Path(tmp)) for arm in args.arms.split(",")}
    arms = {arm: r for arm, r in rendered.items() if r is not None}
    first = next(iter(arms.values()))
    cm_per_px = float(np.median(first["cm_per_px"]))
    fan0 = first["fans"][0]
    top = int(np.nonzero(fan0.any(axis=1))[0][0])
    real, source_cm, real_colour = _real(args.size, cm_per_px, top, float(np.nonzero(fan0[top])[0].mean()))
    real_fan = ndimage.binary_erosion(fan_mask(real), structure=np.ones((3, 3)))
    real_fans = np.broadcast_to(real_fan, real.shape)

    half = len(real) // 2
    floor = _figures((real[:half], real_fans[:half]), (real[half:], real_fans[half:]), args)
    figures: dict[str, Any] = {"real_cine": {k: floor[k] for k in ("fan_mean", "fan_median")}}
    figures["real_cine"].update({k: _r(v, 2) for k, v in _tissue_blood_figures(real, real_fans).items()})
    figures["real_halves"] = {k: floor[k] for k in ("histogram_w1", "histogram_js", "patch_auc")}
    grey, colour_share = {}, {}
    for arm, r in arms.items():
        *grey[arm], colour_share[arm] = _frames_and_fans(r)
    for arm, r in arms.items():
        figures[arm] = _figures((real, real_fans), grey[arm], args)
        figures[arm]["realism_keyword"] = bool(r["realism_keyword"])
        figures[arm]["colour_share"] = _r(colour_share[arm], 4)
    for arm in rendered:
        if arm not in arms:
            figures[arm] = {"skipped": "the working tree's simulate_study has no realism keyword"}

    # before and clean render the same seeds: how far apart are they (0 when the simulator is unchanged)?
    if "before" in arms and "clean" in arms:
        a, b = grey["before"], grey["clean"]
        rng = np.random.default_rng(args.seed)
        figures["before_vs_clean"] = {
            "identical_frames": bool(np.array_equal(arms["before"]["frames"], arms["clean"]["frames"])),
            "histogram_w1": _r(histogram_distance(a[0][a[1]], b[0][b[1]])),
            "patch_auc": _r(
                patch_auc(
                    patch_features(*a, args.patches, rng, patch=args.patch),
                    patch_features(*b, args.patches, rng, patch=args.patch),
                    seed=args.seed,
                )
            ),
        }
    keys = ("histogram_w1", "histogram_js", "snr_tissue_diff", "snr_blood_diff", "patch_auc")
    order = [arm for arm in ARMS if arm in arms]
    steps = {
        f"{a}->{b}": {k: figures[b][k] < figures[a][k] for k in keys}
        for a, b in zip(order[:-1], order[1:], strict=True)
    }

    line = {
        "benchmark": "realism",
        "date": date.today().isoformat(),
        "machine": describe_machine(),
        "real": REAL_FILE,
        "real_frames": int(len(real)),
        "real_cm_per_px": _r(source_cm, 4),
        "real_colour_share": _r(real_colour, 4),
        "size": args.size,
        "cm_per_px": _r(cm_per_px, 4),
        "studies": args.studies,
        "frames": args.frames,
        "patches": args.patches,
        "patch": args.patch,
        "before": args.before,
        "figures": figures,
        "closer": steps,
    }
    emit(line, args.results)
    if args.figure:
        _draw(Path(args.figure), real, real_fan, arms, grey, figures)


if __name__ == "__main__":
    main()
