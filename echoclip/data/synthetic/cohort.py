"""Who is studied when: a seeded cohort of patients with one to four studies each.

The same ``(n, seed)`` gives the same studies whether they are rendered
(:func:`echoclip.data.synthetic.simulate_dataset`) or only reported
(:func:`simulate_reports`), so a tokenizer trained on the report corpus sees exactly the
reports of the data set. A smaller ``n`` gives a prefix of a larger one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from echoclip.data.synthetic.anatomy import (
    TAG_PATIENT,
    TAG_REPORT,
    CardiacState,
    Patient,
    cardiac_state,
    make_patient,
    rng_for,
)
from echoclip.data.synthetic.realism import Realism, get_realism
from echoclip.data.synthetic.reports import write_report
from echoclip.errors import DataError

__all__ = ["StudyPlan", "plan_cohort", "simulate_reports"]

_VISITS = (1, 2, 3, 4)
_VISIT_P = (0.5, 0.25, 0.15, 0.1)


@dataclass(frozen=True)
class StudyPlan:
    """One study of the cohort: the patient, the visit number and the study's own seed."""

    index: int
    patient_seed: int
    visit: int
    study_seed: int


def _derive(seed: int, *stream: int) -> int:
    return int(rng_for(seed, *stream).integers(0, 2**62))


def iter_cohort(seed: int) -> Iterator[StudyPlan]:
    """Studies of an endless cohort, patient after patient, visits in order."""
    count = rng_for(seed, TAG_PATIENT, 0)
    index = 0
    patient = 0
    while True:
        patient_seed = _derive(seed, TAG_PATIENT, 1, patient)
        visits = int(count.choice(_VISITS, p=_VISIT_P))
        for visit in range(visits):
            yield StudyPlan(index, patient_seed, visit, _derive(seed, TAG_PATIENT, 2, patient, visit))
            index += 1
        patient += 1


def plan_cohort(n: int, seed: int) -> list[StudyPlan]:
    """The first ``n`` studies of the cohort drawn from ``seed``."""
    if n < 1:
        raise DataError(f"the number of studies must be at least 1, got {n}")
    plans = []
    for plan in iter_cohort(seed):
        if plan.index >= n:
            break
        plans.append(plan)
    return plans


def study_state(plan: StudyPlan, patients: dict[int, Patient] | None = None) -> CardiacState:
    """The cardiac state of a planned study (``patients`` caches patients across visits)."""
    patients = {} if patients is None else patients
    patient = patients.get(plan.patient_seed)
    if patient is None:
        patient = patients[plan.patient_seed] = make_patient(plan.patient_seed)
    return cardiac_state(patient, plan.visit, plan.study_seed)


def report_rng(study_seed: int) -> np.random.Generator:
    """The generator a study's report is written with."""
    return rng_for(study_seed, TAG_REPORT)


def simulate_reports(n: int, seed: int, realism: str | Realism = "clean") -> list[str]:
    """Reports of the first ``n`` studies of the cohort ``seed``, without rendering any video.

    Fast (thousands per second): the corpus for training a tokenizer. The reports are the
    ones :func:`simulate_dataset` writes into its manifest for the same ``n``, ``seed``
    and ``realism`` (a preset name or a :class:`Realism`; only its report part matters).

    Example::

        >>> reports = simulate_reports(1000, seed=0)
        >>> len(reports)
        1000
    """
    report = get_realism(realism).report
    patients: dict[int, Patient] = {}
    return [
        write_report(study_state(p, patients), report_rng(p.study_seed), report) for p in plan_cohort(n, seed)
    ]
