"""Benchmark cubicfit against the per-point loops it replaces, and write docs/benchmarks.md.

Run it with `make bench`, or `.venv/bin/python benchmarks/run.py [--reps N]`.
In one session it measures, with N repetitions per case (median and range):

1. One fit of the default problem (2000 points, 2000 steps, learning rate 1e-6,
   start values of seed 0) per backend and device. The engine's fit time is
   compared with the baseline loop's (baseline.py) for the same backend and
   dtype, and the whole `cubicfit run` process with a process running the loop.
2. A sweep of 256 grid points (16 learning rates x 16 seeds). The engine's
   batched fit and the whole `cubicfit sweep` process are compared with the
   baseline loop run once per point. The sweep writes every run's files and
   the report to a local folder. The loop runs for a sample of 16 points, one per learning rate,
   and the 256-point time is extrapolated from their median.
3. Start-up: `cubicfit run` with the numpy backend against
   `python -c "import numpy"`, and whether that run imports torch.
4. The peak resident set size of every process involved.

Before any time is reported, the product's numbers are checked against the
baseline's (losses of every step and the final coefficients, or the last
finite ones of a diverged run). A mismatch is reported instead of the time,
and the script exits with status 1. Scratch files go to .bench/.
"""

import argparse
import dataclasses
import json
import os
import pickle
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORK = os.path.join(REPO, ".bench")
DOC = os.path.join(REPO, "docs", "benchmarks.md")
SAVED = os.path.join(WORK, "results.pickle")  # the last run's measurements, for --report-only
sys.path.insert(0, HERE)

import report  # noqa: E402 - report.py sits beside this file

DEFAULT_PROBLEM = {"steps": 2000, "learning_rate": 1e-6, "log_every": 100}
# Learning rates below and above the stability bound (about 3.56e-6 for the default problem):
# the last three diverge within 2000 steps.
SWEEP_LEARNING_RATES = [1e-7, 2e-7, 3e-7, 5e-7, 7e-7, 1e-6, 1.5e-6, 2e-6, 2.5e-6, 3e-6, 3.3e-6,
                        3.5e-6, 3.6e-6, 4e-6, 5e-6, 1e-5]
SWEEP_SEEDS = list(range(16))
SWEEP_NAME = "bench-256"
# Relative tolerance of the equality check; float32 rounds differently in the two algorithms.
TOLERANCE = {"float64": 1e-9, "float32": 1e-4}
GPU_BATCH_SIDE = 256  # the CUDA batch check fits GPU_BATCH_SIDE**2 = 65,536 points


@dataclasses.dataclass
class Timing:
    """Repeated measurements of one case; `check` is None when its numbers matched the baseline."""

    times: list[float]
    peak_bytes: int | None = None
    check: str | None = None

    @property
    def median(self) -> float:
        return float(np.median(self.times))


@dataclasses.dataclass
class ProcessRun:
    seconds: float
    peak_bytes: int
    exit_code: int


def run_process(command: list[str], *, stdout_path: str | None = None,
                stderr_path: str | None = None) -> ProcessRun:
    """Run `command` from the repository root; return its wall time and peak resident set size."""
    with open(stdout_path or os.devnull, "wb") as stdout, \
            open(stderr_path or os.devnull, "wb") as stderr:
        began = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - began
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return ProcessRun(seconds, usage.ru_maxrss * 1024, process.returncode)


def run_worker(case: str, arguments: dict) -> tuple[dict, int]:
    """Run one case of worker.py in a fresh process; return its saved arrays and peak memory."""
    output = os.path.join(WORK, f"{case}.npz")
    errors = os.path.join(WORK, f"{case}.stderr")
    command = [sys.executable, os.path.join(HERE, "worker.py"), case, json.dumps(arguments),
               output]
    finished = run_process(command, stderr_path=errors)
    if finished.exit_code != 0:
        with open(errors) as stream:
            raise RuntimeError(f"benchmark case {case} failed with exit status "
                               f"{finished.exit_code}:\n{stream.read()[-3000:]}")
    with np.load(output) as saved:
        return {key: saved[key] for key in saved.files}, finished.peak_bytes


