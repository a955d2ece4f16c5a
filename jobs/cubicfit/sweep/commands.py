"""The plan, sweep and report commands of the command line."""

import argparse
import json
import logging
import os
import sys

from cubicfit.exitcodes import ExitCode

log = logging.getLogger(__name__)


def add_sweep_commands(commands, common: argparse.ArgumentParser) -> None:
    from cubicfit.cli import add_storage_flags

    spec_help = "sweep spec YAML: name (optional), base (fit fields) and grid (field: [values])"

    plan = commands.add_parser(
        "plan", parents=[common], help="print the expanded grid of a sweep; writes nothing",
        description="Expand and validate a sweep spec and print one row per grid point: run id, "
        "varied values, batch, shard and whether a result already exists. Writes nothing.")
    _add_spec_arguments(plan, spec_help)
    _add_location_flags(plan)
    _add_shard_flags(plan)
    plan.add_argument("--format", choices=("table", "json"), default="table",
                      help="output format (default: table)")

    sweep = commands.add_parser(
        "sweep", parents=[common], help="run every unfinished grid point (or one shard of them)",
        description="Run the unfinished grid points of a sweep as vectorized batches, then write "
        "the sweep report when every point has a result.")
    _add_spec_arguments(sweep, spec_help)
    _add_location_flags(sweep)
    _add_shard_flags(sweep)
    sweep.add_argument("--run-ids", default=None, metavar="ID,ID,...",
                       help="run only these grid points, by run id, e.g. one batch chosen by the "
                       "Airflow DAG (default: every point of this shard)")
    add_storage_flags(sweep)
    sweep.add_argument("--no-report", action="store_true",
                       help="skip the sweep report at the end (default: write it when complete)")

    report = commands.add_parser(
        "report", parents=[common], help="rebuild the sweep report from stored results",
        description="Read every run's result of a sweep from storage and write summary.csv, "
        "report.md and report.png under sweeps/<sweep_id>/.")
    _add_spec_arguments(report, spec_help)
    _add_location_flags(report)


def _add_spec_arguments(parser, spec_help) -> None:
    parser.add_argument("spec", nargs="?", help=spec_help)
    parser.add_argument("--spec-text", default=None, metavar="YAML",
                        help="the spec itself as YAML or JSON text, instead of a file "
                        "(default: none)")


def _add_location_flags(parser) -> None:
    parser.add_argument("--output", default=None, metavar="LOCATION",
                        help="local folder or s3://bucket/prefix; overrides the spec's base "
                        "(default: the spec's output, else ./results)")


def _add_shard_flags(parser) -> None:
    parser.add_argument("--shard-index", default=None, metavar="I",
                        help="this process's shard, 0 to N-1 (default: $CUBICFIT_SHARD_INDEX, "
                        "else $JOB_COMPLETION_INDEX, else the whole grid)")
    parser.add_argument("--shard-count", default=None, metavar="N",
                        help="number of shards (default: $CUBICFIT_SHARD_COUNT, else 1)")


def _load(args):
    from cubicfit.errors import ConfigError
    from cubicfit.sweep.spec import load_sweep_spec, parse_sweep_spec
    from cubicfit.yamlio import load_yaml

    overrides = {"output": args.output} if args.output else {}
    if (args.spec is None) == (args.spec_text is None):
        raise ConfigError("give either a spec file or --spec-text, exactly one of them")
    if args.spec_text is not None:
        return parse_sweep_spec(load_yaml(args.spec_text, "--spec-text"), "--spec-text",
                                os.environ, overrides)
    return load_sweep_spec(args.spec, os.environ, overrides)


def dispatch(command: str, args: argparse.Namespace) -> int:
    return {"plan": command_plan, "sweep": command_sweep, "report": command_report}[command](args)


