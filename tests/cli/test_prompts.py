"""``echoclip prompts``: a findings prompt set from a corpus's training reports, written as JSON."""

from __future__ import annotations

import pandas as pd

from echoclip.cli.main import main
from echoclip.zeroshot.prompts import load_prompt_set


def _manifest(tmp_path):
    rows = [
        # a study's report on each of its videos, and a test report that must not lend a prompt
        ("s1", "train", "The left ventricle is severely dilated. No pericardial effusion."),
        ("s1", "train", "The left ventricle is severely dilated. No pericardial effusion."),
        ("s2", "train", "The left ventricle is normal in size. Small pericardial effusion."),
        ("s3", "test", "The left ventricle is mildly dilated."),
    ]
    path = tmp_path / "manifest.parquet"
    pd.DataFrame(rows, columns=["study_id", "split", "report"]).to_parquet(path)
    return path


def test_the_training_reports_become_the_findings_prompts(tmp_path, capsys):
    out = tmp_path / "findings.json"
    assert main(["prompts", "--corpus", str(_manifest(tmp_path)), "--split", "train", "--out", str(out)]) == 0
    prompts = load_prompt_set(out)
    lv = prompts.targets["lv_dilation"]
    assert lv.positive == ("The left ventricle is severely dilated.",)
    assert lv.negative == ("The left ventricle is normal in size.",)
    assert prompts.targets["pericardial_effusion"].positive == ("Small pericardial effusion.",)
    assert "lv_dilation" in capsys.readouterr().err


def test_a_split_the_corpus_lacks_is_one_line(tmp_path, capsys):
    out = tmp_path / "findings.json"
    assert main(["prompts", "--corpus", str(_manifest(tmp_path)), "--split", "val", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no reports in split 'val'" in err
    assert not out.exists()
