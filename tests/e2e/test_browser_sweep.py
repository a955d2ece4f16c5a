"""Trigger the sweep DAG through the Airflow UI in a real browser, then check the results in S3.

Screenshots of the filled trigger form and of the finished run go to
.e2e-artifacts/, next to the Airflow home with the component logs.
"""

import contextlib
import csv
import io
import json
import re
import time
import urllib.parse

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.airflow, pytest.mark.slow]

DAG_ID = "cubic_fit_sweep"
SWEEP_NAME = "browser-e2e"
# 5e-6 lies above the stability bound of the default data (about 3.56e-6), so some of
# those runs diverge and the report must count them. 3 rates x 2 seeds x 2 backends = 12 runs.
LEARNING_RATES = [1e-6, 3e-6, 5e-6]
ITERATIONS = [400]
SEEDS = [0, 1]
POINTS_PER_TASK = 4
RUN_TIMEOUT = 300  # seconds for the DAG run; it takes about 30 on a laptop


def log_in(page, airflow) -> None:
    page.goto(f"{airflow.url}/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(airflow.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)


def paste_json(page, dialog, param: str, value) -> None:
    """Replace the content of the form's JSON editor for `param` by pasting `value`."""
    text = json.dumps(value)
    page.evaluate("text => navigator.clipboard.writeText(text)", text)
    dialog.locator(f"#element_{param} .monaco-editor").click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Control+V")
    lines = dialog.locator(f"#element_{param} .view-lines")
    deadline = time.monotonic() + 10
    while True:  # the editor shows the pasted text once the form has taken it
        editor_text = lines.inner_text().replace("\xa0", " ")
        with contextlib.suppress(json.JSONDecodeError):
            if json.loads(editor_text) == value:
                return
        assert time.monotonic() < deadline, f"{param}: the editor shows {editor_text!r}"
        page.wait_for_timeout(100)


def open_section(dialog, title_start: str) -> None:
    dialog.get_by_role("button", name=re.compile("^" + re.escape(title_start))).click()


def fill_trigger_form(page, airflow, output: str, artifacts) -> None:
    page.goto(f"{airflow.url}/dags/{DAG_ID}")
    page.get_by_role("button", name=re.compile("^Trigger")).first.click()
    dialog = page.get_by_role("dialog")

    open_section(dialog, "Settings shared")
    dialog.locator("#element_sweep_name").fill(SWEEP_NAME)

    open_section(dialog, "Output and execution")
    dialog.locator("#element_output").fill(output)
    assert "local" in dialog.locator("#element_execution_mode").inner_text()
    points = dialog.get_by_role("spinbutton")
    points.fill(str(POINTS_PER_TASK))
    page.screenshot(path=artifacts / "01-trigger-form-output.png", full_page=True)

    open_section(dialog, "Grid")
    paste_json(page, dialog, "learning_rates", LEARNING_RATES)
    paste_json(page, dialog, "iterations", ITERATIONS)
    paste_json(page, dialog, "seeds", SEEDS)
    backends = dialog.locator("#element_backends input[role=combobox]")
    backends.click()
    page.keyboard.type("torch")
    page.get_by_role("option", name="torch", exact=True).click()
    dialog.get_by_role("heading").first.click()  # closes the option list
    assert dialog.locator("input[name=element_backends]").evaluate_all(
        "inputs => inputs.map(input => input.value)") == ["numpy", "torch"]
    page.screenshot(path=artifacts / "02-trigger-form-grid.png", full_page=True)


def test_trigger_from_form_writes_results(page, airflow, s3_endpoint, artifacts):
    log_in(page, airflow)
    output = f"s3://{airflow.bucket}/e2e"
    fill_trigger_form(page, airflow, output, artifacts)

    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name=re.compile("^Trigger$")).click()
    page.wait_for_url(re.compile(rf".*/dags/{DAG_ID}/runs/.+"))
    run_id = urllib.parse.unquote(page.url.rstrip("/").split("/runs/")[1].split("/")[0])

    run = airflow.wait_for_run(run_id, timeout=RUN_TIMEOUT)
    page.reload()
    page.get_by_text("Success").first.wait_for()
    page.screenshot(path=artifacts / "03-run-finished.png", full_page=True)
    assert run["state"] == "success", f"run {run_id} failed; logs in {airflow.home}"

    # The form's values reached the run.
    conf = run["conf"]
    assert conf["learning_rates"] == LEARNING_RATES
    assert conf["iterations"] == ITERATIONS
    assert conf["seeds"] == SEEDS
    assert conf["backends"] == ["numpy", "torch"]
    assert conf["output"] == output
    assert conf["execution_mode"] == "local"
    assert conf["points_per_task"] == POINTS_PER_TASK

    quoted = urllib.parse.quote(run_id, safe="")
    instances = airflow.api(
        "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quoted}/taskInstances?limit=100")
    states = {}
    for instance in instances["task_instances"]:
        states.setdefault(instance["task_id"], []).append(instance["state"])
    assert states["fit.run_in_worker"] == ["success"] * 3  # 12 runs, at most 4 per task
    assert states["fit.run_in_cpu_pod"] == states["fit.run_in_gpu_pod"] == ["skipped"]
    report = airflow.api(
        "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quoted}/taskInstances/report/xcomEntries/"
        "return_value")["value"]

    page.goto(f"{airflow.url}/dags/{DAG_ID}/runs/{quoted}/tasks/report")
    page.get_by_role("link", name="Storage").click()
    page.get_by_text("XCom", exact=True).click()
    for value in (report["best_run_id"], report["sweep_id"], report["report"]):
        page.get_by_text(value, exact=True).first.wait_for()
    page.wait_for_load_state("networkidle")
    page.screenshot(path=artifacts / "04-report-return-value.png", full_page=True)

    check_bucket(s3_endpoint, airflow.bucket, report)