def compare(product_losses, product_coefficients, baseline_losses, baseline_coefficients,
            dtype: str) -> str | None:
    """Return None when the product followed the baseline's trajectory, else what differs."""
    product_losses = np.asarray(product_losses, dtype=np.float64)
    baseline_losses = np.asarray(baseline_losses, dtype=np.float64)
    finite = np.isfinite(baseline_losses)
    # The product stops at the first non-finite loss; the baseline runs on through inf and nan.
    expected_length = len(baseline_losses) if finite.all() else int(np.argmax(~finite)) + 1
    if len(product_losses) != expected_length:
        return f"{len(product_losses)} losses, baseline has {expected_length} up to divergence"
    baseline_losses = baseline_losses[:expected_length]
    if not np.array_equal(np.isfinite(product_losses), np.isfinite(baseline_losses)):
        return "non-finite losses at different steps"

    tolerance = TOLERANCE[dtype]
    both = np.isfinite(baseline_losses)
    loss_error = np.max(np.abs(product_losses[both] - baseline_losses[both])
                        / np.maximum(np.abs(baseline_losses[both]), 1e-300))
    if loss_error > tolerance:
        return f"losses differ by {loss_error:.2e} relative (tolerance {tolerance:g})"
    # Coefficients relative to the vector's size: a and c are tiny next to b and d.
    scale = max(float(np.max(np.abs(baseline_coefficients))), 1e-300)
    coefficient_error = float(np.max(np.abs(np.asarray(product_coefficients)
                                            - baseline_coefficients))) / scale
    if coefficient_error > tolerance:
        return f"coefficients differ by {coefficient_error:.2e} relative (tolerance {tolerance:g})"
    return None


def read_run(output: str, run_id: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """Return (losses, coefficients, result document) of one run in a local output folder."""
    from cubicfit.results import parse_losses_csv

    folder = os.path.join(output, "runs", run_id)
    with open(os.path.join(folder, "losses.csv"), "rb") as stream:
        losses = parse_losses_csv(stream.read())
    with open(os.path.join(folder, "result.json")) as stream:
        result = json.load(stream)
    return losses, np.array(list(result["coefficients"].values())), result


def only_run_id(output: str) -> str:
    (run_id,) = os.listdir(os.path.join(output, "runs"))
    return run_id


def cubicfit_command() -> list[str]:
    script = shutil.which("cubicfit", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "cubicfit"]


def fresh_folder(name: str) -> str:
    path = os.path.join(WORK, name)
    shutil.rmtree(path, ignore_errors=True)
    return path


def cuda_available() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True, cwd=REPO)
    return probe.stdout.strip() == "True"


def measure_fits(reps: int, start: list[float], devices: list[str]) -> list[dict]:
    """Time one fit of the default problem per backend and device, engine and baseline loop."""
    rows = []
    baselines = {}
    for device in devices:
        for backend, dtype, baseline_backend in (("numpy", "float64", "numpy"),
                                                 ("torch", "float32", "torch"),
                                                 ("torch-autograd", "float32", "torch")):
            if backend == "numpy" and device != "cpu":
                continue
            arguments = {**DEFAULT_PROBLEM, "init": start, "dtype": dtype, "device": device,
                         "reps": reps}
            key = (baseline_backend, dtype, device)
            if key not in baselines:
                print(f"  baseline loop: {baseline_backend} {dtype} {device}", flush=True)
                saved, peak = run_worker("baseline-fit", {**arguments, "backend": baseline_backend})
                baselines[key] = (Timing(list(saved["times"]), peak), saved)
            baseline, baseline_saved = baselines[key]

            print(f"  product fit: {backend} {dtype} {device}", flush=True)
            saved, peak = run_worker("product-fit", {**arguments, "backend": backend})
            product = Timing(list(saved["times"]), peak)
            product.check = compare(saved["losses"], saved["coefficients"],
                                    baseline_saved["losses"], baseline_saved["coefficients"], dtype)
            rows.append({"backend": backend, "dtype": dtype, "device": device,
                         "baseline_backend": baseline_backend, "product": product,
                         "baseline": baseline, "baseline_numbers": baseline_saved})
    return rows


