"""Echo reports written from a :class:`CardiacState`, in the varied style of real ones.

Real adult transthoracic echo reports differ by lab and reader: upper case or not,
headed sections or a numbered summary, the EF as ``55%``, ``55 %``, ``50-55%`` or
``0.55``, many ways to say "the left ventricle is dilated". Each sentence here is drawn
from several phrasings and the order varies, so a model trained on these reports
learns the facts, not one template. A report states the EF (consistent with the
label), describes every present finding and device, and never names an absent device.

:func:`extract_ef`, :func:`mentioned_devices` and :func:`mentioned_findings` read those
facts back out of a report text (simulated or real) with regular expressions, as EchoCLIP
derived its labels.

A :class:`~echoclip.data.synthetic.realism.ReportRealism` makes the reader fallible and
the writing untidy: the report states the reader's EF (:func:`stated_ef`: the true EF
plus observer error, rounded as readers round, sometimes as a range, a visual estimate,
or not at all), with abbreviations, typos, hedges and measurement tables. Those draws
come from a child of the report's generator, so without realism (or with every knob at
zero) a report is exactly the one written before realism existed. No variation changes
which devices, findings and EF a report states (:data:`DEVICE_PATTERNS`,
:data:`FINDING_PATTERNS`, :func:`extract_ef`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from echoclip.data.synthetic.anatomy import DEVICES, FINDINGS, CardiacState
from echoclip.data.synthetic.realism import ReportRealism

__all__ = [
    "write_report",
    "compose_report",
    "WrittenReport",
    "stated_ef",
    "report_sentences",
    "extract_ef",
    "report_ef",
    "mentioned_devices",
    "mentioned_findings",
    "DEVICE_PATTERNS",
    "FINDING_PATTERNS",
    "finding_concept",
    "FINDING_SUBJECTS",
]

# What names a device in a report. A report names a device only when it is present, and
# no other sentence uses these words.
DEVICE_PATTERNS: dict[str, re.Pattern[str]] = {
    "pacemaker": re.compile(r"pacemaker|pacer|pacing|\bppm\b|\ba?icd\b|defibrillator|\blead", re.I),
    "tavr": re.compile(r"\btav[ri]\b|transcatheter|sapien|evolut|corevalve", re.I),
    "surgical_valve": re.compile(
        r"bioprosthe|mechanical|\b[am]vr\b|surgical|prosthetic (?:mitral |aortic )?valve|sewing ring|"
        r"(?:mitral|aortic) (?:valve )?prosthesis",
        re.I,
    ),
    "mitraclip": re.compile(
        r"mitraclip|mitral clip|\bclips?\b|edge-to-edge|\bteer\b|double[- ]orifice", re.I
    ),
    "impella": re.compile(r"impella|percutaneous (?:lv |left ventricular )?assist|\bpvad\b", re.I),
}

# What states a finding, sentence by sentence: (the finding's words, the words that deny it).
# A sentence names a finding when the first matches and the second does not ("No LVH.",
# "The left atrium is normal in size."); the subject and its state must stand in one
# clause, so a heading ("RIGHT VENTRICLE / ATRIA: The right atrium is dilated.") lends
# its words to no finding. Right-atrial enlargement is not a finding of its own.
_CLAUSE = r"(?::\s*)?[^.;:]*?"
FINDING_PATTERNS: dict[str, tuple[re.Pattern[str], re.Pattern[str]]] = {
    "lv_dilation": (
        re.compile(
            rf"(?:left ventric\w*|\blv\b){_CLAUSE}\b(?:dilat\w*|enlarg\w*)|dilat\w* of the left ventricle|"
            rf"\b(?:dilated|enlarged) (?:left ventricle|lv)\b|\blv (?:cavity )?size(?: is|:){_CLAUSE}\bincreased|"
            r"\blv end-diastolic volume is increased",
            re.I,
        ),
        re.compile(r"\bnormal\b|\bnot (?:dilated|enlarged)", re.I),
    ),
    "rv_dilation": (
        re.compile(
            rf"(?:right ventric\w*|\brv\b){_CLAUSE}\b(?:dilat\w*|enlarg\w*)|"
            rf"\b(?:dilated|enlarged) (?:right ventricle|rv)\b|\brv size(?: is|:){_CLAUSE}\bincreased",
            re.I,
        ),
        re.compile(r"\bnormal (?:in )?size|\bnot (?:dilated|enlarged)", re.I),
    ),
    "la_enlargement": (
        re.compile(
            rf"(?:left atri\w*|\bla\b){_CLAUSE}\b(?:dilat\w*|enlarg\w*|increased)|"
            r"\b(?:dilated|enlarged) (?:left atrium|la)\b|\blae\b",
            re.I,
        ),
        re.compile(r"\bnormal\b|\bnot (?:dilated|enlarged)", re.I),
    ),
    "pericardial_effusion": (
        re.compile(r"pericardial effusion|effusion in the pericardial|echo-free space", re.I),
        re.compile(
            r"\bno (?:significant )?(?:pericardial )?effusion|\bwithout (?:pericardial )?effusion", re.I
        ),
    ),
    "lv_hypertrophy": (
        re.compile(
            rf"hypertroph|\blvh\b|wall thickness(?: is|:){_CLAUSE}\bincreased|increased{_CLAUSE}wall thickness|"
            rf"\bwalls are{_CLAUSE}\bthickened",
            re.I,
        ),
        re.compile(r"\bno (?:left ventricular hypertrophy|lvh)\b|\bnormal\b", re.I),
    ),
}


def finding_concept(finding: str) -> str:
    """One regular expression for a sentence that states ``finding`` present: its words, and
    none that deny it (:data:`FINDING_PATTERNS` as a single pattern, for the concept masks of
    the contrastive loss, :class:`echoclip.train.contrastive.ConceptMatcher`)."""
    states, denies = FINDING_PATTERNS[finding]
    return rf"(?s)^(?!.*?(?:{denies.pattern})).*?(?:{states.pattern})"


# What a sentence that denies a finding is about: its structure. "Normal" alone denies LV
# dilation only in a sentence about the left ventricle (corpus prompts take such sentences
# as the finding's negatives; :mod:`echoclip.zeroshot.corpus_prompts`).
FINDING_SUBJECTS: dict[str, re.Pattern[str]] = {
    "lv_dilation": re.compile(r"left ventric\w*|\blv\b", re.I),
    "rv_dilation": re.compile(r"right ventric\w*|\brv\b", re.I),
    "la_enlargement": re.compile(r"left atri\w*|\bla\b", re.I),
    "pericardial_effusion": re.compile(r"pericardi\w*|effusion", re.I),
    "lv_hypertrophy": re.compile(r"hypertroph|wall thick|septum|septal|\bivs|\blvh\b", re.I),
}

Sentence = tuple[str, str]  # (topic, text)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.random() * len(options))]


def _fill(rng: np.random.Generator, templates: Sequence[str], **values: object) -> str:
    text = _pick(rng, templates).format(**values)
    return text[0].upper() + text[1:]


# ---------------------------------------------------------------------------------------
# numbers and grades


def ef_phrase(ef: float, rng: np.random.Generator) -> str:
    """The EF written in one of the ways reports write it; the true EF (rounded) always fits."""
    r = int(round(ef))
    lo = 5 * (r // 5)
    if lo == r and rng.random() < 0.5:
        lo -= 5
    hi = lo + 5
    styles = [
        f"{r}%",
        f"{r}%",
        f"{r} %",
        f"{lo}-{hi}%",
        f"{lo}-{hi}%",
        f"{lo} - {hi} %",
        f"{lo} to {hi}%",
        f"{lo}%-{hi}%",
        f"{r} percent",
        f"approximately {r}%",
        f"~{r}%",
        f"0.{r:02d}",
    ]
    if r > 70:
        styles += ["greater than 70%", ">70%"]
    if r < 20:
        styles += ["less than 20%", "<20%"]
    return _pick(rng, styles)


def lv_function_grade(ef: float, rng: np.random.Generator) -> str:
    r = round(ef)
    if r > 70:
        options = ["hyperdynamic", "vigorous", "hyperdynamic"]
    elif r >= 53:
        options = ["normal", "normal", "preserved"]
    elif r >= 50:
        options = ["low normal", "low-normal", "borderline normal"]
    elif r >= 41:
        options = ["mildly reduced", "mildly decreased", "mildly depressed", "mildly impaired"]
    elif r >= 38:
        options = ["mildly to moderately reduced", "mild/moderately decreased", "mildly-moderately depressed"]
    elif r >= 31:
        options = [
            "moderately reduced",
            "moderately decreased",
            "moderately depressed",
            "moderately impaired",
        ]
    elif r >= 28:
        options = ["moderately to severely reduced", "moderate to severely depressed"]
    else:
        options = ["severely reduced", "severely decreased", "severely depressed", "severely impaired"]
    return _pick(rng, options)


_ADJ = {"mild": "mild", "moderate": "moderate", "severe": "severe"}
_BLEND = {
    "mild": ["mild to moderate", "mild/moderate", "mild-moderate"],
    "moderate": ["moderate to severe", "moderate/severe", "mild to moderate"],
    "severe": ["severe", "marked"],
}
_ADV = {"mild": "mildly", "moderate": "moderately", "severe": "severely"}
_ADV_BLEND = {"mild": "mildly to moderately", "moderate": "moderately to severely", "severe": "markedly"}
_EFFUSION_SIZE = {
    "mild": ["small", "small", "trivial"],
    "moderate": ["moderate", "moderate-sized"],
    "severe": ["large"],
}


def _adj(grade: str, rng: np.random.Generator) -> str:
    return _pick(rng, _BLEND[grade]) if rng.random() < 0.2 else _ADJ[grade]


def _adv(grade: str, rng: np.random.Generator) -> str:
    return _ADV_BLEND[grade] if rng.random() < 0.15 else _ADV[grade]


def _cm(x: float) -> str:
    return f"{x:.1f}"


# ---------------------------------------------------------------------------------------
# sentences, topic by topic

_INDICATIONS = [
    "dyspnea",
    "shortness of breath",
    "chest pain",
    "evaluate LV function",
    "heart failure",
    "cardiomyopathy, follow-up",
    "atrial fibrillation",
    "syncope",
    "murmur",
    "hypertension",
    "pre-operative assessment",
    "stroke",
    "palpitations",
    "abnormal ECG",
    "baseline before chemotherapy",
    "lower extremity edema",
    "valvular heart disease, follow-up",
    "hypotension",
    "elevated troponin",
    "coronary artery disease",
    "evaluate for source of embolism",
    "fatigue",
    "assess RV function",
]

_REASON_LABELS = [
    "INDICATION: {x}.",
    "Indication: {x}.",
    "Reason for study: {x}.",
    "Clinical history: {x}.",
    "Indications: {x}.",
]


def _indication(rng: np.random.Generator) -> str:
    x = _pick(rng, _INDICATIONS)
    return _pick(rng, _REASON_LABELS).format(x=x[0].upper() + x[1:])


def _comparison(state: CardiacState, rng: np.random.Generator) -> str:
    if state.prior_ef is None:
        return _pick(
            rng,
            [
                "No prior echocardiogram is available for comparison.",
                "No previous study for comparison.",
                "Comparison: none.",
                "There are no prior studies available for comparison.",
            ],
        )
    delta = state.ef - state.prior_ef
    if delta <= -5:
        return _pick(
            rng,
            [
                "Compared with the prior study, LV systolic function has worsened.",
                "Since the prior echo, the ejection fraction has decreased.",
                "Interval decline in left ventricular function compared with the previous study.",
            ],
        )
    if delta >= 5:
        return _pick(
            rng,
            [
                "Compared with the prior study, LV systolic function has improved.",
                "Since the prior echo, the ejection fraction has increased.",
                "Interval improvement in left ventricular function compared with the previous study.",
            ],
        )
    return _pick(
        rng,
        [
            "Compared with the prior study, there is no significant change.",
            "No significant interval change since the previous echocardiogram.",
            "Findings are similar to the prior study.",
            "Unchanged from the prior exam.",
        ],
    )


def _quality(state: CardiacState, rng: np.random.Generator) -> str:
    q = state.image_quality
    if q < 0.35:
        options = [
            "Technically difficult study due to poor acoustic windows.",
            "Suboptimal image quality; endocardial definition is limited.",
            "Limited study: poor echo windows.",
            "Image quality is poor.",
        ]
    elif q < 0.7:
        options = [
            "Technically adequate study.",
            "Image quality is fair.",
            "Adequate image quality.",
            "Fair acoustic windows.",
        ]
    else:
        options = [
            "Good quality study.",
            "Image quality is good.",
            "Technically good study.",
            "Excellent image quality.",
        ]
    return _pick(rng, options)


def _rhythm(state: CardiacState, rng: np.random.Generator) -> str:
    hr = int(round(state.heart_rate))
    if hr > 100:
        name = _pick(rng, ["sinus tachycardia", "sinus tachycardia"])
    elif hr < 60:
        name = _pick(rng, ["sinus bradycardia", "sinus bradycardia"])
    else:
        name = _pick(rng, ["sinus rhythm", "normal sinus rhythm"])
    return _fill(
        rng,
        [
            "Rhythm: {name}, heart rate {hr} bpm.",
            "The patient was in {name} (HR {hr}).",
            "{name} at {hr} bpm.",
            "HR {hr} bpm, {name}.",
        ],
        name=name,
        hr=hr,
    )


_EF_TEMPLATES = [
    "Left ventricular systolic function is {q}, with an estimated ejection fraction of {v}.",
    "The LV ejection fraction is {v}.",
    "LVEF {v}.",
    "EF: {v}.",
    "{q} left ventricular systolic function (LVEF {v}).",
    "Estimated LVEF is {v} by visual assessment.",
    "LV ejection fraction by biplane Simpson's method: {v}.",
    "{q} LV systolic function. EF {v}.",
    "Global LV systolic function is {q}; the ejection fraction is estimated at {v}.",
    "The left ventricular ejection fraction was visually estimated to be {v}.",
    "LVEF = {v}.",
    "{q} systolic function with LVEF of {v}.",
]
_EF_VISUAL_TEMPLATES = [
    "LVEF visually estimated at {r}%.",
    "The ejection fraction is visually estimated at about {r}%.",
    "{q} LV systolic function; EF visually estimated at {r}%.",
    "By visual estimation, the LVEF is approximately {r}%.",
    "Visually estimated LVEF: {r}%.",
    "Left ventricular ejection fraction is estimated visually at {r} %.",
    "{q} left ventricular systolic function, EF visually estimated at {r}%.",
]
_LV_FUNCTION_TEMPLATES = [
    "{q} LV systolic function.",
    "Left ventricular systolic function is {q}.",
    "Global LV systolic function is {q}.",
    "{q} left ventricular systolic function.",
    "LV systolic function appears {q}.",
]


def _ef_sentence(state: CardiacState, rng: np.random.Generator) -> str:
    v = ef_phrase(state.ef, rng)
    q = lv_function_grade(state.ef, rng)
    return _fill(rng, _EF_TEMPLATES, v=v, q=q)


@dataclass(frozen=True)
class _EfStatement:
    """How a reader states the EF: their value and the wording's kind."""

    value: int  # the reader's EF; the grades follow it even when it goes unstated
    style: str  # "number", "range", "visual" or "missing"
    low: int  # a range's lower end (a range is low to low + 5)

    @property
    def stated(self) -> float | None:
        return None if self.style == "missing" else float(self.value)


