"""A member of a batch gets the numbers and the status it would get in a run of its own."""

import json
import math

import numpy as np
import pytest

from cubicfit.backends import fit_batch
from cubicfit.config import build_config
from cubicfit.problem import build_problem, start_values
from cubicfit.runner import execute
from cubicfit.storage.local import LocalStore
from seed_loops import numpy_loop

STABILITY_BOUND = 3.56e-6  # about 1 / largest eigenvalue of XᵀX for the default problem

# (learning rate, iterations, seed): stable rates, rates above the bound that diverge within
# their iterations, and rates above the bound whose runs end before the loss overflows.
MEMBERS = [
    (1e-7, 2000, 0),
    (5e-7, 150, 1),
    (1e-6, 1999, 2),
    (2e-6, 777, 3),
    (3e-6, 2000, 4),
    (3.5e-6, 1234, 5),
    (3.6e-6, 2000, 6),  # above the bound, but grows too slowly to overflow in 2000 steps
    (4e-6, 1900, 7),  # diverges late
    (5e-6, 300, 8),  # above the bound, ends before it overflows
    (1e-5, 2000, 9),  # diverges
    (2e-5, 64, 10),  # above the bound, ends before it overflows
    (1e-4, 2000, 11),  # diverges early
    (1e-6, 5, 12),  # shorter than one chunk
]
TOLERANCE = 1e-9


def problem():
    return build_problem(2000, -math.pi, math.pi, "sin", "float64")


def member_arrays():
    rates = np.array([rate for rate, _, _ in MEMBERS])
    iterations = np.array([steps for _, steps, _ in MEMBERS])
    initial = np.array([start_values(seed) for _, _, seed in MEMBERS])
    return initial, rates, iterations


def relative_error(actual, expected):
    return np.max(np.abs(actual - expected) / np.abs(expected))


def vector_error(actual, expected):
    """Return the largest difference relative to the largest coefficient of `expected`."""
    return np.max(np.abs(actual - expected)) / np.max(np.abs(expected))


@pytest.mark.parametrize("log_every", [100, 37])
@pytest.mark.parametrize("backend", ["numpy", "torch", "torch-autograd"])
def test_batch_member_equals_solo_run(backend, log_every):
    if backend != "numpy":
        pytest.importorskip("torch")
    initial, rates, iterations = member_arrays()
    batch = fit_batch(backend, problem(), initial, rates, iterations, dtype="float64",
                      log_every=log_every)

    for index in range(len(MEMBERS)):
        solo = fit_batch(backend, problem(), initial[index:index + 1], rates[index:index + 1],
                         iterations[index:index + 1], dtype="float64", log_every=log_every)
        member, alone = batch.losses[index], solo.losses[0]

        assert batch.diverged_at[index] == solo.diverged_at[0], MEMBERS[index]
        assert len(member) == len(alone), MEMBERS[index]
        finite = np.isfinite(alone)
        assert np.array_equal(np.isfinite(member), finite), MEMBERS[index]
        assert relative_error(member[finite], alone[finite]) < TOLERANCE, MEMBERS[index]
        assert vector_error(batch.coefficients[index], solo.coefficients[0]) < TOLERANCE, (
            MEMBERS[index])
        assert np.array_equal(np.isnan(batch.final_losses[index:index + 1]),
                              np.isnan(solo.final_losses[:1])), MEMBERS[index]


def expected_divergence(rate, steps, seed) -> int:
    """Return the first step with a non-finite loss in the per-point loop, or -1."""
    if rate < STABILITY_BOUND:
        return -1
    losses, _ = numpy_loop(start_values(seed), steps, rate)
    finite = np.isfinite(losses)
    return -1 if finite.all() else int(np.argmax(~finite))


def test_batch_divergence_steps_match_seed_loop():
    initial, rates, iterations = member_arrays()
    batch = fit_batch("numpy", problem(), initial, rates, iterations, dtype="float64")

    expected = [expected_divergence(*member) for member in MEMBERS]

    assert batch.diverged_at.tolist() == expected
    # The table must exercise both outcomes above the bound.
    assert sum(step >= 0 for step in expected) >= 3
    finite_above_bound = [step < 0 and rate > STABILITY_BOUND
                          for step, (rate, _, _) in zip(expected, MEMBERS, strict=True)]
    assert sum(finite_above_bound) >= 3


def test_batched_runs_record_solo_results(tmp_path):
    configs = [build_config({"learning_rate": rate, "iterations": steps, "seed": seed,
                             "output": str(tmp_path)}) for rate, steps, seed in MEMBERS]
    store = LocalStore(str(tmp_path))
    outcomes = execute(configs, store)
    initial, rates, iterations = member_arrays()

    for index, outcome in enumerate(outcomes):
        solo = fit_batch("numpy", problem(), initial[index:index + 1], rates[index:index + 1],
                         iterations[index:index + 1], dtype="float64")
        diverged = solo.diverged_at[0] >= 0
        with open(tmp_path / "runs" / outcome.config.run_id / "result.json") as stream:
            result = json.load(stream)

        assert result["status"] == ("diverged" if diverged else "succeeded"), MEMBERS[index]
        assert result["batch_size"] == len(MEMBERS)
        assert result["diverged_at_step"] == (int(solo.diverged_at[0]) if diverged else None)
        coefficients = np.array(list(result["coefficients"].values()))
        assert vector_error(coefficients, solo.coefficients[0]) < TOLERANCE, MEMBERS[index]
        if not diverged:
            assert result["final_loss"] == pytest.approx(solo.final_losses[0], rel=TOLERANCE)