def measure_processes(reps: int, start: list[float], fit_rows: list[dict]) -> list[dict]:
    """Time whole `cubicfit run` processes against processes that run the baseline loop.

    The two alternate, so that a burst of load from other processes hits both sides.
    """
    rows = []
    for fit in fit_rows:
        if fit["backend"] == "torch-autograd":
            continue
        backend, dtype, device = fit["backend"], fit["dtype"], fit["device"]
        print(f"  whole process: cubicfit run --backend {backend} --device {device}", flush=True)
        product, baseline = Timing([]), Timing([])
        for _ in range(reps):
            output = fresh_folder("run-output")
            finished = run_process(cubicfit_command() + [
                "run", "--backend", backend, "--dtype", dtype, "--device", device,
                "--output", output, "--quiet"])
            if finished.exit_code != 0:
                product.check = f"cubicfit run exited with status {finished.exit_code}"
                break
            product.times.append(finished.seconds)
            product.peak_bytes = max(product.peak_bytes or 0, finished.peak_bytes)
            losses, coefficients, _ = read_run(output, only_run_id(output))
            numbers = fit["baseline_numbers"]
            product.check = product.check or compare(losses, coefficients, numbers["losses"],
                                                     numbers["coefficients"], dtype)

            finished = run_process([sys.executable, os.path.join(HERE, "baseline.py"),
                                    "--backend", fit["baseline_backend"], "--dtype", dtype,
                                    "--device", device,
                                    "--init", ",".join(repr(value) for value in start)])
            baseline.times.append(finished.seconds)
            baseline.peak_bytes = max(baseline.peak_bytes or 0, finished.peak_bytes)
        rows.append({"backend": backend, "dtype": dtype, "device": device,
                     "product": product, "baseline": baseline})
    return rows


def write_sweep_spec() -> str:
    path = os.path.join(WORK, "sweep-256.yaml")
    rates = ", ".join(repr(rate) for rate in SWEEP_LEARNING_RATES)
    seeds = ", ".join(str(seed) for seed in SWEEP_SEEDS)
    with open(path, "w") as stream:
        stream.write(f"name: {SWEEP_NAME}\nbase:\n  backend: numpy\n"
                     f"  iterations: {DEFAULT_PROBLEM['steps']}\n"
                     f"grid:\n  learning_rate: [{rates}]\n  seed: [{seeds}]\n")
    return path


def measure_sweep(reps: int) -> dict:
    """Time the 256-point sweep: batched fit and whole process, against the per-point loop.

    The sampled baseline points run in groups between the `cubicfit sweep` repetitions, so
    that a burst of load from other processes hits both sides.
    """
    points = [(rate, seed) for rate in SWEEP_LEARNING_RATES for seed in SWEEP_SEEDS]
    # One point per learning rate and per seed: the diagonal of the grid.
    sample = [(SWEEP_LEARNING_RATES[index], SWEEP_SEEDS[index])
              for index in range(len(SWEEP_LEARNING_RATES))]
    spec = write_sweep_spec()

    print(f"  whole process: cubicfit sweep ({len(points)} points), alternating with the "
          f"baseline loop for {len(sample)} sampled points", flush=True)
    process, per_point = Timing([]), Timing([])
    baseline = {}  # sample index -> (losses, coefficients)
    for group in np.array_split(np.arange(len(sample)), reps):
        output = fresh_folder("sweep-output")
        finished = run_process(cubicfit_command() + ["sweep", spec, "--output", output,
                                                     "--quiet"])
        if finished.exit_code != 0:
            process.check = f"cubicfit sweep exited with status {finished.exit_code}"
            break
        process.times.append(finished.seconds)
        process.peak_bytes = max(process.peak_bytes or 0, finished.peak_bytes)
        process.check = process.check or check_sweep_files(output, points)

        if len(group):
            saved, peak = run_worker("baseline-points", {
                "points": [sample[index] for index in group], "steps": DEFAULT_PROBLEM["steps"]})
            per_point.times += list(saved["times"])
            per_point.peak_bytes = max(per_point.peak_bytes or 0, peak)
            for position, index in enumerate(group):
                baseline[int(index)] = (saved[f"losses_{position}"],
                                        saved[f"coefficients_{position}"])
    if not process.check:
        process.check = check_sampled_points(output, sample, baseline)

    print(f"  product batch fit: {len(points)} points", flush=True)
    keep = [points.index(point) for point in sample]
    saved, peak = run_worker("product-batch", {
        **DEFAULT_PROBLEM, "backend": "numpy", "dtype": "float64", "device": "cpu",
        "learning_rates": [rate for rate, _ in points], "seeds": [seed for _, seed in points],
        "reps": reps, "keep": keep})
    batch_fit = Timing(list(saved["times"]), peak)
    for position, index in enumerate(keep):
        if position in baseline:
            batch_fit.check = batch_fit.check or compare(
                saved[f"losses_{index}"], saved[f"coefficients_{index}"], *baseline[position],
                "float64")

    return {"points": len(points), "sample": len(baseline), "per_point": per_point,
            "batch_fit": batch_fit, "process": process,
            "diverged_points": int((saved["diverged_at"] >= 0).sum())}


