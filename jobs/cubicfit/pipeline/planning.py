"""The plan of one DAG run: the checked spec, the unfinished runs and their batches.

The plan is the `plan` task's return value, so it travels as XCom and contains
only JSON values: no credentials, only the names of where they are kept.
"""

import logging
from collections.abc import Callable

from cubicfit.errors import ConfigError
from cubicfit.pipeline.batches import split_into_batches
from cubicfit.pipeline.request import SweepRequest
from cubicfit.sweep.spec import SweepSpec, parse_sweep_spec
from cubicfit.yamlio import load_yaml

log = logging.getLogger(__name__)

SPEC_SOURCE = "the DAG parameters"


def parse_request_spec(request: SweepRequest) -> SweepSpec:
    """Parse the spec text the same way `cubicfit sweep --spec-text` will, so run ids agree."""
    return parse_sweep_spec(load_yaml(request.spec_text, SPEC_SOURCE), SPEC_SOURCE)


def build_plan(request: SweepRequest, max_map_length: int,
               finished_run_ids: Callable[[SweepSpec], set[str]]) -> dict:
    """Expand the grid, drop the runs that `finished_run_ids` reports, and batch the rest."""
    spec = parse_request_spec(request)
    points = spec.expand()
    if not points:
        raise ConfigError("the grid has no points; give at least one value in every grid field")
    finished = finished_run_ids(spec)
    pending = [point for point in points if point.config.run_id not in finished]
    batches = split_into_batches(pending, request.points_per_task, max_map_length)

    log.info("sweep %s: %d grid points, %d already finished, %d to run in %d batch(es) of up "
             "to %d points (max_map_length %d); output %s", spec.sweep_id, len(points),
             len(points) - len(pending), len(pending), len(batches),
             max((len(batch.run_ids) for batch in batches), default=0), max_map_length,
             request.output)
    return {
        "sweep_id": spec.sweep_id,
        "spec_text": request.spec_text,
        "output": request.output,
        "execution_mode": request.execution_mode,
        "aws_conn_id": request.aws_conn_id,
        "image": request.image,
        "cuda_image": request.cuda_image,
        "namespace": request.namespace,
        "point_count": len(points),
        "finished_count": len(points) - len(pending),
        "batches": [batch.to_json_dict() for batch in batches],
    }


def worker_batches(plan: dict) -> list[dict]:
    """Return the batches that run in the Airflow worker: all of them in local mode, else none."""
    if plan["execution_mode"] != "local":
        return []
    return [{"sweep_id": plan["sweep_id"], "spec_text": plan["spec_text"],
             "aws_conn_id": plan["aws_conn_id"], **batch} for batch in plan["batches"]]


def pod_batches(plan: dict, device_kind: str) -> list[dict]:
    """Return the kubernetes-mode batches of one device kind."""
    if plan["execution_mode"] != "kubernetes":
        return []
    return [batch for batch in plan["batches"] if batch["device_kind"] == device_kind]