def _ef_statement(state: CardiacState, realism: ReportRealism, rng: np.random.Generator) -> _EfStatement:
    # a fixed number of draws, so that one knob's value does not move another's stream
    u = rng.random(4)
    z = float(rng.standard_normal())
    seen = float(np.clip(state.ef + realism.observer_sd * z, 5.0, 85.0))
    if u[0] < realism.ef_missing:
        style = "missing"
    elif u[1] < realism.ef_range:
        style = "range"
    elif u[1] < realism.ef_range + realism.ef_visual:
        style = "visual"
    else:
        style = "number"
    # an eyeballed EF is given in fives; a measured one often is too
    value = 5 * round(seen / 5) if style == "visual" or u[2] < realism.ef_round5 else round(seen)
    low = 5 * (value // 5)
    if low == value and u[3] < 0.5:
        low -= 5
    return _EfStatement(int(value), style, int(low))


def stated_ef(
    state: CardiacState, realism: ReportRealism | None, rng: np.random.Generator | int
) -> float | None:
    """The EF a reader states for ``state``: ``None`` when the report states none.

    The true EF plus the reader's error (Gaussian, ``realism.observer_sd``), clipped to
    5-85 % and rounded to an integer or to the nearest 5 (``realism.ef_round5``, and a
    visual estimate always). Without realism it is the true EF rounded, with no draw
    from ``rng``. :func:`compose_report` draws it first
    from its child generator, so this equals its ``stated_ef`` for that generator.
    """
    if realism is None or realism == ReportRealism():
        return float(round(state.ef))
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    return _ef_statement(state, realism, rng).stated


def _stated_ef_sentence(rng: np.random.Generator, ef: _EfStatement) -> Sentence:
    """The EF sentence of a fallible reader: their value, in the wording its kind asks for."""
    r, lo, hi = ef.value, ef.low, ef.low + 5
    if ef.style == "missing":
        q = lv_function_grade(r, rng)
        return "lv_function", _fill(rng, _LV_FUNCTION_TEMPLATES, q=q)
    if ef.style == "visual":
        q = lv_function_grade(r, rng)
        return "ef", _fill(rng, _EF_VISUAL_TEMPLATES, r=r, q=q)
    if ef.style == "range":
        v = _pick(rng, [f"{lo}-{hi}%", f"{lo}-{hi}%", f"{lo} - {hi} %", f"{lo} to {hi}%", f"{lo}%-{hi}%"])
    else:
        v = _pick(
            rng, [f"{r}%", f"{r}%", f"{r} %", f"{r} percent", f"approximately {r}%", f"~{r}%", f"0.{r:02d}"]
        )
    q = lv_function_grade(r, rng)
    return "ef", _fill(rng, _EF_TEMPLATES, v=v, q=q)


def _ef_item(state: CardiacState, rng: np.random.Generator, ef: _EfStatement | None) -> Sentence:
    return ("ef", _ef_sentence(state, rng)) if ef is None else _stated_ef_sentence(rng, ef)


def _wall_motion(state: CardiacState, rng: np.random.Generator) -> str:
    r = round(state.ef)
    if r >= 53:
        return _pick(
            rng,
            [
                "No regional wall motion abnormalities.",
                "Normal regional wall motion.",
                "There are no segmental wall motion abnormalities.",
            ],
        )
    if r >= 40:
        return _pick(
            rng,
            [
                "Mild global hypokinesis.",
                "Hypokinesis of the inferior and inferolateral walls.",
                "Mildly hypokinetic anterior wall and apex.",
                "Diffuse mild hypokinesis.",
            ],
        )
    return _pick(
        rng,
        [
            "Global hypokinesis.",
            "Severe diffuse hypokinesis with akinesis of the apex.",
            "Akinesis of the anterior wall, anteroseptum and apex; the remaining segments are hypokinetic.",
            "Diffusely hypokinetic left ventricle.",
        ],
    )


def _diastolic(state: CardiacState, rng: np.random.Generator) -> str:
    if "lv_hypertrophy" in state.findings or "la_enlargement" in state.findings:
        options = [
            "Grade I diastolic dysfunction (impaired relaxation).",
            "Grade II diastolic dysfunction.",
            "Elevated LV filling pressures (E/e' 16).",
        ]
    elif round(state.ef) < 45:
        options = [
            "Diastolic function is indeterminate.",
            "Grade II diastolic dysfunction.",
            "Restrictive filling pattern (grade III diastolic dysfunction).",
        ]
    else:
        options = [
            "Normal diastolic function.",
            "Normal LV filling pattern for age.",
            "Diastolic function is normal.",
        ]
    return _pick(rng, options)


def _lv_size(state: CardiacState, rng: np.random.Generator) -> Sentence:
    lvidd = _cm(state.lvidd)
    edv = int(round(state.edv))
    if "lv_dilation" in state.findings:
        g = state.severity["lv_dilation"]
        return "lv_dilation", _fill(
            rng,
            [
                "The left ventricle is {adv} dilated.",
                "{adj} left ventricular dilatation.",
                "LV cavity size is {adv} increased (LVIDd {lvidd} cm).",
                "Dilated left ventricle ({adj}), LVIDd {lvidd} cm.",
                "LV end-diastolic volume is increased at {edv} mL, consistent with {adj} LV enlargement.",
                "{adj} LV enlargement.",
                "The LV is {adv} enlarged.",
                "Eccentric remodeling with {adj} dilation of the left ventricle.",
                "LV size: {adv} increased.",
            ],
            adj=_adj(g, rng),
            adv=_adv(g, rng),
            lvidd=lvidd,
            edv=edv,
        )
    return "no_lv_dilation", _fill(
        rng,
        [
            "Normal left ventricular size.",
            "The left ventricle is normal in size.",
            "LV cavity size is normal (LVIDd {lvidd} cm).",
            "Normal LV chamber dimensions.",
            "LV size: normal.",
            "The left ventricular cavity is normal in size.",
        ],
        lvidd=lvidd,
    )


def _lv_wall(state: CardiacState, rng: np.random.Generator) -> Sentence:
    ivs = _cm(state.wall_cm)
    pw = _cm(state.wall_cm * 0.95)
    if "lv_hypertrophy" in state.findings:
        g = state.severity["lv_hypertrophy"]
        return "lv_hypertrophy", _fill(
            rng,
            [
                "There is {adj} concentric left ventricular hypertrophy.",
                "{adj} LVH.",
                "LV wall thickness is {adv} increased (IVSd {ivs} cm, LVPWd {pw} cm).",
                "Increased left ventricular wall thickness consistent with {adj} hypertrophy.",
                "Concentric LV hypertrophy, {adj}.",
                "The LV walls are {adv} thickened.",
                "{adj} concentric LVH (septum {ivs} cm).",
                "Left ventricular hypertrophy, {adj} in degree.",
            ],
            adj=_adj(g, rng),
            adv=_adv(g, rng),
            ivs=ivs,
            pw=pw,
        )
    return "no_lv_hypertrophy", _fill(
        rng,
        [
            "Normal LV wall thickness.",
            "No left ventricular hypertrophy.",
            "LV wall thickness is within normal limits.",
            "Wall thickness is normal (IVSd {ivs} cm).",
            "No LVH.",
        ],
        ivs=ivs,
    )


def _rv(state: CardiacState, rng: np.random.Generator) -> Sentence:
    tapse = _cm(state.tapse)
    rvd = _cm(3.3 * state.rv_scale)
    if "rv_dilation" in state.findings:
        g = state.severity["rv_dilation"]
        return "rv_dilation", _fill(
            rng,
            [
                "The right ventricle is {adv} dilated.",
                "{adj} RV enlargement.",
                "RV size is {adv} increased (basal diameter {rvd} cm).",
                "Dilated right ventricle ({adj}).",
                "{adj} right ventricular dilatation; TAPSE {tapse} cm.",
                "Right ventricular cavity is {adv} enlarged.",
                "RV: {adv} dilated with reduced systolic function.",
                "Enlarged RV, {adj}.",
            ],
            adj=_adj(g, rng),
            adv=_adv(g, rng),
            rvd=rvd,
            tapse=tapse,
        )
    return "no_rv_dilation", _fill(
        rng,
        [
            "Normal right ventricular size and function.",
            "The right ventricle is normal in size.",
            "RV: normal size, normal systolic function.",
            "Normal RV cavity size with normal systolic function (TAPSE {tapse} cm).",
            "Right ventricle is normal in size and systolic function.",
        ],
        tapse=tapse,
    )


def _la(state: CardiacState, rng: np.random.Generator) -> Sentence:
    lavi = int(round(state.la_index))
    if "la_enlargement" in state.findings:
        g = state.severity["la_enlargement"]
        return "la_enlargement", _fill(
            rng,
            [
                "The left atrium is {adv} dilated.",
                "{adj} left atrial enlargement.",
                "LA volume index {lavi} mL/m2, {adv} increased.",
                "Enlarged left atrium ({adj}).",
                "LAE, {adj}.",
                "Left atrial size is {adv} increased (LAVI {lavi} ml/m2).",
                "{adj} LA dilatation.",
                "The LA is {adv} enlarged.",
            ],
            adj=_adj(g, rng),
            adv=_adv(g, rng),
            lavi=lavi,
        )
    return "no_la_enlargement", _fill(
        rng,
        [
            "Normal left atrial size.",
            "The left atrium is normal in size (LA volume index {lavi} ml/m2).",
            "LA: normal.",
            "Left atrium is not enlarged.",
            "Left atrial volume is normal.",
        ],
        lavi=lavi,
    )


def _ra(state: CardiacState, rng: np.random.Generator) -> str:
    if "rv_dilation" in state.findings:
        return _pick(
            rng, ["The right atrium is mildly dilated.", "Mild right atrial enlargement.", "RA is enlarged."]
        )
    return _pick(rng, ["The right atrium is normal in size.", "Normal right atrial size.", "RA: normal."])


def _effusion(state: CardiacState, rng: np.random.Generator) -> Sentence:
    if "pericardial_effusion" in state.findings:
        size = _pick(rng, _EFFUSION_SIZE[state.severity["pericardial_effusion"]])
        return "pericardial_effusion", _fill(
            rng,
            [
                "There is a {size} pericardial effusion.",
                "{size} circumferential pericardial effusion without evidence of tamponade.",
                "Pericardial effusion: {size}, measuring {cm} cm.",
                "A {size} pericardial effusion is present, largest posteriorly ({cm} cm).",
                "{size} pericardial effusion with no echocardiographic signs of tamponade physiology.",
                "Echo-free space around the heart consistent with a {size} pericardial effusion.",
                "{size} effusion in the pericardial space.",
            ],
            size=size,
            cm=_cm(state.effusion_cm),
        )
    return "no_pericardial_effusion", _pick(
        rng,
        [
            "No pericardial effusion.",
            "There is no pericardial effusion.",
            "Pericardium: normal, no effusion.",
            "No significant pericardial effusion.",
            "Normal pericardium without effusion.",
        ],
    )


def _aortic_valve(state: CardiacState, rng: np.random.Generator) -> Sentence:
    if "tavr" in state.devices:
        return "tavr", _fill(
            rng,
            [
                "Status post TAVR; the transcatheter valve is well seated with no paravalvular leak.",
                "A {mm} mm SAPIEN 3 transcatheter valve is present in the aortic position, mean gradient {grad} mmHg.",
                "TAVR in situ with normal function.",
                "S/P TAVR ({mm} mm Evolut), mean gradient {grad} mmHg, trace paravalvular regurgitation.",
                "Transcatheter aortic valve replacement (TAVR) with normal leaflet motion.",
                "Well-functioning transcatheter aortic valve; no significant regurgitation.",
                "TAVI in the aortic position, stable appearance.",
            ],
            mm=_pick(rng, ["23", "26", "29"]),
            grad=int(rng.integers(6, 15)),
        )
    if "surgical_valve" in state.devices and state.surgical_position == "aortic":
        return "surgical_valve", _fill(
            rng,
            [
                "Bioprosthetic aortic valve (surgical AVR), normal function, mean gradient {grad} mmHg.",
                "S/P AVR with a {mm} mm mechanical prosthesis; normal disc excursion.",
                "Mechanical aortic valve prosthesis with normal gradients.",
                "A prosthetic aortic valve is present and appears well seated.",
                "Surgical aortic valve replacement with a stented bioprosthesis; no paravalvular leak.",
                "Status post surgical AVR, normally functioning bioprosthesis.",
                "Prosthetic valve in the aortic position with a well-seated sewing ring.",
            ],
            mm=_pick(rng, ["21", "23", "25", "27"]),
            grad=int(rng.integers(8, 18)),
        )
    return "aortic_valve", _pick(
        rng,
        [
            "The aortic valve is trileaflet and opens normally.",
            "Mild aortic valve sclerosis without stenosis.",
            "No aortic stenosis or regurgitation.",
            "Aortic valve: mildly thickened, no stenosis.",
            "Trace aortic regurgitation.",
            "Normal aortic valve.",
            "Calcified aortic valve with mild stenosis.",
        ],
    )


def _mitral_valve(state: CardiacState, rng: np.random.Generator) -> Sentence:
    if "mitraclip" in state.devices:
        return "mitraclip", _fill(
            rng,
            [
                "Status post MitraClip with a stable device on the mitral leaflets; residual mild mitral regurgitation.",
                "A MitraClip is seen on the A2/P2 scallops with a double-orifice mitral valve.",
                "S/P edge-to-edge repair (TEER), mean mitral gradient {grad} mmHg.",
                "Mitral clip in place with trace residual MR.",
                "Two clips are present on the mitral valve, well attached to both leaflets.",
                "Edge-to-edge mitral repair with mild residual regurgitation.",
                "MITRACLIP in situ, no clip detachment.",
            ],
            grad=int(rng.integers(2, 6)),
        )
    if "surgical_valve" in state.devices and state.surgical_position == "mitral":
        return "surgical_valve", _fill(
            rng,
            [
                "Bioprosthetic mitral valve is present with normal function.",
                "S/P MVR ({mm} mm mechanical prosthesis), normal disc motion.",
                "Mechanical mitral valve prosthesis, mean gradient {grad} mmHg.",
                "A prosthetic mitral valve is seen, well seated, with no paravalvular regurgitation.",
                "Status post surgical mitral valve replacement.",
                "Prosthetic valve in the mitral position with a normal-appearing sewing ring.",
                "Surgical bioprosthesis in the mitral position, normal gradients.",
            ],
            mm=_pick(rng, ["25", "27", "29", "31"]),
            grad=int(rng.integers(3, 7)),
        )
    severe_mr = "la_enlargement" in state.findings and round(state.ef) < 45
    options = (
        [
            "Moderate functional mitral regurgitation.",
            "Moderate to severe mitral regurgitation.",
            "Moderate MR.",
        ]
        if severe_mr
        else [
            "Trace mitral regurgitation.",
            "Mild mitral regurgitation.",
            "Structurally normal mitral valve.",
            "Mild mitral annular calcification.",
            "No mitral stenosis; trivial MR.",
            "The mitral valve leaflets are mildly thickened.",
        ]
    )
    return "mitral_valve", _pick(rng, options)


def _tricuspid(state: CardiacState, rng: np.random.Generator) -> str:
    rvsp = int(round(state.rvsp))
    return _fill(
        rng,
        [
            "Trace tricuspid regurgitation. Estimated RVSP {rvsp} mmHg.",
            "Mild TR; PASP {rvsp} mmHg.",
            "Normal tricuspid valve, RV systolic pressure {rvsp} mmHg.",
            "Estimated pulmonary artery systolic pressure is {rvsp} mmHg.",
            "Tricuspid valve is structurally normal.",
        ],
        rvsp=rvsp,
    )


def _pacemaker(state: CardiacState, rng: np.random.Generator) -> Sentence:
    return "pacemaker", _pick(
        rng,
        [
            "A pacemaker lead is seen in the right heart.",
            "Pacing wire noted in the right ventricle.",
            "ICD lead is visualized in the right atrium and right ventricle.",
            "Device leads are seen in the right atrium and right ventricle.",
            "Transvenous pacemaker lead present in the RV.",
            "PPM lead in the RV apex.",
            "AICD wire seen traversing the tricuspid valve.",
            "Echogenic pacer wire in the RA and RV.",
        ],
    )


def _impella(state: CardiacState, rng: np.random.Generator) -> Sentence:
    return "impella", _fill(
        rng,
        [
            "Impella device in place across the aortic valve.",
            "Impella CP seen across the aortic valve with the inlet approximately {d} cm below the annulus.",
            "IMPELLA catheter in satisfactory position.",
            "Percutaneous LV assist device (Impella) traverses the aortic valve into the LV cavity.",
            "Impella in situ; inflow in the LV cavity, outflow in the ascending aorta.",
            "The Impella inlet is positioned {d} cm from the aortic annulus, appropriate depth.",
            "Percutaneous left ventricular assist device (Impella) is present.",
        ],
        d=_cm(float(rng.uniform(3.0, 4.5))),
    )


def _measurements(state: CardiacState, rng: np.random.Generator) -> str:
    items = [
        f"LVIDd {_cm(state.lvidd)} cm",
        f"LVIDs {_cm(state.lvids)} cm",
        f"IVSd {_cm(state.wall_cm)} cm",
        f"LVPWd {_cm(state.wall_cm * 0.95)} cm",
        f"LVEDV {int(round(state.edv))} mL",
        f"LVESV {int(round(state.esv))} mL",
        f"LA volume index {int(round(state.la_index))} mL/m2",
        f"Aortic root {_cm(state.aortic_root)} cm",
        f"TAPSE {_cm(state.tapse)} cm",
    ]
    keep = sorted(rng.choice(len(items), size=int(rng.integers(3, len(items) + 1)), replace=False))
    return _pick(rng, ["MEASUREMENTS: ", "Measurements: ", "2D: "]) + ", ".join(items[i] for i in keep) + "."


def _aorta_ivc(state: CardiacState, rng: np.random.Generator) -> str:
    return _fill(
        rng,
        [
            "The aortic root is normal in size ({root} cm).",
            "Normal caliber aortic root and ascending aorta.",
            "The IVC is normal in size with more than 50% inspiratory collapse.",
            "IVC is dilated with reduced respiratory variation.",
            "Normal inferior vena cava size.",
        ],
        root=_cm(state.aortic_root),
    )


# ---------------------------------------------------------------------------------------
# assembling a report


def report_sentences(
    state: CardiacState, rng: np.random.Generator, ef: _EfStatement | None = None
) -> list[list[Sentence]]:
    """The report's content as sections of ``(topic, sentence)`` pairs, before layout.

    Topics name what a sentence states: a finding (``"lv_dilation"``) or its normal
    wording (``"no_lv_dilation"``), a device (``"tavr"``), ``"ef"``, or context
    (``"indication"``, ``"comparison"``, ...). Sections: header, LV, RV and atria,
    valves, pericardium and vessels, impression. ``ef`` (a fallible reader's
    statement) words the EF sentences; by default they state ``state.ef``.
    """
    header: list[Sentence] = [("indication", _indication(rng))]
    if rng.random() < 0.6:
        header.append(("quality", _quality(state, rng)))
    if rng.random() < 0.5:
        header.append(("rhythm", _rhythm(state, rng)))
    if rng.random() < 0.6:
        header.append(("comparison", _comparison(state, rng)))

    lv: list[Sentence] = [_ef_item(state, rng, ef), _lv_size(state, rng), _lv_wall(state, rng)]
    if rng.random() < 0.7:
        lv.append(("wall_motion", _wall_motion(state, rng)))
    if rng.random() < 0.5:
        lv.append(("diastolic", _diastolic(state, rng)))
    if "impella" in state.devices:
        lv.append(_impella(state, rng))

    right: list[Sentence] = [_rv(state, rng), _la(state, rng)]
    if rng.random() < 0.6:
        right.append(("ra", _ra(state, rng)))
    if "pacemaker" in state.devices:
        right.append(_pacemaker(state, rng))

    valves: list[Sentence] = [_aortic_valve(state, rng), _mitral_valve(state, rng)]
    if rng.random() < 0.6:
        valves.append(("tricuspid", _tricuspid(state, rng)))

    other: list[Sentence] = [_effusion(state, rng)]
    if rng.random() < 0.5:
        other.append(("aorta", _aorta_ivc(state, rng)))
    if rng.random() < 0.35:
        other.append(("measurements", _measurements(state, rng)))

    for section in (lv, right, valves, other):
        _shuffle_tail(section, rng)
    impression = _impression(state, rng, ef)
    return [header, lv, right, valves, other, impression]


def _shuffle_tail(section: list[Sentence], rng: np.random.Generator) -> None:
    """Shuffle a section in place, mostly keeping its first sentence first (as readers do)."""
    start = 1 if rng.random() < 0.6 else 0
    tail = section[start:]
    order = rng.permutation(len(tail))
    section[start:] = [tail[i] for i in order]


def _impression(state: CardiacState, rng: np.random.Generator, ef: _EfStatement | None) -> list[Sentence]:
    items: list[Sentence] = []
    if rng.random() < 0.6:
        items.append(_ef_item(state, rng, ef))
    else:
        q = lv_function_grade(state.ef, rng)
        items.append(
            ("lv_function", _fill(rng, ["{q} LV systolic function.", "{q} left ventricular function."], q=q))
        )
    for finding, writer in (
        ("lv_dilation", _lv_size),
        ("lv_hypertrophy", _lv_wall),
        ("rv_dilation", _rv),
        ("la_enlargement", _la),
        ("pericardial_effusion", _effusion),
    ):
        if finding in state.findings and rng.random() < 0.7:
            items.append(writer(state, rng))
    for device, writer in (("pacemaker", _pacemaker), ("impella", _impella)):
        if device in state.devices and rng.random() < 0.5:
            items.append(writer(state, rng))
    aortic = "tavr" in state.devices or (
        "surgical_valve" in state.devices and state.surgical_position == "aortic"
    )
    mitral = "mitraclip" in state.devices or (
        "surgical_valve" in state.devices and state.surgical_position == "mitral"
    )
    if aortic and rng.random() < 0.4:
        items.append(_aortic_valve(state, rng))
    if mitral and rng.random() < 0.4:
        items.append(_mitral_valve(state, rng))
    if len(items) == 1 and round(state.ef) >= 53 and rng.random() < 0.6:
        items.append(
            (
                "normal",
                _pick(
                    rng,
                    [
                        "Otherwise normal echocardiogram.",
                        "No other significant abnormalities.",
                        "Otherwise unremarkable study.",
                    ],
                ),
            )
        )
    if state.prior_ef is not None and rng.random() < 0.3:
        items.append(("comparison", _comparison(state, rng)))
    return items


_HEADERS = {
    1: ["LEFT VENTRICLE:", "Left Ventricle:", "LV:"],
    2: ["RIGHT VENTRICLE / ATRIA:", "Right Heart and Atria:", "RV/ATRIA:"],
    3: ["VALVES:", "Valves:", "VALVULAR:"],
    4: ["PERICARDIUM / OTHER:", "Other findings:", "OTHER:"],
    5: ["IMPRESSION:", "CONCLUSIONS:", "Summary:", "Interpretation Summary:", "FINAL IMPRESSION:"],
}


@dataclass(frozen=True)
class WrittenReport:
    """A report's text and the EF it states (``None``: it states none)."""

    text: str
    stated_ef: float | None


def write_report(
    state: CardiacState, rng: np.random.Generator | int, realism: ReportRealism | None = None
) -> str:
    """A report for ``state``; layout, order, phrasing and letter case vary with ``rng``.

    ``realism`` makes the reader fallible and the writing untidy (see
    :func:`compose_report`); ``None`` writes the textbook report.

    Example::

        >>> from echoclip.data.synthetic import make_patient, cardiac_state
        >>> write_report(cardiac_state(make_patient(1), 0, 1), 0)[:40]  # doctest: +SKIP
        'INDICATION: DYSPNEA. COMPARISON: NONE. ...'
    """
    return compose_report(state, rng, realism).text


def compose_report(
    state: CardiacState, rng: np.random.Generator | int, realism: ReportRealism | None = None
) -> WrittenReport:
    """A report for ``state`` and the EF it states, which a fallible reader may get wrong.

    With ``realism`` off (``None`` or every knob zero) the report states the true EF and
    ``rng`` gives exactly the report it always gave. Otherwise the reader's EF
    (:func:`stated_ef`) is drawn first from a child of ``rng`` (``Generator.spawn``, which
    leaves ``rng``'s own stream as it was), the report is written around it with ``rng``,
    and the child then decides the abbreviations, typos, hedges and table.

    Example::

        >>> from echoclip.data.synthetic import make_patient, cardiac_state
        >>> from echoclip.data.synthetic.realism import get_realism
        >>> state = cardiac_state(make_patient(1), 0, 1)  # true EF 61.9 %
        >>> written = compose_report(state, 1, get_realism("real").report)
        >>> written.stated_ef, extract_ef(written.text)  # a reader who saw 51, stated as a range
        (51.0, [(50.0, 55.0)])
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    if realism is None or realism == ReportRealism():
        text = _letter_case(_layout(report_sentences(state, rng), rng), rng)
        return WrittenReport(text, float(round(state.ef)))
    side = _child(rng)
    ef = _ef_statement(state, realism, side)
    sections = report_sentences(replace(state, ef=float(ef.value)), rng, ef)
    sections = [[(topic, _untidy(topic, s, realism, side)) for topic, s in part] for part in sections]
    text = _layout(sections, rng)
    if side.random() < realism.table:
        head = " ".join(s for _, s in sections[0])
        rest = text[len(head) :].lstrip(" \n")
        text = f"{head}\n{_table(state, side)}\n{rest}"
    return WrittenReport(_letter_case(text, rng), ef.stated)


def _child(rng: np.random.Generator) -> np.random.Generator:
    """A generator of its own for the realism draws, leaving ``rng``'s stream untouched."""
    try:
        return rng.spawn(1)[0]
    except TypeError:  # a bit generator without a seed sequence cannot spawn
        return np.random.default_rng(int(rng.bit_generator.random_raw()))


def _layout(sections: list[list[Sentence]], rng: np.random.Generator) -> str:
    """The sentences laid out as headed sections, a numbered summary or one paragraph."""
    layout = rng.choice(["sections", "summary", "paragraph"], p=[0.45, 0.3, 0.25])
    if layout == "sections":
        lines = [" ".join(s for _, s in sections[0])]
        for i, section in enumerate(sections[1:], start=1):
            body = _numbered(section, rng) if i == 5 else " ".join(s for _, s in section)
            lines.append(f"{_pick(rng, _HEADERS[i])} {body}")
        return "\n".join(lines)
    if layout == "summary":
        head = " ".join(s for _, s in sections[0])
        body = [pair for section in sections[1:] for pair in section]
        return head + "\n" + _numbered(body, rng, sep="\n")
    body = [pair for section in sections[1:5] for pair in section]
    order = rng.permutation(len(body))
    body = [body[i] for i in order]
    closing = " ".join(s for _, s in sections[5])
    text = " ".join(s for _, s in sections[0]) + " " + " ".join(s for _, s in body)
    return text + " " + _pick(rng, ["In summary: ", "Conclusion: ", "IMPRESSION: "]) + closing


def _numbered(items: list[Sentence], rng: np.random.Generator, sep: str = " ") -> str:
    style = int(rng.integers(3))
    if style == 0:
        return sep.join(f"{i}. {s}" for i, (_, s) in enumerate(items, start=1))
    if style == 1:
        return sep.join(f"- {s}" for _, s in items)
    return sep.join(f"{i}) {s}" for i, (_, s) in enumerate(items, start=1))


def _letter_case(text: str, rng: np.random.Generator) -> str:
    u = rng.random()
    if u < 0.45:
        return text.upper()
    if u < 0.85:
        return text
    # mixed: some lines shouted, as when a template's headings and findings are in capitals
    return "\n".join(line.upper() if rng.random() < 0.5 else line for line in text.split("\n"))


# ---------------------------------------------------------------------------------------
# untidy writing: hedges, abbreviations, typos and tables that keep every fact


def _untidy(topic: str, text: str, realism: ReportRealism, rng: np.random.Generator) -> str:
    """One sentence as a hurried reader writes it: perhaps hedged, abbreviated, mistyped.

    Each change is kept only when the sentence still states the same devices, findings
    and EF (:func:`_facts`), so no variation adds, hides or inverts one.
    """
    draws = rng.random(3)
    for u, chance, change in zip(
        draws, (realism.hedge, realism.abbreviation, realism.typo), (_hedge, _abbreviate, _typo), strict=True
    ):
        if u < chance:
            changed = change(topic, text, rng)
            if _facts(changed) == _facts(text):
                text = changed
    return text


def _facts(text: str) -> tuple[frozenset[str], tuple[tuple[float, float], ...], frozenset[str]]:
    """What a text states: devices, EF statements, present findings."""
    return frozenset(mentioned_devices(text)), tuple(extract_ef(text)), frozenset(mentioned_findings(text))


# what a hedge says is hard to see, by topic (topics not named here are not hedged)
_HEDGE_SUBJECT = {
    "ef": "LV function",
    "lv_function": "LV function",
    "wall_motion": "wall motion",
    "diastolic": "diastolic function",
    "lv_dilation": "LV size",
    "no_lv_dilation": "LV size",
    "lv_hypertrophy": "wall thickness",
    "no_lv_hypertrophy": "wall thickness",
    "rv_dilation": "the right ventricle",
    "no_rv_dilation": "the right ventricle",
    "la_enlargement": "the left atrium",
    "no_la_enlargement": "the left atrium",
    "ra": "the right atrium",
    "pericardial_effusion": "the pericardium",
    "no_pericardial_effusion": "the pericardium",
    "aortic_valve": "the aortic valve",
    "tavr": "the aortic valve",
    "mitral_valve": "the mitral valve",
    "mitraclip": "the mitral valve",
    "surgical_valve": "the valves",
    "tricuspid": "the tricuspid valve",
    "pacemaker": "the right heart",
    "impella": "the LV outflow tract",
    "aorta": "the aorta",
}
_TENTATIVE_START = re.compile(
    r"^(?:Mild|Moderate|Severe|Marked|Dilated|Enlarged|Concentric|Small|Large|Trace)\b"
)


def _hedge(topic: str, text: str, rng: np.random.Generator) -> str:
    """A hedged wording that softens a statement without turning it round."""
    subject = _HEDGE_SUBJECT.get(topic)
    if subject is None:
        return text
    limited = _pick(rng, ["Suboptimal views limit assessment of {x}; ", "Limited views of {x}; "])
    options = [limited.format(x=subject) + _lower_first(text)]
    for verb in (" is ", " are "):
        if verb in text:
            options.append(text.replace(verb, f"{verb}{_pick(rng, ['probably', 'likely'])} ", 1))
            break
    if text.startswith("No ") and not text.startswith(("No significant", "No other")):
        options.append("No definite " + text[3:])
    if _TENTATIVE_START.match(text):
        options.append(_pick(rng, ["Probable ", "Likely "]) + _lower_first(text))
    if topic in FINDINGS:  # a present finding: its degree, not its presence, is in doubt
        doubt = _pick(
            rng, [", though a greater degree cannot be excluded.", "; cannot exclude a more severe degree."]
        )
        options.append(text.rstrip(".") + doubt)
    return _pick(rng, options)


def _lower_first(text: str) -> str:
    """``"The LV ..."`` -> ``"the LV ..."``, but ``"LVEF ..."`` stays as it is."""
    first = text.split(" ", 1)[0]
    return text[0].lower() + text[1:] if first[1:].islower() else text


_ABBREVIATIONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(rf"\b{long}\b", re.I), short)
    for long, short in [
        ("left ventricular ejection fraction", "LVEF"),
        ("ejection fraction", "EF"),
        ("left ventricular hypertrophy", "LVH"),
        ("left atrial enlargement", "LAE"),
        ("regional wall motion abnormalities", "RWMA"),
        ("pulmonary artery systolic pressure", "PASP"),
        ("mitral regurgitation", "MR"),
        ("tricuspid regurgitation", "TR"),
        ("aortic regurgitation", "AR"),
        ("aortic stenosis", "AS"),
        ("aortic valve", "AV"),
        ("mitral valve", "MV"),
        ("tricuspid valve", "TV"),
        ("left ventric(?:ular|le)", "LV"),
        ("right ventric(?:ular|le)", "RV"),
        ("left atri(?:al|um)", "LA"),
        ("right atri(?:al|um)", "RA"),
        ("inferior vena cava", "IVC"),
        ("consistent with", "c/w"),
        ("status post", "s/p"),
        ("without", "w/o"),
        ("with", "w/"),
        ("normal", "nl"),
        ("moderately|moderate", "mod"),
        ("severely|severe", "sev"),
        ("approximately", "approx"),
    ]
)


