"""The `cubicfit` command line: run, plan, sweep and report.

Heavy modules (numpy, torch, matplotlib, boto3) are imported only inside the
commands, after the check for files that shadow them.
"""

import argparse
import dataclasses
import logging
import os
import sys

from cubicfit import __version__
from cubicfit.exitcodes import ExitCode

log = logging.getLogger("cubicfit")

# Help text per fit field: what it sets, its default and unit.
FIELD_HELP = {
    "backend": "numpy, torch (hand-written gradients) or torch-autograd (default: numpy)",
    "device": "cpu, cuda, cuda:N or auto (CUDA when available) (default: cpu)",
    "dtype": "float32 or float64 (default: float64 for numpy, float32 for torch)",
    "learning_rate": "gradient-descent step size, > 0 (default: 1e-6)",
    "iterations": "number of gradient-descent steps (default: 2000)",
    "seed": "seed of the N(0, 1) start values (default: 0)",
    "init": "explicit start values 'a,b,c,d'; overrides --seed (default: none)",
    "n_points": "number of sample points, >= 4 (default: 2000)",
    "x_min": "left end of the sample interval (default: -pi)",
    "x_max": "right end of the sample interval (default: pi)",
    "target": "function to fit: sin, cos, tanh or exp (default: sin)",
    "log_every": "steps between progress lines and host reads of the losses (default: 100)",
    "checkpoint_every": "steps between checkpoints of a long fit; 0 saves only on SIGTERM/SIGINT "
    "(default: 1000000)",
    "output": "local folder or s3://bucket/prefix for results (default: ./results)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cubicfit",
        description="Fit y = target(x) with a + b x + c x^2 + d x^3 by gradient descent.",
    )
    parser.add_argument("--version", action="version", version=f"cubicfit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-format", choices=("text", "json"),
                        default=os.environ.get("CUBICFIT_LOG_FORMAT", "text"),
                        help="log line format (default: text, or $CUBICFIT_LOG_FORMAT)")
    common.add_argument("--quiet", action="store_true",
                        help="log only warnings and errors (default: off)")

    run = commands.add_parser("run", parents=[common], help="run one fit",
                              description="Run one fit. Precedence: flags, then CUBICFIT_<FIELD> "
                              "environment variables, then the YAML file, then defaults.")
    run.add_argument("config", nargs="?", help="YAML file with fit fields (optional)")
    add_field_flags(run)
    add_storage_flags(run)
    run.add_argument("--dry-run", action="store_true",
                     help="print the resolved configuration and run id, fit and write nothing")

    from cubicfit.sweep.commands import add_sweep_commands

    add_sweep_commands(commands, common)
    return parser


def add_field_flags(parser: argparse.ArgumentParser) -> None:
    from cubicfit.config import FIELD_NAMES

    group = parser.add_argument_group("fit fields")
    for name in FIELD_NAMES:
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"field_{name}", default=None,
                           metavar="VALUE", help=FIELD_HELP[name])


def add_storage_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="rerun and overwrite runs that already have a result (default: off)")
    parser.add_argument("--create-bucket", action="store_true",
                        help="create a missing S3 bucket instead of failing (default: off)")


def field_flags(args: argparse.Namespace) -> dict:
    return {key[len("field_"):]: value for key, value in vars(args).items()
            if key.startswith("field_") and value is not None}


def main(argv: list[str] | None = None) -> int:
    from cubicfit.shadowing import find_shadowing_files, shadowing_message

    shadows = find_shadowing_files()
    if shadows:
        print(f"cubicfit: error: {shadowing_message(shadows)}", file=sys.stderr)
        return ExitCode.INVALID_CONFIG

    log_format = os.environ.get("CUBICFIT_LOG_FORMAT", "text")
    if log_format not in ("text", "json"):
        print(f"cubicfit: error: CUBICFIT_LOG_FORMAT {log_format!r} is invalid; set it to text "
              "or json, or unset it", file=sys.stderr)
        return ExitCode.INVALID_CONFIG
    parser = build_parser()
    args = parser.parse_args(argv)
    from cubicfit.logs import setup_logging

    setup_logging(args.log_format, args.quiet)
    return run_command(args.command, args)


def run_command(command: str, args: argparse.Namespace) -> int:
    from cubicfit.errors import CubicfitError, Interrupted
    from cubicfit.interrupts import ForcedStop

    try:
        if command == "run":
            return command_run(args)
        from cubicfit.sweep import commands

        return commands.dispatch(command, args)
    except Interrupted as error:
        log.warning("%s; finished results are kept, unfinished runs left no result.json", error)
        return error.exit_code
    except CubicfitError as error:
        log.error("%s", error)
        return error.exit_code
    except ForcedStop as error:
        log.warning("%s; finished results are kept, unfinished runs left no result.json", error)
        return ExitCode(128 + error.signal_number)
    except BrokenPipeError:
        # The reader of stdout went away (for example `cubicfit plan ... | head`).
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
        return ExitCode.OK
    except KeyboardInterrupt:
        log.warning("interrupted; finished results are kept")
        return ExitCode.INTERRUPTED
    except Exception:
        log.exception("internal error; please report it with this traceback")
        return ExitCode.INTERNAL_ERROR


def command_run(args: argparse.Namespace) -> int:
    from cubicfit.config import load_fit_config
    from cubicfit.devices import resolve_device

    config = load_fit_config(args.config, os.environ, field_flags(args))
    config = dataclasses.replace(config, device=resolve_device(config.device, config.backend))
    if args.dry_run:
        import json

        print(json.dumps({**config.to_json_dict(), "output": config.output}, indent=2))
        return ExitCode.OK

    from cubicfit.interrupts import StopFlag, install_handlers
    from cubicfit.results import result_line
    from cubicfit.runner import execute
    from cubicfit.storage import open_store

    store = open_store(config.output)
    store.check(create=args.create_bucket)
    stop = StopFlag()
    restore_handlers = install_handlers(stop)
    log.info("run %s: %s on %s (%s), lr %g, %d steps", config.run_id, config.backend,
             config.device, config.dtype, config.learning_rate, config.iterations)
    try:
        (outcome,) = execute([config], store, force=args.force, stop=stop)
    finally:
        restore_handlers()
    print(result_line(outcome.result["coefficients"].values()), flush=True)
    if outcome.status == "diverged":
        log.error("run %s diverged at step %s (learning rate %g, stability bound %.4g); "
                  "lower --learning-rate below the bound", config.run_id,
                  outcome.result["diverged_at_step"], config.learning_rate,
                  outcome.result["stability_bound"])
        return ExitCode.DIVERGED
    return ExitCode.OK