def check_sweep_files(output: str, points) -> str | None:
    """Check that sweep.json lists every point and that every run and the report have files."""
    with open(os.path.join(output, "sweeps", SWEEP_NAME, "sweep.json")) as stream:
        document = json.load(stream)
    if document["point_count"] != len(points):
        return f"sweep.json lists {document['point_count']} points, expected {len(points)}"
    for name in ("summary.csv", "report.md", "report.png"):
        if not os.path.exists(os.path.join(output, "sweeps", SWEEP_NAME, name)):
            return f"the sweep report has no {name}"
    for point in document["points"]:
        for name in ("config.json", "losses.csv", "fit.png", "result.json"):
            if not os.path.exists(os.path.join(output, "runs", point["run_id"], name)):
                return f"run {point['run_id']} has no {name}"
    return None


def check_sampled_points(output: str, sample, baseline: dict) -> str | None:
    """Check the files of the sampled points against the baseline loop's numbers and status."""
    with open(os.path.join(output, "sweeps", SWEEP_NAME, "sweep.json")) as stream:
        document = json.load(stream)
    run_ids = {(point["values"]["learning_rate"], point["values"]["seed"]): point["run_id"]
               for point in document["points"]}
    for index, (baseline_losses, baseline_coefficients) in sorted(baseline.items()):
        point = sample[index]
        losses, coefficients, result = read_run(output, run_ids[point])
        problem = compare(losses, coefficients, baseline_losses, baseline_coefficients,
                          "float64")
        if problem:
            return f"point learning rate {point[0]:g}, seed {point[1]}: {problem}"
        expected = "succeeded" if np.isfinite(baseline_losses).all() else "diverged"
        if result["status"] != expected:
            return f"point {point}: status {result['status']}, baseline says {expected}"
    return None


def measure_gpu_batch(reps: int) -> Timing:
    """Time the engine on 65,536 grid points on CUDA (no baseline: far too slow per point)."""
    rates = np.geomspace(1e-8, 3e-6, GPU_BATCH_SIDE).tolist()
    points = [(rate, seed) for rate in rates for seed in range(GPU_BATCH_SIDE)]
    print(f"  product batch fit on cuda: {len(points)} points", flush=True)
    saved, peak = run_worker("product-batch", {
        **DEFAULT_PROBLEM, "backend": "torch", "dtype": "float32", "device": "cuda",
        "learning_rates": [rate for rate, _ in points], "seeds": [seed for _, seed in points],
        "reps": reps})
    return Timing(list(saved["times"]), peak)