def _abbreviate(topic: str, text: str, rng: np.random.Generator) -> str:
    """The sentence with the usual abbreviations; a device's own words are left whole."""
    pieces = _split_protected(text, [DEVICE_PATTERNS[d] for d in DEVICES])
    out = []
    for i, (piece, protected) in enumerate(pieces):
        if not protected:
            for pattern, short in _ABBREVIATIONS:
                piece = pattern.sub(_short_form(short, sentence_start=i == 0), piece)
        out.append(piece)
    return "".join(out)


def _short_form(short: str, sentence_start: bool) -> Callable[[re.Match[str]], str]:
    """The replacement for a long form, capitalised where it opens the sentence."""

    def replace_match(m: re.Match[str]) -> str:
        return short[0].upper() + short[1:] if sentence_start and m.start() == 0 else short

    return replace_match


_TYPO_GUARDED = (
    *(DEVICE_PATTERNS[d] for d in DEVICES),
    *(states for states, _ in FINDING_PATTERNS.values()),
    re.compile(r"\blv\s*ef\b|\blvef\b|\bef\b|ejection fraction|percent", re.I),
)


def _typo(topic: str, text: str, rng: np.random.Generator) -> str:
    """A letter swapped, dropped or doubled in one word that names no fact (a swap of two
    like letters doubles one instead)."""
    words = [
        (offset + m.start(), m.group())
        for offset, (piece, protected) in _offsets(_split_protected(text, _TYPO_GUARDED))
        if not protected
        for m in re.finditer(r"\b[A-Za-z]{4,}\b", piece)
    ]
    if not words:
        return text
    start, word = words[int(rng.integers(len(words)))]
    i = int(rng.integers(1, len(word) - 1))
    kind = int(rng.integers(3))
    if kind == 0 and word[i] != word[i + 1]:
        typo = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    elif kind == 1:
        typo = word[:i] + word[i + 1 :]
    else:
        typo = word[:i] + word[i] + word[i:]
    return text[:start] + typo + text[start + len(word) :]


