"""A seeded simulator of echo studies with ground truth and reports.

>>> from echoclip.data.synthetic import simulate_reports
>>> corpus = simulate_reports(1000, seed=0)      # reports only, fast
"""

from echoclip.data.synthetic.anatomy import (
    DEVICES,
    FINDINGS,
    VIEWS,
    CardiacState,
    Patient,
    cardiac_state,
    ef_from_masks,
    lv_volume_from_mask,
    make_patient,
    with_findings,
)
from echoclip.data.synthetic.archive import simulate_archive
from echoclip.data.synthetic.cohort import StudyPlan, plan_cohort, simulate_reports
from echoclip.data.synthetic.dataset import patient_split, simulate_dataset, study_videos
from echoclip.data.synthetic.render import (
    DEVICE_REGIONS,
    DEVICE_VIEWS,
    FINDING_VIEWS,
    device_region,
    sector_for,
    visible_devices,
    visible_findings,
)
from echoclip.data.synthetic.reports import (
    DEVICE_PATTERNS,
    FINDING_PATTERNS,
    WrittenReport,
    compose_report,
    ef_consistent,
    extract_ef,
    finding_concept,
    mentioned_devices,
    mentioned_findings,
    report_sentences,
    stated_ef,
    write_report,
)
from echoclip.data.synthetic.study import Study, StudyTruth, simulate_study

__all__ = [
    "DEVICES",
    "FINDINGS",
    "VIEWS",
    "DEVICE_PATTERNS",
    "FINDING_PATTERNS",
    "finding_concept",
    "DEVICE_REGIONS",
    "DEVICE_VIEWS",
    "FINDING_VIEWS",
    "Study",
    "StudyTruth",
    "device_region",
    "sector_for",
    "simulate_study",
    "simulate_dataset",
    "study_videos",
    "simulate_archive",
    "patient_split",
    "visible_devices",
    "visible_findings",
    "with_findings",
    "CardiacState",
    "Patient",
    "StudyPlan",
    "WrittenReport",
    "cardiac_state",
    "compose_report",
    "ef_consistent",
    "ef_from_masks",
    "extract_ef",
    "lv_volume_from_mask",
    "make_patient",
    "mentioned_devices",
    "mentioned_findings",
    "plan_cohort",
    "report_sentences",
    "simulate_reports",
    "stated_ef",
    "write_report",
]
