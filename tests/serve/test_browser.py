"""`echoclip serve` as users run it: a real server on 127.0.0.1, driven by headless Chromium.

Chromium is Debian's package (``.ci/run`` installs it when missing), used through
Playwright's Python API with ``executable_path``; Playwright's own browser downloads are
never used. Without a Chromium the browser test is skipped, saying so.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from echoclip.models.ood import OOD_WARNING

from .conftest import PATIENT_ID, PATIENT_NAME, write_patient_dicom

STARTUP_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(served, tmp_path_factory):
    """``(base URL, server output file)`` of ``echoclip serve`` running in a subprocess."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "output.txt"
    command = [
        sys.executable,
        "-m",
        "echoclip.cli.main",
        "serve",
        "--model",
        str(served["model"]),
        "--index",
        str(served["index"]),
        "--port",
        str(port),
        "--device",
        "cpu",
        "--sections",
        str(served["sections"]),
        "--neighbours",
        str(served["emb"]),
        "--neighbours-k",
        "3",
    ]
    with open(log, "wb") as out:
        server = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"echoclip serve exited with {server.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{base}/api/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"echoclip serve did not answer within {STARTUP_S} s:\n{log.read_text()}")
            time.sleep(0.25)
        yield base, log
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_serve_prints_its_address_and_listens_on_loopback(live_server):
    base, log = live_server
    output = log.read_text()
    assert f"serve: open {base}/ (API at /docs)" in output
    assert "; drafts from " in output and "; neighbour labels of 3 of " in output
    assert "warning" not in output
    with urllib.request.urlopen(f"{base}/api/health") as r:
        assert b'"status":"ok"' in r.read()


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    pytest.importorskip("playwright", reason="playwright (the dev extra) is not installed")
    return path


def test_page_in_a_real_browser(live_server, served, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    chromium = _chromium()
    base, log = live_server
    requested, problems = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda r: requested.append(r.url))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(base + "/")
            expect(page.locator("#served")).to_contain_text("8 videos")

            # a video: its findings and the five reports most like it
            page.set_input_files("#file", str(served["avi"]))
            rows = page.locator("#reports tbody tr")
            rows.nth(4).wait_for(timeout=60_000)
            assert rows.count() >= 5
            assert re.fullmatch(r"\d{1,3}%", page.inner_text("#ef"))
            assert re.fullmatch(r"± \d+\.\d%", page.inner_text("#ef-sd"))
            assert page.locator("#devices .bar").count() == 5
            # neighbour labels beside the prompts' bars, and the draft report with its sources
            assert re.fullmatch(r"nb \d{1,3}%", page.locator("#devices .value.muted").first.inner_text())
            expect(page.locator("#ef-nb")).to_contain_text("3 nearest reports")
            drafted = page.locator("#draft-table tbody tr")
            expect(page.locator("#draft")).to_be_visible()
            assert drafted.count() >= 4 and drafted.first.locator("td").first.inner_text() == "LEFT VENTRICLE"
            assert re.fullmatch(r"\d\.\d{3}|-\d\.\d{3}", drafted.first.locator("td").nth(3).inner_text())
            assert page.eval_on_selector("#preview", "img => img.complete && img.naturalWidth > 0")
            expect(page.locator("#ood-warning")).to_be_hidden()  # a video like the training videos

            # a video unlike them: its answers come with a plain warning, which the next video clears
            page.set_input_files("#file", str(served["unlike"]))
            warning = page.locator("#ood-warning")
            expect(warning).to_be_visible(timeout=60_000)
            expect(warning).to_have_text(OOD_WARNING)
            expect(page.locator("#video-info")).to_contain_text("unlike.avi")
            page.screenshot(path=str(tmp_path / "unlike.png"), full_page=True)
            page.set_input_files("#file", str(served["avi"]))
            expect(page.locator("#video-info")).to_contain_text(served["avi"].name, timeout=60_000)
            expect(warning).to_be_hidden()

            # a text: the videos that match it, with their stills
            page.fill("#text", "SEVERELY REDUCED LV SYSTOLIC FUNCTION.")
            page.click("#text-form button")
            page.locator("#videos .card").nth(4).wait_for(timeout=30_000)
            for img in page.locator("#videos img").all():
                expect(img).to_have_js_property("complete", True)
                assert img.evaluate("img => img.naturalWidth") > 0
            page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)

            # three files of one study: one answer for the study, naming its videos
            import pandas as pd

            manifest = pd.read_parquet(served["sim"] / "manifest.parquet")
            study = [str(served["sim"] / p) for p in manifest["video_path"][:3]]
            page.set_input_files("#file", study)
            expect(page.locator("#video-info")).to_contain_text("one study of 3 videos", timeout=60_000)
            rows.nth(4).wait_for(timeout=60_000)
            # the study's draft report: five sections or more, each with the study it came from
            sources = [row.locator("td").nth(2).inner_text() for row in drafted.all()]
            assert sum(source not in ("", "–") for source in sources) >= 5

            # a DICOM naming a patient: the page shows its findings, and nothing of the patient
            dicom = write_patient_dicom(tmp_path / "study.dcm", served["avi"])
            page.set_input_files("#file", str(dicom))
            expect(page.locator("#video-info")).to_contain_text("study.dcm: 32 frames", timeout=60_000)
            html = page.content()
        finally:
            browser.close()
    assert (tmp_path / "serve.png").stat().st_size > 10_000
    assert not problems, problems
    assert all(u.startswith(base) or u.startswith("data:") for u in requested), requested
    output = log.read_text()
    assert "POST /api/search/video" in output  # the server's log was captured
    for secret in (PATIENT_NAME, PATIENT_ID, "Zyxwvutson", "Quintrella"):
        assert secret not in html and secret not in output
