"""Fixtures of the browser test: a running Airflow, and headless Chromium driven by Playwright.

Tests marked `e2e` start a whole Airflow and a browser, and need the system
package chromium. So they run only when the marker expression selects them
(`pytest -m e2e`, which `make e2e` runs), and a plain `make test` skips them.
"""

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from airflow_stack import AirflowStack  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / ".e2e-artifacts"


def pytest_collection_modifyitems(config, items):
    if "e2e" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="browser test: run it with `make e2e` (pytest -m e2e)")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def artifacts() -> Path:
    """Return the folder for screenshots and Airflow logs, emptied first."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def airflow(s3_endpoint, artifacts):
    """Start Airflow with the sweep DAG in local mode; its logs are kept in the artifacts."""
    from s3_endpoint import free_port

    bucket = s3_endpoint.make_bucket()
    stack = AirflowStack(s3_endpoint, bucket, free_port(), home=artifacts / "airflow-home",
                         output_prefix="from-config")
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def page(airflow, artifacts):
    """Return a Playwright page in headless Chromium that may paste into the Airflow UI."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing; `make e2e` installs it with apt-get, or run "
                    "`apt-get install -y chromium`", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             headless=True)
        # Tall enough for a whole section of the trigger form in one screenshot.
        context = browser.new_context(viewport={"width": 1400, "height": 1900})
        # The form's JSON fields are code editors that reformat on every keystroke that
        # leaves valid JSON; pasting enters a value in one step.
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=airflow.url)
        context.set_default_timeout(30_000)
        page = context.new_page()
        yield page
        context.close()
        browser.close()
