"""Properties behind the job's speed that a timing cannot show.

They cover imports, host reads and the sample points staying out of the loop.
`make bench` measures the speed itself; these tests fail when a change would
quietly give it away.
"""

import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from cubicfit.backends import fit_batch
from cubicfit.problem import build_problem, start_values

# Runs a cubicfit command in a fresh interpreter and prints the torch modules it imported.
IMPORT_PROBE = """
import json, sys
from cubicfit.cli import main
code = main(sys.argv[1:])
print(json.dumps({"exit_code": code,
                  "torch": sorted(m for m in sys.modules if m.split(".")[0] == "torch")}))
"""


def imported_torch_modules(tmp_path, *argv) -> list[str]:
    finished = subprocess.run([sys.executable, "-c", IMPORT_PROBE, *argv], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout.strip().splitlines()[-1])
    assert report["exit_code"] == 0, finished.stderr
    return report["torch"]


def test_numpy_run_never_imports_torch(tmp_path):
    modules = imported_torch_modules(tmp_path, "run", "--backend", "numpy", "--output",
                                     str(tmp_path / "results"), "--quiet")

    assert modules == []


def test_numpy_sweep_never_imports_torch(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: numpy-only\nbase:\n  iterations: 300\n"
                    "grid:\n  learning_rate: [1e-6, 1e-5]\n  seed: [0, 1]\n")

    modules = imported_torch_modules(tmp_path, "sweep", str(spec), "--output",
                                     str(tmp_path / "results"), "--quiet")

    assert modules == []


class PoisonedArray:
    """Stands in for the sample points; any use in arithmetic or conversion raises."""

    def __getattr__(self, name):
        raise AssertionError(f"the loop used the sample points ({name})")

    def __array__(self, *args, **kwargs):
        raise AssertionError("the loop converted the sample points to an array")


@pytest.mark.parametrize("backend", ["numpy", "torch", "torch-autograd"])
def test_fit_never_touches_sample_points(backend):
    # The loop works on XᵀX alone, so no power of x is computed in it, and a step costs the
    # same for any number of points.
    if backend != "numpy":
        pytest.importorskip("torch")
    problem = build_problem(2000, -math.pi, math.pi, "sin", "float64")
    blind = dataclasses.replace(problem, x=PoisonedArray(), y=PoisonedArray())
    initial = np.array([start_values(0), start_values(1)])

    fit = fit_batch(backend, blind, initial, [1e-6, 1e-5], [500, 500], dtype="float64")
    reference = fit_batch(backend, problem, initial, [1e-6, 1e-5], [500, 500], dtype="float64")

    assert np.array_equal(fit.coefficients, reference.coefficients)
    assert np.array_equal(fit.losses[0], reference.losses[0])


class HostReadCounter:
    """Counts the torch calls that would make the host wait for a CUDA device.

    Runs as a TorchFunctionMode on the CPU, where the calls are the same as on
    CUDA. Device-to-host reads: item, tolist, numpy, cpu, to(device="cpu"),
    conversions to Python numbers or bool, and operations whose output size
    depends on the data (nonzero, masked_select, unique, boolean-mask indexing).
    Host-to-device copies from pageable memory also wait for the stream:
    torch.tensor and torch.as_tensor. `.numpy()` of a tensor that a counted
    read just returned is part of that read.
    """

    READS = {"item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__",
             "__complex__", "nonzero", "masked_select", "unique", "equal", "allclose",
             "is_nonzero", "__array__"}
    COPIES_TO_DEVICE = {"tensor", "as_tensor"}

    def __init__(self):
        import torch
        from torch.overrides import TorchFunctionMode

        counter = self
        self.events: list[str] = []
        self.last_read = None  # the tensor that the last counted read returned

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                result = func(*args, **kwargs)
                counter.record(getattr(func, "__name__", ""), args, kwargs, result, torch)
                return result

        self.mode = Mode()

    def record(self, name, args, kwargs, result, torch):
        if name == "numpy" and args and args[0] is self.last_read:
            return
        if name in self.READS or (name == "to" and _targets_cpu(args, kwargs, torch)) or (
                name == "__getitem__" and _has_mask_index(args, torch)):
            self.events.append(f"read:{name}")
            self.last_read = result if isinstance(result, torch.Tensor) else None
        elif name in self.COPIES_TO_DEVICE:
            self.events.append(f"copy:{name}")

    def reads(self, events) -> int:
        return sum(event.startswith("read:") for event in events)

    def copies(self, events) -> int:
        return sum(event.startswith("copy:") for event in events)


def _targets_cpu(args, kwargs, torch) -> bool:
    targets = list(args[1:]) + [kwargs.get("device")]
    return any((isinstance(target, str) and target.startswith("cpu"))
               or (isinstance(target, torch.device) and target.type == "cpu")
               for target in targets)


def _has_mask_index(args, torch) -> bool:
    index = args[1] if len(args) > 1 else None
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(part, torch.Tensor) and part.dtype == torch.bool for part in parts)


def count_host_reads(backend, dtype, rates, iterations, log_every):
    """Run a torch batch under the counter; return (events before each chunk report, all events)."""
    pytest.importorskip("torch")
    problem = build_problem(2000, -math.pi, math.pi, "sin", dtype)
    initial = np.array([start_values(seed) for seed in range(len(rates))])
    counter = HostReadCounter()
    boundaries = []

    with counter.mode:
        fit_batch(backend, problem, initial, rates, iterations, dtype=dtype,
                  log_every=log_every, on_chunk=lambda report: boundaries.append(
                      len(counter.events)))
    return boundaries, counter


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", ["torch", "torch-autograd"])
def test_torch_fit_reads_host_once_per_chunk(backend, dtype):
    boundaries, counter = count_host_reads(backend, dtype, [1e-6, 3e-6, 1e-5], [1000, 950, 1000],
                                           log_every=100)
    events = counter.events

    assert len(boundaries) == 11  # losses of steps 0..1000: ten chunks of 100 and one of 1
    # Before the first report: copying the constants to the device, and the first chunk's read.
    assert counter.reads(events[:boundaries[0]]) == 1
    for start, end in zip(boundaries, boundaries[1:], strict=False):
        chunk = events[start:end]
        assert counter.reads(chunk) == 1, chunk
        assert counter.copies(chunk) == 0, chunk
    # After the last report: the final and last finite weights.
    assert counter.reads(events[boundaries[-1]:]) == 2
    assert counter.copies(events[boundaries[-1]:]) == 0


def test_host_reads_independent_of_batch_size():
    short_boundaries, short = count_host_reads("torch", "float32", [1e-6], [500], log_every=100)
    long_boundaries, long = count_host_reads("torch", "float32", [1e-6] * 64, [2000] * 64,
                                             log_every=100)

    assert short.reads(short.events) == len(short_boundaries) + 2
    assert long.reads(long.events) == len(long_boundaries) + 2
    assert short.copies(short.events) == long.copies(long.events)


def test_host_read_counter_sees_item_and_cpu_copies():
    torch = pytest.importorskip("torch")
    counter = HostReadCounter()

    with counter.mode:
        values = torch.arange(4.0)
        values.sum().item()
        values.to(device="cpu", dtype=torch.float64).numpy()
        bool(values[0])
        values[values > 1]

    assert counter.events == ["read:item", "read:to", "read:__bool__", "read:__getitem__"]
