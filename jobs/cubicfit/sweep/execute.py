"""Run a sweep, or one shard of it, and record the expanded grid in sweep.json."""

import dataclasses
import json
import logging

from cubicfit.config import FitConfig
from cubicfit.devices import resolve_device
from cubicfit.errors import ConfigError
from cubicfit.results import to_json_bytes
from cubicfit.runner import Outcome, execute, finished_run_ids
from cubicfit.storage import ResultStore
from cubicfit.sweep.shards import select_shard
from cubicfit.sweep.spec import GridPoint, SweepSpec

log = logging.getLogger(__name__)


def sweep_prefix(sweep_id: str) -> str:
    return f"sweeps/{sweep_id}"


def sweep_document(spec: SweepSpec, points: list[GridPoint]) -> dict:
    """Return sweep.json: the spec and every expanded point with its run id and config."""
    return {
        "sweep_id": spec.sweep_id,
        "spec": spec.to_json_dict(),
        "varied_fields": list(spec.grid),
        "point_count": len(points),
        "points": [
            {"index": point.index, "run_id": point.config.run_id,
             "values": _jsonable(point.values), "config": point.config.to_json_dict()}
            for point in points
        ],
    }


def _jsonable(values: dict) -> dict:
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in values.items()}


def select_points(
    spec: SweepSpec,
    shard: tuple[int, int] = (0, 1),
    run_ids: list[str] | None = None,
) -> tuple[list[GridPoint], list[FitConfig]]:
    """Expand the grid; return all points and the device-resolved configs this process runs.

    `run_ids` narrows the shard to those points; an id outside it is a ConfigError, and a
    missing CUDA device a DeviceError. Nothing is written, so callers check input first.
    """
    points = spec.expand()
    index, count = shard
    mine = select_shard(points, index, count)
    if run_ids is not None:
        known = {point.config.run_id for point in mine}
        unknown = [run_id for run_id in run_ids if run_id not in known]
        if unknown:
            raise ConfigError(
                f"--run-ids: {unknown[0]!r} is not a point of sweep {spec.sweep_id}"
                + (f" in shard {index} of {count}" if count > 1 else "")
                + "; run 'cubicfit plan' to list the run ids"
            )
        requested = set(run_ids)
        mine = [point for point in mine if point.config.run_id in requested]
    configs = []
    for point in mine:
        device = resolve_device(point.config.device, point.config.backend)
        configs.append(dataclasses.replace(point.config, device=device))
    return points, configs


def run_sweep(
    spec: SweepSpec,
    store: ResultStore,
    *,
    shard: tuple[int, int] = (0, 1),
    force: bool = False,
    stop=None,
    run_ids: list[str] | None = None,
    selection: tuple[list[GridPoint], list[FitConfig]] | None = None,
) -> tuple[list[GridPoint], list[Outcome]]:
    """Run this shard's unfinished points; return all points and this shard's outcomes.

    `selection` is the result of select_points when the caller made it already.
    """
    points, configs = selection or select_points(spec, shard, run_ids)
    index, count = shard

    existing = store.read_bytes(f"{sweep_prefix(spec.sweep_id)}/sweep.json")
    if existing is not None and not force:
        try:
            stored_spec = json.loads(existing).get("spec")
        except (ValueError, AttributeError):
            stored_spec = None
        if stored_spec != json.loads(to_json_bytes(spec.to_json_dict())):
            raise ConfigError(
                f"sweep {spec.sweep_id!r} already exists at "
                f"{store.describe(sweep_prefix(spec.sweep_id))} with a different spec; give this "
                "spec another name, or pass --force to replace that sweep's files"
            )
    # Every shard writes the same bytes, so whichever lands last is still correct.
    store.write_bytes(f"{sweep_prefix(spec.sweep_id)}/sweep.json",
                      to_json_bytes(sweep_document(spec, points)), "application/json")

    finished = set() if force else finished_run_ids(store)
    pending = [config for config in configs if config.run_id not in finished]
    label = f"shard {index} of {count}: " if count > 1 else ""
    if not pending:
        log.info("%sall %d runs already finished; nothing to run (use --force to rerun)",
                 label, len(configs))
    else:
        log.info("%s%d of %d runs already finished; running %d", label,
                 len(configs) - len(pending), len(configs), len(pending))

    outcomes = execute(configs, store, force=force, stop=stop, finished=finished)
    counts = {}
    for outcome in outcomes:
        if not outcome.skipped:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
    if counts:
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        log.info("%sfinished runs: %s", label, summary)
    return points, outcomes