def command_plan(args) -> int:
    from cubicfit.runner import batch_key, finished_run_ids
    from cubicfit.storage import open_store
    from cubicfit.sweep.shards import resolve_shard

    spec = _load(args)
    shard_index, shard_count = resolve_shard(args.shard_index, args.shard_count, os.environ)
    points = spec.expand()
    store = open_store(spec.output)
    store.check(create=False, read_only=True)
    finished = finished_run_ids(store)

    batches: dict[tuple, int] = {}
    rows = []
    for point in points:
        shard = point.index % shard_count
        key = (shard, batch_key(point.config))
        batch = batches.setdefault(key, len(batches) + 1)
        rows.append({"run_id": point.config.run_id, "values": point.values, "batch": batch,
                     "shard": shard, "finished": point.config.run_id in finished})
    if args.shard_index is not None or "CUBICFIT_SHARD_INDEX" in os.environ or (
            "JOB_COMPLETION_INDEX" in os.environ):
        rows = [row for row in rows if row["shard"] == shard_index]

    if args.format == "json":
        print(json.dumps({"sweep_id": spec.sweep_id, "output": spec.output, "points": [
            {**row, "values": {k: list(v) if isinstance(v, tuple) else v
                               for k, v in row["values"].items()}} for row in rows]}, indent=2))
        return ExitCode.OK
    print(_plan_table(spec, rows, shard_count))
    pending = sum(not row["finished"] for row in rows)
    print(f"\nsweep {spec.sweep_id}: {len(rows)} points, {len(rows) - pending} finished, "
          f"{pending} to run in {len({row['batch'] for row in rows if not row['finished']})} "
          f"batch(es); output {store.describe()}")
    return ExitCode.OK


def _plan_table(spec, rows, shard_count) -> str:
    fields = list(spec.grid)
    header = ["run_id", *fields, "batch"] + (["shard"] if shard_count > 1 else []) + ["finished"]
    table = [header]
    for row in rows:
        values = [_cell(row["values"][field]) for field in fields]
        table.append([row["run_id"], *values, str(row["batch"])]
                     + ([str(row["shard"])] if shard_count > 1 else [])
                     + ["yes" if row["finished"] else "no"])
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
                     .rstrip() for line in table)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return ",".join(f"{item:g}" for item in value)
    return str(value)


def command_sweep(args) -> int:
    from cubicfit.errors import ConfigError
    from cubicfit.interrupts import StopFlag, install_handlers
    from cubicfit.runner import finished_run_ids
    from cubicfit.storage import open_store
    from cubicfit.sweep.execute import run_sweep, select_points
    from cubicfit.sweep.report import build_report
    from cubicfit.sweep.shards import resolve_shard

    spec = _load(args)
    shard = resolve_shard(args.shard_index, args.shard_count, os.environ)
    run_ids = None
    if args.run_ids is not None:
        run_ids = [item.strip() for item in args.run_ids.split(",") if item.strip()]
        if not run_ids:
            raise ConfigError("--run-ids is empty; list run ids separated by commas, or omit it")
    # Every input check runs before the store is touched, so bad input writes nothing.
    selection = select_points(spec, shard, run_ids)
    store = open_store(spec.output)
    store.check(create=args.create_bucket)
    stop = StopFlag()
    restore_handlers = install_handlers(stop)
    try:
        points, _ = run_sweep(spec, store, shard=shard, force=args.force, stop=stop,
                              selection=selection)
    finally:
        restore_handlers()

    if args.no_report:
        return ExitCode.OK
    finished = finished_run_ids(store)
    missing = [point for point in points if point.config.run_id not in finished]
    if missing:
        log.info("%d of %d points of sweep %s have no result yet (other shards); run "
                 "'cubicfit report %s' when all shards have finished", len(missing), len(points),
                 spec.sweep_id, args.spec or "--spec-text ...")
        return ExitCode.OK
    summary = build_report(spec, store, points)
    print(json.dumps(summary), file=sys.stdout, flush=True)
    return ExitCode.OK


def command_report(args) -> int:
    from cubicfit.storage import open_store
    from cubicfit.sweep.report import build_report

    spec = _load(args)
    store = open_store(spec.output)
    store.check(create=False)
    summary = build_report(spec, store)
    print(json.dumps(summary), flush=True)
    return ExitCode.OK