def check_bucket(endpoint, bucket: str, report: dict) -> None:
    """Check that every run's files and the report are in the bucket and agree."""
    client = endpoint.client()

    def read(key: str) -> bytes:
        return client.get_object(Bucket=bucket, Key=f"e2e/{key}")["Body"].read()

    sweep = json.loads(read(f"sweeps/{SWEEP_NAME}/sweep.json"))
    run_ids = [point["run_id"] for point in sweep["points"]]
    assert len(run_ids) == 12
    keys = set(endpoint.list_keys(bucket, "e2e/"))
    for run_id in run_ids:
        for name in ("config.json", "losses.csv", "fit.png", "result.json"):
            assert f"e2e/runs/{run_id}/{name}" in keys

    results = {run_id: json.loads(read(f"runs/{run_id}/result.json")) for run_id in run_ids}
    diverged = {run_id for run_id, result in results.items() if result["status"] == "diverged"}
    # Which runs at 5e-6 blow up within 400 steps depends on their start values and dtype.
    assert diverged
    assert {results[run_id]["learning_rate"] for run_id in diverged} == {5e-6}
    succeeded = {run_id: r for run_id, r in results.items() if run_id not in diverged}
    best = min(succeeded, key=lambda run_id: succeeded[run_id]["final_loss"])

    assert report["sweep_id"] == SWEEP_NAME
    assert report["runs"] == 12
    assert report["missing"] == 0
    assert report["diverged"] == len(diverged)
    assert report["best_run_id"] == best
    assert report["best_final_loss"] == succeeded[best]["final_loss"]
    assert report["best_optimality_gap"] == succeeded[best]["optimality_gap"]
    assert report["report"] == f"s3://{bucket}/e2e/sweeps/{SWEEP_NAME}/report.md"

    rows = list(csv.DictReader(io.StringIO(read(f"sweeps/{SWEEP_NAME}/summary.csv").decode())))
    assert {row["run_id"]: row["status"] for row in rows} == {
        run_id: result["status"] for run_id, result in results.items()}
    markdown = read(f"sweeps/{SWEEP_NAME}/report.md").decode()
    assert f"| 1 | `{best}` |" in markdown
    assert read(f"sweeps/{SWEEP_NAME}/report.png").startswith(b"\x89PNG")