def _split_protected(text: str, patterns: Sequence[re.Pattern[str]]) -> list[tuple[str, bool]]:
    """``text`` cut into pieces, each marked whether it lies in a whole word a pattern matches."""
    covered = np.zeros(len(text) + 1, dtype=bool)
    for pattern in patterns:
        for m in pattern.finditer(text):
            lo, hi = m.start(), m.end()
            while lo > 0 and text[lo - 1].isalnum():
                lo -= 1
            while hi < len(text) and text[hi].isalnum():
                hi += 1
            covered[lo:hi] = True
    pieces: list[tuple[str, bool]] = []
    start = 0
    for k in range(1, len(text) + 1):
        if k == len(text) or covered[k] != covered[start]:
            pieces.append((text[start:k], bool(covered[start])))
            start = k
    return pieces


def _offsets(pieces: list[tuple[str, bool]]) -> list[tuple[int, tuple[str, bool]]]:
    out, offset = [], 0
    for piece in pieces:
        out.append((offset, piece))
        offset += len(piece[0])
    return out


def _table(state: CardiacState, rng: np.random.Generator) -> str:
    """A measurement table as echo software prints it: one measurement a line.

    The sizes are those the manifest records (``lvidd_cm``, ``ivsd_cm``,
    ``la_volume_index``); no volumes, so the table does not restate the true EF.
    """
    rows = [
        ("LVIDd", _cm(state.lvidd), "cm"),
        ("LVIDs", _cm(state.lvids), "cm"),
        ("IVSd", _cm(state.wall_cm), "cm"),
        ("LVPWd", _cm(state.wall_cm * 0.95), "cm"),
        ("LA vol index", str(int(round(state.la_index))), "mL/m2"),
        ("Ao root", _cm(state.aortic_root), "cm"),
        ("TAPSE", _cm(state.tapse), "cm"),
        ("RVSP", str(int(round(state.rvsp))), "mmHg"),
    ]
    keep = sorted(rng.choice(len(rows), size=int(rng.integers(4, len(rows) + 1)), replace=False))
    style = int(rng.integers(3))
    lines = [
        f"{name} {value} {unit}"
        if style == 0
        else f"{name}: {value} {unit}"
        if style == 1
        else f"{name:<14}{value} {unit}"
        for name, value, unit in (rows[i] for i in keep)
    ]
    return "\n".join(
        [_pick(rng, ["MEASUREMENTS:", "2D MEASUREMENTS:", "Measurements:", "M-mode/2D:"]), *lines]
    )


