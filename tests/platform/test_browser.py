"""The Airflow UI in a real browser: sign in, trigger `validate_logs` from its form with Params, watch it succeed.

A platform of its own (`coldstart platform up`, local profile) on free ports with one tiny simulated day, driven by
headless Debian Chromium (`/usr/bin/chromium`) through Playwright's bundled driver (no browser is downloaded).
Screenshots are kept in ``COLDSTART_TEST_ARTIFACTS`` (default ``tests/artifacts/``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

from pipelines.platform.client import CHAIN, AirflowClient
from pipelines.platform.launcher import ADMIN_USER, admin_password, airflow_url, platform_dir
from pipelines.settings import Settings

from .conftest import running_platform

pytestmark = pytest.mark.slow

# Read at import: the autouse fixture of tests/conftest.py clears every COLDSTART_* variable before each test.
ARTIFACTS = Path(os.environ.get("COLDSTART_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "artifacts")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
DAG = "validate_logs"
DAY = dt.date(2026, 1, 1)
THRESHOLD = 0.2  # not the Param's default (0.05): it must come from the form
UI_TIMEOUT_MS = 60_000  # two cores, a scheduler and a dag-processor busy beside the browser
RUN_TIMEOUT_S = 240


@dataclass
class UiPlatform:
    settings: Settings
    client: AirflowClient
    url: str


@pytest.fixture(scope="module")
def ui_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiPlatform]:
    """One simulated day, `platform up` on free ports (the DAGs after `validate_logs` paused); always `down`."""
    with running_platform(tmp_path_factory.mktemp("browser") / "home", days=[DAY], users=300) as platform:
        # Only validate_logs runs: its Asset event must not start materialization and training downstream.
        for dag_id in CHAIN[1:]:
            platform.client.call("PATCH", f"/dags/{dag_id}", {"is_paused": True})
        yield UiPlatform(platform.settings, platform.client, airflow_url(platform.settings))


@pytest.fixture
def browser_page(tmp_path: Path):
    """A page of headless Chromium with a fresh profile (fails, never skips, without the browser)."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"{CHROMIUM} not found: install Debian's Chromium (`apt-get install chromium`, or `make`)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail("Playwright for Python is not installed in this environment (`pip install playwright`)")
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright, tempfile.TemporaryDirectory(dir=tmp_path) as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1400, "height": 1100}, timeout=UI_TIMEOUT_MS,
        )  # fmt: skip
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            yield page
        finally:
            context.close()


def _shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


def test_trigger_form_params_reach_a_successful_run(ui_platform: UiPlatform, browser_page) -> None:
    (ARTIFACTS / "browser_failure.png").unlink(missing_ok=True)  # a shot of an earlier failure would mislead
    try:
        _trigger_from_the_form_and_watch(ui_platform, browser_page)
    except BaseException:
        _shot(browser_page, "browser_failure.png")
        raise


def _trigger_from_the_form_and_watch(platform: UiPlatform, page) -> None:
    from playwright.sync_api import expect

    client, url = platform.client, platform.url

    # Sign in: the React UI sends an anonymous visitor to the simple auth manager's form, then back.
    page.goto(f"{url}/dags/{DAG}")
    expect(page).to_have_url(re.compile(r"/auth/login\b"))
    page.get_by_label("Username").fill(ADMIN_USER)
    page.get_by_label("Password").fill(admin_password(platform.settings))
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(rf"^{re.escape(url)}/dags/{DAG}/?(\?.*)?$"))
    expect(page.get_by_role("heading", name=DAG, exact=True)).to_be_visible()

    # The trigger form: a modal with a field per Param (labels and inputs are not all tied by `for`/`id`).
    page.get_by_role("button", name="Trigger Dag").click()
    form = page.get_by_role("dialog")
    expect(form.get_by_text(f"Trigger Dag - {DAG}")).to_be_visible()
    date_field = form.locator("input[name='element_date']")
    threshold_field = form.get_by_role("spinbutton", name="threshold", exact=True)
    expect(threshold_field).to_have_value("0.05")
    date_field.fill(DAY.isoformat())
    threshold_field.fill(str(THRESHOLD))
    threshold_field.press("Tab")
    expect(date_field).to_have_value(DAY.isoformat())
    expect(threshold_field).to_have_value(str(THRESHOLD))
    _shot(page, "browser_trigger_form.png")

    # The form writes the Params into the run's conf (the JSON editor under Advanced Options).
    form.get_by_role("button", name="Advanced Options").click()
    expect(form).to_contain_text(re.compile(rf'"date":\s*"{DAY.isoformat()}"'))
    expect(form).to_contain_text(re.compile(rf'"threshold":\s*{re.escape(str(THRESHOLD))}\b'))
    _shot(page, "browser_trigger_conf.png")

    form.get_by_role("button", name="Trigger", exact=True).click()
    expect(page).to_have_url(re.compile(rf"/dags/{DAG}/runs/[^/?#]+$"))
    run_id = unquote(page.url.rsplit("/runs/", 1)[1])
    run = client.run(DAG, run_id)
    assert run["run_type"] == "manual", run
    assert run["conf"]["date"] == DAY.isoformat(), run["conf"]
    assert run["conf"]["threshold"] == THRESHOLD, run["conf"]

    # The Runs page, reloaded until the run's state badge shows success (or a failure ends the wait).
    page.goto(f"{url}/dags/{DAG}/runs")
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=run_id, exact=True))
    badge = row.get_by_test_id("state-badge")
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        expect(badge).to_be_visible()
        state = badge.inner_text().strip().lower()
        if state == "success":
            break
        if state in ("failed", "upstream_failed") or time.monotonic() > deadline:
            pytest.fail(f"the UI shows the run {state!r}\n{client.failure(client.run(DAG, run_id))}\n"
                        f"platform logs: {platform_dir(platform.settings) / 'logs'}")  # fmt: skip
        page.wait_for_timeout(4000)
        page.reload()

    # The run's page: the run and each of its tasks marked Success.
    page.goto(f"{url}/dags/{DAG}/runs/{run_id}")
    expect(page.get_by_role("heading", name=run_id)).to_be_visible()
    tasks = client.task_instances(DAG, run_id)
    assert tasks and {ti["state"] for ti in tasks} == {"success"}, tasks
    for ti in tasks:
        task_row = page.get_by_role("row").filter(has=page.get_by_role("link", name=ti["task_id"], exact=True))
        expect(task_row.get_by_test_id("state-badge")).to_have_text("Success")
    _shot(page, "browser_run_success.png")

    # What the run did used the form's values: its summary of the day records the threshold set in the form.
    assert client.run(DAG, run_id)["state"] == "success"
    summary = json.loads((platform.settings.reports_dir / "validation" / "sim" / f"{DAY}.json").read_text())
    assert (summary["date"], summary["threshold"], summary["passed"]) == (DAY.isoformat(), THRESHOLD, True), summary
