"""The markdown report of benchmarks/run.py: machine, versions, tables, targets and time split."""

import datetime
import importlib.metadata
import os
import platform

import numpy as np

TARGET_MEMORY_BYTES = 150e6  # "under 150 MB" for a numpy-backend run
ENVIRONMENT_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                         "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def seconds(value: float) -> str:
    if value < 1e-3:
        return f"{value * 1e6:.3g} µs"
    if value < 1:
        return f"{value * 1e3:.3g} ms"
    return f"{value:.3g} s"


def spread(timing) -> str:
    """Return 'median (min–max)' of a Timing, or the reason it has no time."""
    if timing.check:
        return f"not reported: {timing.check}"
    if not timing.times:
        return "not measured"
    times = timing.times
    return f"{seconds(float(np.median(times)))} ({seconds(min(times))}–{seconds(max(times))})"


def megabytes(value) -> str:
    return "-" if value is None else f"{value / 1e6:.0f} MB"


def ratio(baseline: float, product) -> str:
    if product.check or not product.times:
        return "-"
    return f"{baseline / product.median:,.0f}×" if baseline / product.median >= 10 else (
        f"{baseline / product.median:.2f}×")


def numbers_cell(timing) -> str:
    return "equal" if not timing.check else "MISMATCH"


def mismatches(results) -> list[str]:
    """Return every failed equality check, as 'case: what differs'."""
    found = []
    for row in results["fits"]:
        if row["product"].check:
            found.append(f"{row['backend']} {row['device']} fit: {row['product'].check}")
    for row in results["processes"]:
        if row["product"].check:
            found.append(f"cubicfit run {row['backend']} {row['device']}: {row['product'].check}")
    sweep = results["sweep"]
    for name in ("batch_fit", "process"):
        if sweep[name].check:
            found.append(f"sweep {name}: {sweep[name].check}")
    return found


def targets(results) -> list[tuple[str, str, bool | None, str]]:
    """Return (target, measured, met, note) rows; met is None where it was not measured."""
    rows = []
    fits = {(row["backend"], row["device"]): row for row in results["fits"]}

    for backend, loop, needed in (("numpy", "numpy", 10), ("torch", "torch", 3)):
        row = fits[(backend, "cpu")]
        product, baseline = row["product"], row["baseline"]
        measured = None if product.check else baseline.median / product.median
        rows.append((f"{backend} fit (CPU) at least {needed}× faster than the baseline {loop} loop",
                     "-" if measured is None else f"{measured:,.1f}×",
                     None if measured is None else measured >= needed, ""))

    sweep = results["sweep"]
    baseline_total = sweep["per_point"].median * sweep["points"]
    for name, label, needed in (
            ("batch_fit", "fitting itself", 1000),
            ("process", "whole `cubicfit sweep` process (every file and the report)", 50)):
        timing = sweep[name]
        measured = None if timing.check or not timing.times else baseline_total / timing.median
        note = ""
        if name == "process" and measured is not None and measured < needed:
            note = sweep_shortfall(results, baseline_total / needed)
        rows.append((f"{sweep['points']}-point numpy sweep, {label}: at least {needed}× faster "
                     "than the baseline loop once per point",
                     "-" if measured is None else f"{measured:,.1f}×",
                     None if measured is None else measured >= needed, note))

    startup = results["startup"]
    peak = startup["numpy_run"].peak_bytes
    rows.append(("numpy-backend `cubicfit run`: peak memory under 150 MB", megabytes(peak),
                 None if peak is None else peak < TARGET_MEMORY_BYTES, "peak resident set size"))
    torch_modules = startup["torch_modules"]
    rows.append(("numpy-backend `cubicfit run` never imports torch",
                 "no torch module imported" if not torch_modules
                 else f"imported {', '.join(torch_modules[:3])}", not torch_modules,
                 f"`python -X importtime` lists {startup['imported_modules']} modules"))

    gpu = results["gpu_batch"]
    if gpu is None:
        rows.append(("CUDA: a sweep of 65,536 grid points fits within 1 s", "-", None,
                     "no CUDA device here; tests/test_gpu.py checks it on a GPU machine"))
    else:
        rows.append(("CUDA: a sweep of 65,536 grid points fits within 1 s", seconds(gpu.median),
                     gpu.median < 1.0, "engine fit time, median"))
    rows.append(("CUDA: exactly one host synchronization per `log_every` interval",
                 "unit tests", None,
                 "tests/test_performance_guards.py counts host reads with a stand-in on the CPU; "
                 "tests/test_gpu.py counts real ones with torch.cuda.set_sync_debug_mode"))
    return rows


