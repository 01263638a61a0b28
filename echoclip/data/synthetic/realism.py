"""How messy the simulated world is: acquisition and report variation, as named presets.

``clean`` is the simulator as a textbook draws it: on-axis views, one scanner's
settings, reports that state the true EF. ``real`` adds what a real echo lab
produces, knob by knob (each knob is a probability or a range, drawn per video or per
report from the study's seed, so the same seed gives the same study):

acquisition (per video)
    ``gain_db``: overall gain, uniform in ±this many dB; ``dgc``: chance of uneven
    depth gain compensation (bands brighter or darker at some depths);
    ``dynamic_range``: the log-compression exponent's range (a higher one is a softer,
    greyer image); ``sector_deg``: the fan's half-angle range in degrees; ``zoom``:
    chance of a zoomed (write-zoom) clip of the heart's middle; ``fps``: frame-rate
    range (the file's frame rate follows); ``foreshortened``: chance an apical view
    cuts the LV short; ``off_axis_deg``: tilt range of off-axis cuts; ``poor_window``:
    chance of a poor window (dropout of wall segments, haze); ``reverberation``:
    chance of near-field reverberation bands; ``rib_shadow`` / ``lung_shadow``:
    chances of a rib (dark wedge from the apex) or lung (lateral dark band) shadow;
    ``doppler_box``: chance of a colour-Doppler box over the valves; ``dual_screen``:
    chance of a dual-screen clip (two half-width copies side by side); ``vendors``:
    the overlay and grey-map styles drawn from.

report (per study)
    ``observer_sd``: SD (EF points) of the reader's error on the stated EF (Gaussian,
    before rounding; the stated EF is clipped to 5-85 %); ``ef_round5``: chance a
    stated number is rounded to the nearest 5 rather than to an integer (a visual
    estimate always is); ``ef_range``: chance the EF is stated as a 5-point range (that
    holds the stated EF); ``ef_visual``: chance it is "visually estimated";
    ``ef_missing``: chance the report states no EF number (only a graded LV function);
    ``abbreviation`` / ``typo`` / ``hedge``: chance per sentence of abbreviations
    ("LV", "MR", "w/", "nl", ...), a typo (a letter swapped, dropped or doubled), a
    hedged wording ("probably", "cannot exclude", "suboptimal views limit assessment
    of"); ``table``: chance of a measurement table. The reader's grades (LV function,
    wall motion) follow the stated EF; no variation names a device or a finding that
    the plain sentence did not, nor hides one that it did.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from echoclip.registry import Registry

__all__ = ["AcquisitionRealism", "ReportRealism", "Realism", "REALISMS", "get_realism"]


@dataclass(frozen=True)
class AcquisitionRealism:
    """Per-video variation of how a clip was acquired (all off: one textbook scanner)."""

    gain_db: float = 0.0
    dgc: float = 0.0
    dynamic_range: tuple[float, float] = (1.0, 1.0)
    sector_deg: tuple[float, float] = (40.0, 40.0)
    zoom: float = 0.0
    fps: tuple[float, float] | None = None  # None: the requested frame rate
    foreshortened: float = 0.0
    off_axis_deg: float = 0.0
    poor_window: float = 0.0
    reverberation: float = 0.0
    rib_shadow: float = 0.0
    lung_shadow: float = 0.0
    doppler_box: float = 0.0
    dual_screen: float = 0.0
    vendors: tuple[str, ...] = ("default",)


@dataclass(frozen=True)
class ReportRealism:
    """Per-report variation of what a reader writes (all off: the true EF, stated exactly)."""

    observer_sd: float = 0.0
    ef_round5: float = 0.0
    ef_range: float = 0.0
    ef_visual: float = 0.0
    ef_missing: float = 0.0
    abbreviation: float = 0.0
    typo: float = 0.0
    hedge: float = 0.0
    table: float = 0.0


@dataclass(frozen=True)
class Realism:
    """A named preset: acquisition and report variation together."""

    name: str
    acquisition: AcquisitionRealism = field(default_factory=AcquisitionRealism)
    report: ReportRealism = field(default_factory=ReportRealism)


REALISMS: Registry[Realism] = Registry("realism preset")
REALISMS.add("clean", Realism("clean"))
REALISMS.add(
    "real",
    Realism(
        "real",
        AcquisitionRealism(
            gain_db=3.0,
            dgc=0.3,
            dynamic_range=(1.0, 1.3),
            sector_deg=(30.0, 45.0),
            zoom=0.08,
            fps=(30.0, 90.0),
            foreshortened=0.2,
            off_axis_deg=12.0,
            poor_window=0.2,
            reverberation=0.25,
            rib_shadow=0.15,
            lung_shadow=0.1,
            doppler_box=0.1,
            dual_screen=0.05,
            vendors=("default", "vendor_b", "vendor_c"),
        ),
        ReportRealism(
            observer_sd=4.0,
            ef_round5=0.4,
            ef_range=0.3,
            ef_visual=0.2,
            ef_missing=0.1,
            abbreviation=0.15,
            typo=0.03,
            hedge=0.1,
            table=0.3,
        ),
    ),
)


def get_realism(realism: str | Realism | None) -> Realism:
    """A preset by name (``None`` is ``clean``), or the :class:`Realism` given."""
    if isinstance(realism, Realism):
        return realism
    return REALISMS.get(realism or "clean")
