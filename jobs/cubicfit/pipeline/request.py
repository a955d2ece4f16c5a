"""Check the DAG's parameters as a whole and turn them into a sweep spec.

The trigger form checks each field on its own (see `form`); this module
checks what spans fields, so it runs in the `plan` task. It needs no Airflow.
"""

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

from cubicfit.errors import ConfigError
from cubicfit.pipeline.settings import EXECUTION_MODES

# Trigger-form field -> sweep grid field, in the order the grid expands:
# backend and device first, so that neighbouring points share a batch.
GRID_PARAMS = {
    "backends": "backend",
    "devices": "device",
    "learning_rates": "learning_rate",
    "iterations": "iterations",
    "seeds": "seed",
}
BASE_EXCLUDED = ("backend", "device", "learning_rate", "iterations", "seed", "output")
REQUIRED = ("output", "execution_mode", "image", "cuda_image", "namespace", "points_per_task")


@dataclasses.dataclass(frozen=True)
class SweepRequest:
    spec_text: str  # the sweep spec as JSON, exactly as `cubicfit sweep --spec-text` reads it
    output: str
    execution_mode: str
    image: str
    cuda_image: str
    namespace: str
    points_per_task: int
    aws_conn_id: str | None  # None: S3 settings from the worker's environment


def read_request(params: Mapping[str, Any]) -> SweepRequest:
    """Validate the params of one DAG run; raise ConfigError naming the param and the fix."""
    missing = [name for name in (*GRID_PARAMS, *REQUIRED) if params.get(name) is None]
    if missing:
        raise ConfigError(f"parameter {missing[0]} is missing; trigger the DAG from its form, "
                          "or pass every parameter the form shows")

    grid: dict[str, list[Any]] = {}
    for param, field in GRID_PARAMS.items():
        values = params[param]
        if not isinstance(values, list):
            raise ConfigError(f"parameter {param} must be a list of values, got {values!r}")
        if not values:
            raise ConfigError(f"the grid is empty because {param} has no values; give at least "
                              f"one value in {param}")
        grid[field] = values
    if "numpy" in grid["backend"] and any(d.startswith("cuda") for d in grid["device"]):
        raise ConfigError("backends contains numpy and devices contains cuda, but numpy runs "
                          "only on the CPU; remove numpy from backends or cuda from devices, or "
                          "run two sweeps")

    base = params.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError(f"parameter base must be a JSON object of fit fields, got {base!r}")
    clash = [key for key in base if key in BASE_EXCLUDED]
    if clash:
        raise ConfigError(f"parameter base sets {clash[0]!r}, which has its own form field; "
                          "remove it from base and use that field")

    mode = params["execution_mode"]
    if mode not in EXECUTION_MODES:
        raise ConfigError(f"parameter execution_mode is {mode!r}; use one of "
                          + ", ".join(EXECUTION_MODES))
    output = str(params["output"]).strip()
    if mode == "kubernetes" and not output.startswith("s3://"):
        raise ConfigError(f"parameter output is {output!r}, but pods cannot write to a folder of "
                          "the Airflow worker; use s3://bucket/prefix, or execution_mode local")
    if not output.startswith("s3://") and not os.path.isabs(output):
        raise ConfigError(f"parameter output is {output!r}, a relative folder, which would depend "
                          "on the working directory of each task; give an absolute folder such as "
                          "/data/cubicfit, or s3://bucket/prefix")

    points_per_task = params["points_per_task"]
    if isinstance(points_per_task, bool) or not isinstance(points_per_task, int) \
            or points_per_task < 1:
        raise ConfigError(f"parameter points_per_task must be a whole number >= 1, got "
                          f"{points_per_task!r}")

    document: dict[str, Any] = {"base": {**base, "output": output}, "grid": grid}
    if params.get("sweep_name"):
        document = {"name": params["sweep_name"], **document}
    return SweepRequest(
        spec_text=json.dumps(document, separators=(",", ":")),
        output=output,
        execution_mode=mode,
        image=params["image"],
        cuda_image=params["cuda_image"],
        namespace=params["namespace"],
        points_per_task=points_per_task,
        aws_conn_id=params.get("aws_conn_id") or None,
    )