def sweep_shortfall(results, budget: float) -> str:
    """Explain a missed whole-sweep target from the time split of the instrumented sweep."""
    profile = results["profiles"]["sweep"]
    stages = {stage["label"]: stage["seconds"] for stage in profile["stages"]
              if stage["seconds"] is not None and stage["parent"] is None}
    largest = sorted(stages.items(), key=lambda item: -item[1])[:4]
    parts = ", ".join(f"{label} {seconds(value)}" for label, value in largest)
    return (f"needs {seconds(budget)} or less; in the instrumented sweep the largest stages "
            f"were {parts} (see below)")


def machine() -> list[str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as stream:
            cpu = next(line.split(":", 1)[1].strip() for line in stream
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = "unknown"
    try:
        with open("/proc/meminfo") as stream:
            kib = int(next(line.split()[1] for line in stream if line.startswith("MemTotal")))
        memory = f"{kib / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [f"- CPU: {cpu}, {usable} logical CPUs usable of {os.cpu_count()}",
            f"- Memory: {memory}",
            f"- OS: {platform.platform()}",
            f"- Results folder file system: {filesystem_of(os.getcwd())}"]


def filesystem_of(path: str) -> str:
    best = ("", "unknown")
    try:
        with open("/proc/mounts") as stream:
            for line in stream:
                _, mount_point, kind, *_ = line.split()
                if path.startswith(mount_point) and len(mount_point) > len(best[0]):
                    best = (mount_point, kind)
    except OSError:
        pass
    return best[1]


def versions() -> str:
    names = []
    for package in ("cubicfit", "numpy", "torch", "matplotlib", "pillow"):
        try:
            names.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            names.append(f"{package} not installed")
    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    return (f"Python {platform.python_version()}, " + ", ".join(names)
            + f"; numpy's BLAS: {blas.get('name', 'unknown')} {blas.get('version', '')}".rstrip())


def environment() -> str:
    return ", ".join(f"`{name}`={os.environ[name]!r}" if name in os.environ else f"`{name}` unset"
                     for name in ENVIRONMENT_VARIABLES)


def fit_table(results) -> list[str]:
    lines = ["| backend | dtype | device | cubicfit engine | baseline loop | speed-up | "
             "peak memory, cubicfit / baseline | numbers |",
             "|---|---|---|---|---|---|---|---|"]
    for row in results["fits"]:
        product, baseline = row["product"], row["baseline"]
        lines.append(
            f"| {row['backend']} | {row['dtype']} | {row['device']} | {spread(product)} | "
            f"{row['baseline_backend']}: {spread(baseline)} | {ratio(baseline.median, product)} | "
            f"{megabytes(product.peak_bytes)} / {megabytes(baseline.peak_bytes)} | "
            f"{numbers_cell(product)} |")
    return lines


def process_table(results) -> list[str]:
    lines = ["| backend | device | `cubicfit run` | baseline loop process | ratio | "
             "peak memory, cubicfit / baseline | numbers |",
             "|---|---|---|---|---|---|---|"]
    for row in results["processes"]:
        product, baseline = row["product"], row["baseline"]
        lines.append(
            f"| {row['backend']} {row['dtype']} | {row['device']} | {spread(product)} | "
            f"{spread(baseline)} | {ratio(baseline.median, product)} | "
            f"{megabytes(product.peak_bytes)} / {megabytes(baseline.peak_bytes)} | "
            f"{numbers_cell(product)} |")
    return lines


def sweep_table(results) -> list[str]:
    sweep = results["sweep"]
    points, sample = sweep["points"], sweep["sample"]
    per_point = sweep["per_point"]
    baseline_total = per_point.median * points
    return [
        "| case | time, median (range) | vs the baseline | peak memory | numbers |",
        "|---|---|---|---|---|",
        f"| baseline numpy loop, one point ({sample} sampled points, one per learning rate) | "
        f"{spread(per_point)} | - | {megabytes(per_point.peak_bytes)} | - |",
        f"| baseline numpy loop once per point, all {points} points: **extrapolated**, "
        f"{points} × the median above | {seconds(baseline_total)} | 1× | - | - |",
        f"| cubicfit engine, {points} points in one batch (numpy) | {spread(sweep['batch_fit'])} "
        f"| {ratio(baseline_total, sweep['batch_fit'])} | "
        f"{megabytes(sweep['batch_fit'].peak_bytes)} | {numbers_cell(sweep['batch_fit'])} |",
        f"| `cubicfit sweep`, whole process: {points} × 4 run files and the report, local "
        f"folder | {spread(sweep['process'])} | {ratio(baseline_total, sweep['process'])} | "
        f"{megabytes(sweep['process'].peak_bytes)} | {numbers_cell(sweep['process'])} |",
    ]


def startup_table(results) -> list[str]:
    startup = results["startup"]
    return [
        "| process | time, median (range) | peak memory |",
        "|---|---|---|",
        f"| `python -c \"import numpy\"` | {spread(startup['numpy_import'])} | "
        f"{megabytes(startup['numpy_import'].peak_bytes)} |",
        f"| `cubicfit run --backend numpy` (fit, 4 files, local folder) | "
        f"{spread(startup['numpy_run'])} | {megabytes(startup['numpy_run'].peak_bytes)} |",
    ]


def profile_table(profile: dict) -> list[str]:
    lines = ["| stage | seconds | share |", "|---|---|---|"]
    total = profile["total"]
    accounted = profile["startup_imports"]
    lines.append(f"| imports before the command starts | {profile['startup_imports']:.3f} | "
                 f"{profile['startup_imports'] / total:.0%} |")
    for stage in profile["stages"]:
        value = stage["seconds"]
        if value is None or (value == 0 and stage["parent"] is not None):
            continue
        if stage["parent"] is None:
            accounted += value
            label = stage["label"]
        else:
            label = f"  of which: {stage['label']}"
        lines.append(f"| {label} | {value:.3f} | {value / total:.0%} |")
    lines.append(f"| everything else (argument parsing, config, logging, listing, ...) | "
                 f"{total - accounted:.3f} | {(total - accounted) / total:.0%} |")
    lines.append(f"| **total in the process, after interpreter start-up** | {total:.3f} | 100% |")
    if profile["missing"]:
        lines.append("")
        lines.append("Not found, so not timed: " + ", ".join(profile["missing"]) + ".")
    return lines


def markdown(results, command: str) -> str:
    sweep = results["sweep"]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    gpu_note = ("CUDA device found: the tables include CUDA rows." if "cuda" in results["devices"]
                else "No CUDA device was found, so there are no CUDA rows.")
    lines = [
        "# Benchmarks",
        "",
        "cubicfit against the per-point gradient-descent loops it replaces (the baseline, "
        "`benchmarks/baseline.py`: every step evaluates the cubic on all 2000 points, as the "
        "classic numpy and PyTorch examples do). This page is written by `make bench` "
        "(`benchmarks/run.py`); rerun it to refresh the numbers.",
        "",
        f"- Command: `{command}`, {results['reps']} timed repetitions per case after one "
        f"untimed warm-up; {now}; the whole run took {results['seconds']:.0f} s.",
        "- Times are medians with the range (min–max) in brackets. Peak memory is the peak "
        "resident set size of the process (`ru_maxrss`), the largest over the repetitions.",
        f"- Default problem: 2000 points on [-π, π], {results['default_problem']['steps']} steps, "
        f"learning rate {results['default_problem']['learning_rate']:g}, start values of seed 0 "
        "for both sides. Fits run in their own process per case.",
        "- Equality: before a time is reported, the product's losses (every step) and final "
        "coefficients are compared with the baseline's. The relative error must be at most "
        f"{results['tolerance']['float64']:g} in float64 and {results['tolerance']['float32']:g} "
        "in float32, where the two algorithms round differently: the engine steps on the "
        "distance from the least-squares optimum, and the loop sums over the points. A "
        "diverged run must stop at the loop's first non-finite loss and report the loop's "
        "coefficients one step before.",
        f"- {gpu_note}",
        "",
        "## Machine",
        "",
        *machine(),
        f"- Versions: {versions()}",
        f"- Environment: {environment()}",
        "",
        "## 1. One fit of the default problem",
        "",
        "Fit time: the engine (`fit_batch`, one member, losses read once per 100 steps) against "
        "the baseline loop with the same backend, dtype and start values. The torch-autograd "
        "backend is compared with the same hand-written torch loop.",
        "",
        *fit_table(results),
        "",
        "Whole process: `cubicfit run` from the shell, writing config.json, losses.csv, fit.png "
        "and result.json to a fresh local folder, against `python benchmarks/baseline.py`, a "
        "process that runs the loop and prints the result. The product's files are checked "
        "against the loop's numbers.",
        "",
        *process_table(results),
        "",
        f"## 2. A sweep of {sweep['points']} grid points",
        "",
        f"{len(results['learning_rates'])} learning rates "
        f"({', '.join(f'{rate:g}' for rate in results['learning_rates'])}) × "
        f"{len(results['seeds'])} seeds, {results['default_problem']['steps']} steps each; "
        f"{sweep['diverged_points']} points diverge. Running the baseline loop for every point "
        f"would take minutes, so it runs for {sweep['sample']} sampled points and the "
        f"{sweep['points']}-point time is that median times {sweep['points']}; the sampled "
        "points run in groups between the `cubicfit sweep` repetitions. Every repetition must "
        "write all run files and the report. The product's numbers are checked for the "
        "sampled points, in the engine's output and in the last repetition's files.",
        "",
        *sweep_table(results),
        "",
        "## 3. Start-up",
        "",
        *startup_table(results),
        "",
        f"Modules imported by a numpy-backend `cubicfit run` (`python -X importtime`): "
        f"{results['startup']['imported_modules']}; torch modules among them: "
        f"{', '.join(results['startup']['torch_modules']) or 'none'}.",
        "",
    ]
    if results["gpu_batch"] is not None:
        lines += ["## CUDA batch", "",
                  f"The engine on 65,536 grid points (256 learning rates × 256 seeds, torch "
                  f"float32, CUDA): {spread(results['gpu_batch'])}, peak host memory "
                  f"{megabytes(results['gpu_batch'].peak_bytes)}.", ""]
    lines += ["## Targets", "", "| target | measured | result | note |", "|---|---|---|---|"]
    for target, measured, met, note in targets(results):
        lines.append(f"| {target} | {measured} | {verdict(met, '**NOT MET**')} | {note} |")
    lines += [
        "",
        "## Where the time goes",
        "",
        "One instrumented run of each command in a worker process: the time inside the main "
        "stages of the job is summed per stage (benchmarks/worker.py, STAGES). Nested rows are "
        "part of the row above them. Timing adds about a microsecond per call.",
        "",
        f"`cubicfit sweep` ({sweep['points']} points, numpy, local folder):",
        "",
        *profile_table(results["profiles"]["sweep"]),
        "",
        "`cubicfit run` (numpy, local folder):",
        "",
        *profile_table(results["profiles"]["run"]),
        "",
        *ANALYSIS,
    ]
    return "\n".join(lines) + "\n"


# Findings from cProfile and the instrumented runs while optimising, on a 2-core AMD EPYC VM;
# the tables above hold the current numbers.
ANALYSIS = [
    "## What was optimised, and what is left",
    "",
    "Per-run figures in this section were measured with cProfile and the instrumented runs "
    "while optimising, on a 2-core AMD EPYC VM; the tables above hold the current numbers.",
    "",
    "- Gradient descent. The engine never touches the 2000 sample points inside the loop. "
    "The loss of a cubic is L* + eᵀGe, with G = XᵀX (4 × 4) and e the distance from the "
    "least-squares optimum. One step is therefore a (B × 4)(4 × 4) product, a row-wise dot "
    "product and an update, each written into preallocated arrays (`out=`). The baseline "
    "computes x², x³ and five sums over all points in every step. What remains is the cost "
    "of calling numpy or torch three or four times per step (a few microseconds each), "
    "which a batch shares among all its members.",
    "- Host reads. The losses of a chunk of `log_every` steps stay on the device and are "
    "copied to the host once per chunk. The torch backend used to build an index tensor "
    "from a Python range once per chunk, a host-to-device copy that synchronizes on CUDA. "
    "It now uses `torch.arange` on the device.",
    "- Imports. The numpy path never imports torch, and matplotlib and Pillow are imported "
    "when the first plot is drawn. Importing matplotlib and drawing the shared figure once "
    "is the largest fixed cost of a single numpy run. It is why a whole `cubicfit run` "
    "process takes longer than a process that only runs the baseline loop and writes no "
    "files; no target covers that comparison.",
    "- torch-autograd. Calling `backward()` every step costs more on the CPU than a whole "
    "step of the hand-written torch loop, so this backend is slower than the baseline; no "
    "target covers it.",
    "- fit.png. A sweep draws one figure per batch and only the run's own lines on a "
    "cached background. Two per-run costs were larger than the drawing itself: matplotlib "
    "3.11 renders the title glyph by glyph in Python (about 6 ms per run), and Pillow's "
    "PNG encoder tries four row filters on every row (about 9 ms). The title is now drawn "
    "by Pillow from the same font file and size, and the PNG is written with unfiltered "
    "rows and zlib level 1. One plot went from about 22 ms to about 5 ms, and it keeps its "
    "axes, labels, legend and title. zlib compression of the 800 × 320 RGB image is now "
    "the largest part of a plot.",
    "- Writing. The local store writes every file to a temporary file and renames it, so "
    "a reader never sees half a file. It used to fsync every file; now the runner calls "
    "os.sync once between a batch's data files and its result.json files, and once after, "
    "which keeps result.json last on disk too. zlib releases the interpreter lock, so a "
    "second thread encodes and stores each fit.png while the main thread draws the next. On "
    "a local folder, batches of 64 runs or more are written by two processes: a forked "
    "child that shares the prepared figure writes every second run's losses.csv and fit.png. "
    "The stage table above is measured with the fork off, so that every stage is seen.",
    "- What is left for the 50x sweep target: importing matplotlib and drawing the shared "
    "figure once (about 0.6 s in the stage table), the sweep report (about 0.65 s, mostly "
    "report.png), and about 5 ms of CPU per run for losses.csv, fit.png and the writes, "
    "split over the two cores. On this shared 2-core machine, `/usr/bin/time cubicfit "
    "sweep` of the same 256 points took between 2.8 s and 4 s over several runs, and 50x "
    "needs 2.7 s.",
    "- losses.csv. Formatting 2001 losses per run with the shortest exact `repr` costs about "
    "1 ms per run. `repr` itself is most of it, so a faster format would change the file.",
    "- The sweep report reads every run's result and up to 300 loss curves back from storage "
    "and draws report.png once, a fixed cost per sweep.",
]


def verdict(met: bool | None, missed: str) -> str:
    if met is None:
        return "not measured"
    return "met" if met else missed


def summary(results) -> str:
    """Return the target lines for the terminal."""
    lines = ["", "targets:"]
    for target, measured, met, _ in targets(results):
        lines.append(f"  [{verdict(met, 'NOT MET')}] {target}: {measured}")
    for problem in mismatches(results):
        lines.append(f"  MISMATCH {problem}")
    return "\n".join(lines)