# ---------------------------------------------------------------------------------------
# reading facts back out of a report

_EF_KEY = re.compile(r"\blv\s*ef\b|\blvef\b|\bef\b|ejection fraction", re.I)
_SENTENCE_END = re.compile(r"\.(?=\s|$)|;|\n")
_EF_VALUE = re.compile(
    r"(?P<cmp>[<>]|less than|greater than|more than)?\s*(?P<a>\d{1,3}(?:\.\d+)?)\s*(?:%|percent)?"
    r"(?:\s*(?:-|–|to)\s*(?P<b>\d{1,3}(?:\.\d+)?)\s*(?:%|percent)?)?",
    re.I,
)


def extract_ef(text: str) -> list[tuple[float, float]]:
    """Every EF statement in a report as a ``(low, high)`` range in percent.

    ``"LVEF 55%"`` → ``(55, 55)``; ``"EF 50-55 %"`` → ``(50, 55)``; ``"EF >70%"`` →
    ``(70, 100)``; ``"EF 0.45"`` → ``(45, 45)``. A mention without a number (``"EF has
    improved"``) gives nothing.
    """
    found: list[tuple[float, float]] = []
    for key in _EF_KEY.finditer(text):
        rest = text[key.end() :]
        end = _SENTENCE_END.search(rest)
        rest = rest[: end.start()] if end else rest
        m = _EF_VALUE.search(rest)
        if not m:
            continue
        a = float(m.group("a"))
        b = float(m.group("b")) if m.group("b") else None
        if a < 1.0 and (b is None or b < 1.0):
            a, b = round(a * 100.0, 6), (None if b is None else round(b * 100.0, 6))
        cmp = (m.group("cmp") or "").lower()
        if b is not None:
            found.append((min(a, b), max(a, b)))
        elif cmp in (">", "greater than", "more than"):
            found.append((a, 100.0))
        elif cmp in ("<", "less than"):
            found.append((0.0, a))
        else:
            found.append((a, a))
    return found


