"""The data, the normal equations and the reference numbers of one fitting problem.

Gradient descent on the sum of squared errors of a + b x + c x^2 + d x^3 uses
the data only through G = XᵀX and Xᵀy, where X has the columns 1, x, x^2, x^3.
With the closed-form optimum w* and its loss L*, the loss of any w is exactly
L* + (w - w*)ᵀ G (w - w*) and its gradient is 2 G (w - w*). The backends step
in that error form: it costs O(1) per step instead of O(n_points), and it
stays accurate near the optimum even in float32, where expanding the square
would subtract numbers about 100 times larger than the loss.
"""

import functools
from dataclasses import dataclass

import numpy as np

TARGET_FUNCTIONS = {"sin": np.sin, "cos": np.cos, "tanh": np.tanh, "exp": np.exp}


@dataclass(frozen=True)
class Problem:
    x: np.ndarray  # sample points, in the fit's dtype
    y: np.ndarray  # target(x), in the fit's dtype
    gram: np.ndarray  # XᵀX, float64, shape (4, 4)
    optimum: np.ndarray  # closed-form least-squares coefficients [a, b, c, d], float64
    optimal_loss: float  # sum of squared errors at the optimum
    stability_bound: float  # largest stable learning rate, 1 / max eigenvalue of XᵀX

    def loss_of(self, coefficients) -> float:
        """Return the sum of squared errors of `coefficients`, evaluated on the data in float64."""
        x = self.x.astype(np.float64)
        a, b, c, d = (float(value) for value in coefficients)
        residual = a + x * (b + x * (c + x * d)) - self.y.astype(np.float64)
        return float(residual @ residual)


@functools.lru_cache(maxsize=16)
def build_problem(n_points: int, x_min: float, x_max: float, target: str, dtype: str) -> Problem:
    """Sample the target on a uniform grid in `dtype` and solve the least-squares reference."""
    x = np.linspace(x_min, x_max, n_points, dtype=np.float64).astype(dtype)
    y = TARGET_FUNCTIONS[target](x).astype(dtype)

    # The reference numbers are computed in float64 from the dtype's samples.
    x64 = x.astype(np.float64)
    y64 = y.astype(np.float64)
    design = np.vander(x64, 4, increasing=True)
    gram = design.T @ design
    optimum, *_ = np.linalg.lstsq(design, y64, rcond=None)
    residual = design @ optimum - y64
    optimal_loss = float(residual @ residual)
    # The loss has Hessian 2 XᵀX, and gradient descent converges iff lr < 2 / max eigenvalue of it.
    stability_bound = 1.0 / float(np.linalg.eigvalsh(gram)[-1])

    for array in (x, y, gram, optimum):
        array.setflags(write=False)
    return Problem(x, y, gram, optimum, optimal_loss, stability_bound)


def start_values(seed: int) -> np.ndarray:
    """Draw [a, b, c, d] from N(0, 1) with `seed`; every backend starts from the same values."""
    return np.random.default_rng(seed).standard_normal(4)