def measure_startup(reps: int, process_rows: list[dict]) -> dict:
    """Compare a numpy-backend `cubicfit run` with `python -c "import numpy"`; check for torch."""
    print("  start-up: python -c 'import numpy', and the imports of a numpy run", flush=True)
    numpy_import = Timing([])
    for _ in range(reps):
        finished = run_process([sys.executable, "-c", "import numpy"])
        numpy_import.times.append(finished.seconds)
        numpy_import.peak_bytes = max(numpy_import.peak_bytes or 0, finished.peak_bytes)

    output = fresh_folder("startup-output")
    importtime = os.path.join(WORK, "importtime.txt")
    run_process([sys.executable, "-X", "importtime", "-m", "cubicfit", "run", "--backend",
                 "numpy", "--output", output, "--quiet"], stderr_path=importtime)
    with open(importtime) as stream:
        modules = [line.rsplit("|", 1)[-1].strip() for line in stream if "|" in line]
    torch_modules = sorted(name for name in modules if name.split(".")[0] == "torch")
    numpy_run = next(row for row in process_rows
                     if row["backend"] == "numpy" and row["device"] == "cpu")
    return {"numpy_import": numpy_import, "numpy_run": numpy_run["product"],
            "imported_modules": len(modules), "torch_modules": torch_modules}


def measure_profiles() -> dict:
    """Sum the time per stage of one `cubicfit run` and one `cubicfit sweep`, in this process."""
    print("  where the time goes: instrumented run and sweep", flush=True)
    profiles = {}
    run_output = fresh_folder("profile-run")
    saved, _ = run_worker("profile", {"argv": ["run", "--backend", "numpy", "--output",
                                               run_output, "--quiet"]})
    profiles["run"] = json.loads(str(saved["json"]))
    sweep_output = fresh_folder("profile-sweep")
    saved, _ = run_worker("profile", {"argv": ["sweep", write_sweep_spec(), "--output",
                                               sweep_output, "--quiet"]})
    profiles["sweep"] = json.loads(str(saved["json"]))
    return profiles


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5,
                        help="timed repetitions per case, after one untimed warm-up (default: 5)")
    parser.add_argument("--output", default=DOC,
                        help="where to write the markdown report (default: docs/benchmarks.md)")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the report from the last run's saved measurements "
                        f"({os.path.relpath(SAVED, REPO)}) without measuring (default: off)")
    args = parser.parse_args()
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    if args.report_only:
        with open(SAVED, "rb") as stream:
            results, command = pickle.load(stream)
        return write_report(results, command, args.output)

    from cubicfit.problem import start_values

    os.makedirs(WORK, exist_ok=True)
    began = time.perf_counter()
    start = [float(value) for value in start_values(0)]
    devices = ["cpu"] + (["cuda"] if cuda_available() else [])

    print(f"cubicfit benchmark, {args.reps} repetitions per case", flush=True)
    results = {"reps": args.reps, "devices": devices, "start": start,
               "default_problem": DEFAULT_PROBLEM, "learning_rates": SWEEP_LEARNING_RATES,
               "seeds": SWEEP_SEEDS, "tolerance": TOLERANCE}
    results["fits"] = measure_fits(args.reps, start, devices)
    results["processes"] = measure_processes(args.reps, start, results["fits"])
    results["sweep"] = measure_sweep(args.reps)
    results["gpu_batch"] = measure_gpu_batch(args.reps) if "cuda" in devices else None
    results["startup"] = measure_startup(args.reps, results["processes"])
    results["profiles"] = measure_profiles()
    results["seconds"] = time.perf_counter() - began

    command = "make bench" if os.environ.get("MAKELEVEL") else " ".join(
        [os.path.relpath(sys.executable, REPO), *sys.argv])
    with open(SAVED, "wb") as stream:
        pickle.dump((results, command), stream)
    return write_report(results, command, args.output)


def write_report(results: dict, command: str, output: str) -> int:
    """Write the markdown report and print the targets; return 1 if any numbers differed."""
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as stream:
        stream.write(report.markdown(results, command))
    print(report.summary(results))
    print(f"wrote {os.path.relpath(output, REPO)}; the measurements took "
          f"{results['seconds']:.0f} s")
    return 1 if report.mismatches(results) else 0


if __name__ == "__main__":
    sys.exit(main())