def ef_consistent(text: str, ef: float) -> bool:
    """Whether a report states an EF and every stated EF range holds ``round(ef)``."""
    stated = extract_ef(text)
    r = round(ef)
    return bool(stated) and all(lo <= r <= hi for lo, hi in stated)


def mentioned_devices(text: str) -> set[str]:
    """The devices a report names, by :data:`DEVICE_PATTERNS`."""
    return {d for d in DEVICES if DEVICE_PATTERNS[d].search(text)}


def mentioned_findings(text: str) -> set[str]:
    """The findings a report states as present, sentence by sentence, by :data:`FINDING_PATTERNS`."""
    found: set[str] = set()
    for sentence in _SENTENCE_END.split(text):
        for f in FINDINGS:
            states, denies = FINDING_PATTERNS[f]
            if f not in found and states.search(sentence) and not denies.search(sentence):
                found.add(f)
    return found


def report_ef(text: str) -> float | None:
    """The EF a report states, as one number: its first EF statement (:func:`extract_ef`), a
    range read as its middle and an open one (``>70%``, ``<20%``) as its bound; ``None``
    when it states none.

    A report states one EF in its LV paragraph and may repeat it in the summary; the first
    statement is the LV paragraph's in a headed report and in a draft.
    """
    stated = extract_ef(text)
    if not stated:
        return None
    lo, hi = stated[0]
    if hi >= 100.0 > lo > 0.0:
        return lo
    if lo <= 0.0 < hi < 100.0:
        return hi
    return (lo + hi) / 2.0
