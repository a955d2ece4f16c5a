"""One benchmark case in its own process, so that its peak memory is its own.

`run.py` starts `python benchmarks/worker.py CASE ARGS_JSON OUT.npz` for each
case and reads the peak resident set size from the exit status (os.wait4).
Every case warms up once untimed (imports, lazy set-up, first allocations),
then times `reps` repetitions with time.perf_counter and saves the times and
the numbers it computed to OUT.npz, which run.py checks against the baseline.

Cases:
- product-fit: cubicfit's engine, one member (the default problem by default).
- baseline-fit: the per-point loop of baseline.py with the same start values.
- product-batch: cubicfit's engine on a batch of (learning rate, seed) points;
  it keeps the numbers of the members listed in `keep`.
- baseline-points: the per-point numpy loop once per listed point, each timed.
- profile: one `cubicfit` command in this process, with the time spent in the
  main stages of the job summed per stage (see STAGES).
"""

import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from baseline import run_loop  # noqa: E402 - baseline.py sits beside this file


def default_problem(dtype: str):
    from cubicfit.problem import build_problem

    return build_problem(2000, -math.pi, math.pi, "sin", dtype)


def product_fit(args: dict) -> dict:
    from cubicfit.backends import fit_batch

    problem = default_problem(args["dtype"])
    initial = np.array([args["init"]])

    def fit():
        return fit_batch(args["backend"], problem, initial, [args["learning_rate"]],
                         [args["steps"]], dtype=args["dtype"], device=args["device"],
                         log_every=args["log_every"])

    result, times = _timed(fit, args["reps"])
    return {"times": times, "losses": result.losses[0], "coefficients": result.coefficients[0]}


def baseline_fit(args: dict) -> dict:
    def fit():
        with np.errstate(all="ignore"):
            return run_loop(args["backend"], args["init"], args["steps"], args["learning_rate"],
                            args["dtype"], args["device"])

    (losses, coefficients), times = _timed(fit, args["reps"])
    return {"times": times, "losses": losses, "coefficients": coefficients}


def product_batch(args: dict) -> dict:
    from cubicfit.backends import fit_batch
    from cubicfit.problem import start_values

    problem = default_problem(args["dtype"])
    initial = np.array([start_values(seed) for seed in args["seeds"]])
    size = len(initial)

    def fit():
        return fit_batch(args["backend"], problem, initial, args["learning_rates"],
                         np.full(size, args["steps"]), dtype=args["dtype"],
                         device=args["device"], log_every=args["log_every"])

    result, times = _timed(fit, args["reps"])
    output = {"times": times, "diverged_at": result.diverged_at}
    for index in args.get("keep", []):
        output[f"losses_{index}"] = result.losses[index]
        output[f"coefficients_{index}"] = result.coefficients[index]
    return output


def baseline_points(args: dict) -> dict:
    """Time the numpy loop once per point; keep what the product's files are checked against."""
    from cubicfit.problem import start_values

    output = {"times": []}
    run_loop("numpy", start_values(0), 10, 1e-6, "float64", "cpu")  # warm-up, not timed
    for index, (learning_rate, seed) in enumerate(args["points"]):
        start = start_values(seed)
        began = time.perf_counter()
        with np.errstate(all="ignore"):
            losses, coefficients = run_loop("numpy", start, args["steps"], learning_rate,
                                            "float64", "cpu")
        output["times"].append(time.perf_counter() - began)
        finite = np.isfinite(losses)
        if not finite.all():
            # cubicfit reports the last coefficients whose loss was finite: one step before.
            first_bad = int(np.argmax(~finite))
            with np.errstate(all="ignore"):
                _, coefficients = run_loop("numpy", start, first_bad - 1, learning_rate,
                                           "float64", "cpu")
        output[f"losses_{index}"] = losses
        output[f"coefficients_{index}"] = coefficients
    return output


def _timed(function, reps: int):
    result = function()  # warm-up, not timed
    times = []
    for _ in range(reps):
        began = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - began)
    return result, times


# Stages of a `cubicfit` command: (label, module, attribute, parent label or None).
# A stage is timed only while its parent is the running top-level stage, or,
# for a top-level stage, while no other top-level stage runs, so top-level
# times add up without double counting.
STAGES = [
    ("gradient descent (fit_batch)", "cubicfit.runner", "fit_batch", None),
    ("fit.png figure set-up (imports matplotlib)", "cubicfit.plots", "FitPlotter.__init__",
     None),
    ("fit.png drawing per run", "cubicfit.plots", "FitPlotter.render_pixels", None),
    ("PNG encoding (a second thread)", "cubicfit.runner", "png_bytes", None),
    ("losses.csv formatting", "cubicfit.runner", "losses_csv", None),
    ("JSON documents", "cubicfit.runner", "to_json_bytes", None),
    ("storage writes (local folder)", "cubicfit.storage.local", "LocalStore.write_bytes", None),
    ("storage writes (local folder)", "cubicfit.storage.local", "LocalStore.create_bytes",
     None),
    ("storage writes (local folder)", "cubicfit.storage.local", "LocalStore.delete", None),
    ("os.sync between data files and result.json", "os", "sync", None),
    ("sweep report", "cubicfit.sweep.report", "build_report", None),
    ("report.png", "cubicfit.sweep.plots", "report_png", "sweep report"),
    ("losses.csv parsing", "cubicfit.sweep.report", "parse_losses_csv", "sweep report"),
]


def profile(args: dict) -> dict:
    import importlib

    began = time.perf_counter()
    from cubicfit.cli import main

    totals: dict[str, float] = {}
    active: list[str] = []  # the running top-level stage, at most one
    missing = []

    def wrap(label, function, parent):
        def timed(*positional, **keywords):
            counted = (parent is None and not active) or (parent is not None and active
                                                         and active[0] == parent)
            if not counted:
                return function(*positional, **keywords)
            if parent is None:
                active.append(label)
            start = time.perf_counter()
            try:
                return function(*positional, **keywords)
            finally:
                totals[label] = totals.get(label, 0.0) + time.perf_counter() - start
                if parent is None:
                    active.pop()
        return timed

    for label, module_name, attribute, parent in STAGES:
        try:
            owner = importlib.import_module(module_name)
            *path, name = attribute.split(".")
            for part in path:
                owner = getattr(owner, part)
            setattr(owner, name, wrap(label, getattr(owner, name), parent))
            totals.setdefault(label, 0.0)
        except (ImportError, AttributeError):
            missing.append(f"{module_name}.{attribute}")

    # Everything in this process: without the forked second writer, whose time the
    # wrappers above could not see.
    import cubicfit.runner

    cubicfit.runner.PARALLEL_WRITE_MIN_RUNS = 10**9
    imported = time.perf_counter()
    code = main(args["argv"])
    finished = time.perf_counter()
    stages = [{"label": label, "parent": parent, "seconds": totals.get(label)}
              for label, _, _, parent in _unique_stages()]
    return {"json": json.dumps({"exit_code": code, "total": finished - began,
                                "startup_imports": imported - began, "stages": stages,
                                "missing": missing})}


def _unique_stages():
    seen = set()
    for stage in STAGES:
        if stage[0] not in seen:
            seen.add(stage[0])
            yield stage


CASES = {"product-fit": product_fit, "baseline-fit": baseline_fit,
         "product-batch": product_batch, "baseline-points": baseline_points, "profile": profile}


def main() -> None:
    case, arguments, output = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    result = CASES[case](arguments)
    np.savez(output, **{key: np.asarray(value) for key, value in result.items()})


if __name__ == "__main__":
    main()
