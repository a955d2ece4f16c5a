import math

import numpy as np
import pytest

from cubicfit.problem import build_problem, start_values


def test_default_problem_reference_numbers():
    problem = build_problem(2000, -math.pi, math.pi, "sin", "float64")

    assert problem.optimal_loss == pytest.approx(8.8172, abs=5e-5)
    assert problem.optimum[1] == pytest.approx(0.85674, abs=5e-6)
    assert problem.optimum[3] == pytest.approx(-0.09333, abs=5e-6)
    assert abs(problem.optimum[0]) < 1e-12
    assert abs(problem.optimum[2]) < 1e-12
    assert problem.stability_bound == pytest.approx(3.56e-6, rel=1e-3)


def test_optimal_loss_matches_direct_evaluation():
    problem = build_problem(2000, -math.pi, math.pi, "sin", "float64")

    assert problem.loss_of(problem.optimum) == pytest.approx(problem.optimal_loss, rel=1e-12)


def test_stability_bound_separates_convergence():
    from cubicfit.backends import fit_batch

    problem = build_problem(2000, -math.pi, math.pi, "sin", "float64")
    bound = problem.stability_bound
    start = np.array([start_values(0)] * 2)
    fit = fit_batch("numpy", problem, start, [0.99 * bound, 1.01 * bound], [20_000, 20_000],
                    dtype="float64", log_every=1000)

    assert fit.diverged_at[0] == -1
    assert fit.diverged_at[1] > 0


def test_start_values_are_seeded():
    np.testing.assert_array_equal(start_values(7), start_values(7))
    assert not np.array_equal(start_values(7), start_values(8))
