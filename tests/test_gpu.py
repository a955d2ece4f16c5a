"""CUDA checks: real host synchronizations, a 65,536-point batch within a second, CPU agreement.

Every test here needs a CUDA device and is skipped without one (marker `gpu`).
NOTE: written and run on a CPU-only machine (with the device set to "cpu"), not yet on a GPU.
"""

import math
import time
import warnings

import numpy as np
import pytest

from cubicfit.backends import fit_batch
from cubicfit.problem import build_problem, start_values

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def seed_problem(dtype):
    return build_problem(2000, -math.pi, math.pi, "sin", dtype)


@pytest.mark.parametrize("backend", ["torch", "torch-autograd"])
def test_cuda_fit_synchronizes_once_per_chunk(backend):
    problem = seed_problem("float32")
    initial = np.array([start_values(seed) for seed in range(3)])
    arguments = dict(dtype="float32", device="cuda", log_every=100)
    fit_batch(backend, problem, initial, [1e-6, 3e-6, 1e-5], [1000, 950, 1000], **arguments)

    boundaries = []
    previous_mode = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fit_batch(backend, problem, initial, [1e-6, 3e-6, 1e-5], [1000, 950, 1000],
                      on_chunk=lambda report: boundaries.append(len(syncs(caught))), **arguments)
        finally:
            torch.cuda.set_sync_debug_mode(previous_mode)
    total = len(syncs(caught))

    assert len(boundaries) == 11  # losses of steps 0..1000: ten chunks of 100 and one of 1
    for start, end in zip(boundaries, boundaries[1:], strict=False):
        assert end - start == 1
    # After the last chunk: the final and the last finite weights.
    assert total - boundaries[-1] == 2


def syncs(caught) -> list:
    return [warning for warning in caught if "synchronizing" in str(warning.message)]


def test_cuda_65536_points_within_second():
    # NOTE: the engine keeps every loss on the host, 65,536 x 2001 float64 values (about
    # 1 GB), so host memory traffic rather than the GPU may decide whether this passes.
    problem = seed_problem("float32")
    rates = np.repeat(np.geomspace(1e-8, 3e-6, 256), 256)
    initial = np.array([start_values(seed) for seed in range(256)] * 256)
    iterations = np.full(len(rates), 2000)
    arguments = dict(dtype="float32", device="cuda", log_every=100)
    fit_batch("torch", problem, initial, rates, np.full(len(rates), 200), **arguments)  # warm-up

    began = time.perf_counter()
    fit = fit_batch("torch", problem, initial, rates, iterations, **arguments)
    seconds = time.perf_counter() - began

    assert (fit.diverged_at < 0).all()
    assert seconds < 1.0, (
        f"65,536 points took {seconds:.2f} s, of which the engine loop {fit.fit_seconds:.2f} s")


def test_cuda_batch_matches_numpy_in_float64():
    problem = seed_problem("float64")
    initial = np.array([start_values(seed) for seed in range(4)])
    rates, iterations = [1e-6, 3e-6, 1e-5, 2e-6], [2000, 1500, 2000, 700]

    on_gpu = fit_batch("torch", problem, initial, rates, iterations, dtype="float64",
                       device="cuda")
    on_cpu = fit_batch("numpy", problem, initial, rates, iterations, dtype="float64")

    assert on_gpu.diverged_at.tolist() == on_cpu.diverged_at.tolist()
    for gpu_losses, cpu_losses in zip(on_gpu.losses, on_cpu.losses, strict=True):
        finite = np.isfinite(cpu_losses)
        assert np.array_equal(np.isfinite(gpu_losses), finite)
        assert np.max(np.abs(gpu_losses[finite] - cpu_losses[finite])
                      / cpu_losses[finite]) < 1e-12
    scale = np.max(np.abs(on_cpu.coefficients), axis=1)
    assert np.all(np.max(np.abs(on_gpu.coefficients - on_cpu.coefficients), axis=1) / scale
                  < 1e-12)
