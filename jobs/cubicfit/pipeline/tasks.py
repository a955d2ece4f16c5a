"""The bodies of the DAG's Python tasks: plan, run a batch in the worker, report.

Each turns cubicfit's errors into Airflow's. An error that a retry cannot
fix (invalid parameters, a missing device) raises AirflowFailException, so
the task fails at once. Any other error raises AirflowException, which the
task's retries cover.
"""

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from airflow.sdk import conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from cubicfit.errors import ConfigError, CubicfitError
from cubicfit.pipeline.command import CommandFailed, run_cubicfit
from cubicfit.pipeline.environment import child_environment
from cubicfit.pipeline.planning import build_plan
from cubicfit.pipeline.request import read_request

log = logging.getLogger(__name__)


@contextlib.contextmanager
def airflow_errors(action: str) -> Iterator[None]:
    """Re-raise cubicfit errors as AirflowFailException (not retried) or AirflowException."""
    try:
        yield
    except ConfigError as error:
        raise AirflowFailException(f"{action}: {error}") from None
    except CommandFailed as error:
        if not error.retryable:
            raise AirflowFailException(str(error)) from None
        raise AirflowException(str(error)) from None
    except CubicfitError as error:
        raise AirflowException(f"{action}: {error}") from None


def plan(params: Mapping[str, Any]) -> dict:
    """Check the params, expand the grid, drop finished runs and split the rest into batches."""
    with airflow_errors("invalid parameters"):
        request = read_request(params)
    # Read when the task runs, so that a changed limit needs no new DAG version.
    max_map_length = conf.getint("core", "max_map_length")

    def finished_run_ids(spec) -> set[str]:
        env = child_environment(request.aws_conn_id)
        listing = run_cubicfit(["plan", "--spec-text", request.spec_text, "--format", "json"],
                               env, f"listing the finished runs of sweep {spec.sweep_id}")
        return {point["run_id"] for point in json.loads(listing)["points"] if point["finished"]}

    with airflow_errors("plan"):
        return build_plan(request, max_map_length, finished_run_ids)


def fit_in_worker(batch: Mapping[str, Any]) -> dict:
    """Run one batch with `cubicfit sweep` in a child process; finished runs are skipped."""
    action = f"batch {batch['index']} of sweep {batch['sweep_id']}"
    with airflow_errors(action):
        env = child_environment(batch["aws_conn_id"])
        run_cubicfit(["sweep", "--spec-text", batch["spec_text"],
                      "--run-ids", ",".join(batch["run_ids"]), "--no-report"], env, action)
    return {"batch": batch["index"], "device_kind": batch["device_kind"],
            "runs": len(batch["run_ids"])}


def report(plan: Mapping[str, Any]) -> dict:
    """Write the sweep report to storage; return its summary with the best run."""
    action = f"the report of sweep {plan['sweep_id']}"
    with airflow_errors(action):
        env = child_environment(plan["aws_conn_id"])
        output = run_cubicfit(["report", "--spec-text", plan["spec_text"]], env, action)
    lines = [line for line in output.splitlines() if line.strip()]
    try:
        summary = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise AirflowException(f"{action}: cubicfit report printed no summary; its output was "
                               f"{output[-500:]!r}") from None

    if summary["best_run_id"] is None:
        log.warning("sweep %s has no succeeded run: %d of %d diverged; lower the learning rates "
                    "below the stability bound", summary["sweep_id"], summary["diverged"],
                    summary["runs"])
    else:
        log.info("sweep %s: best run %s, final loss %.10g, %.4g above the optimum; report %s",
                 summary["sweep_id"], summary["best_run_id"], summary["best_final_loss"],
                 summary["best_optimality_gap"], summary["report"])
    if summary["missing"]:
        raise AirflowFailException(
            f"{action}: {summary['missing']} of {summary['runs']} runs have no result although "
            "every fit task succeeded; the report lists them under 'Runs without a result'. "
            "Check that the image runs the same cubicfit version as the worker"
        )
    return summary
