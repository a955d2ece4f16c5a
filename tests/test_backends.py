import math

import numpy as np
import pytest

from cubicfit.backends import fit_batch
from cubicfit.problem import build_problem, start_values
from seed_loops import numpy_loop, torch_loop

BACKENDS = ["numpy", "torch", "torch-autograd"]
TOLERANCE = {"float64": 1e-9, "float32": 1e-4}


def solo(backend, dtype, start, steps=2000, learning_rate=1e-6, log_every=100):
    problem = build_problem(2000, -math.pi, math.pi, "sin", dtype)
    return fit_batch(backend, problem, np.array([start]), [learning_rate], [steps], dtype=dtype,
                     log_every=log_every)


def relative_error(actual, expected):
    return np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), 1e-300))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_trajectory_matches_seed_loop(backend, dtype):
    start = start_values(3)
    if backend == "numpy":
        expected_losses, expected_coefficients = numpy_loop(start, 2000, 1e-6, np.dtype(dtype).type)
    else:
        expected_losses, expected_coefficients = torch_loop(start, 2000, 1e-6, dtype)

    fit = solo(backend, dtype, start)

    assert fit.diverged_at[0] == -1
    assert len(fit.losses[0]) == 2001
    assert relative_error(fit.losses[0], expected_losses) < TOLERANCE[dtype]
    assert relative_error(fit.coefficients[0], expected_coefficients) < TOLERANCE[dtype]
    assert fit.final_losses[0] == fit.losses[0][-1]


def test_numpy_and_torch_agree_in_float64():
    start = start_values(5)
    numpy_fit = solo("numpy", "float64", start)
    torch_fit = solo("torch", "float64", start)
    autograd_fit = solo("torch-autograd", "float64", start)

    assert relative_error(torch_fit.losses[0], numpy_fit.losses[0]) < 1e-12
    assert relative_error(torch_fit.coefficients[0], numpy_fit.coefficients[0]) < 1e-12
    assert relative_error(autograd_fit.coefficients[0], numpy_fit.coefficients[0]) < 1e-12


def test_long_fit_reaches_closed_form_optimum():
    fit = solo("numpy", "float64", start_values(0), steps=200_000, learning_rate=3e-6,
               log_every=10_000)
    problem = build_problem(2000, -math.pi, math.pi, "sin", "float64")

    assert fit.final_losses[0] == pytest.approx(8.8172, abs=1e-4)
    assert fit.final_losses[0] - problem.optimal_loss < 1e-9
    assert fit.coefficients[0] == pytest.approx(problem.optimum, abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_divergence_stops_at_first_nonfinite_step(backend):
    start = start_values(0)
    expected_losses, _ = numpy_loop(start, 400, 1e-5)
    first_bad = int(np.argmax(~np.isfinite(expected_losses)))

    fit = solo(backend, "float64", start, steps=2000, learning_rate=1e-5)

    assert fit.diverged_at[0] == first_bad
    assert len(fit.losses[0]) == first_bad + 1
    assert np.all(np.isfinite(fit.losses[0][:-1]))
    assert not np.isfinite(fit.losses[0][-1])
    assert np.all(np.isfinite(fit.coefficients[0]))
    assert math.isnan(fit.final_losses[0])


def test_diverged_coefficients_are_last_finite_step():
    start = start_values(0)
    fit = solo("numpy", "float64", start, steps=2000, learning_rate=1e-5)
    step = int(fit.diverged_at[0])
    _, before = numpy_loop(start, step - 1, 1e-5)

    # a and c are 1e-16 of the vector's size here, so compare against the largest component.
    scale = np.max(np.abs(before))
    assert np.max(np.abs(fit.coefficients[0] - before)) / scale < 1e-9


def test_chunk_size_does_not_change_results():
    start = start_values(1)
    small = solo("numpy", "float64", start, steps=500, log_every=7)
    large = solo("numpy", "float64", start, steps=500, log_every=1000)

    np.testing.assert_array_equal(small.losses[0], large.losses[0])
    np.testing.assert_array_equal(small.coefficients[0], large.coefficients[0])


def test_resume_from_checkpoint_step_is_exact():
    start = start_values(2)
    problem = build_problem(2000, -math.pi, math.pi, "sin", "float64")
    whole = fit_batch("numpy", problem, np.array([start]), [1e-6], [1000], dtype="float64",
                      log_every=100)
    first = fit_batch("numpy", problem, np.array([start]), [1e-6], [300], dtype="float64",
                      log_every=100)
    rest = fit_batch("numpy", problem, first.coefficients, [1e-6], [1000], dtype="float64",
                     log_every=100, start_step=300)

    np.testing.assert_allclose(rest.losses[0], whole.losses[0][300:], rtol=1e-12)
    np.testing.assert_allclose(rest.coefficients[0], whole.coefficients[0], rtol=1e-12)
