"""Array operations of the engine on numpy, the CPU backend that needs no torch."""

import numpy as np

from cubicfit.backends.gather import WeightGatherer


class NumpyOps:
    def __init__(self, dtype: str):
        self.dtype = np.dtype(dtype)

    def constant(self, array):
        return np.array(array, dtype=self.dtype)

    def index_array(self, values):
        return np.asarray(list(values) if isinstance(values, range) else values, dtype=np.int64)

    def bool_zeros(self, size):
        return np.zeros(size, dtype=bool)

    def copy(self, array):
        return array.copy()

    def clip(self, array, low, high):
        return np.clip(array, low, high)

    def where(self, condition, when_true, when_false):
        return np.where(condition, when_true, when_false)

    def isfinite(self, array):
        return np.isfinite(array)

    def first_true(self, mask):
        return mask.any(axis=0), mask.argmax(axis=0)

    def to_host(self, array):
        return np.array(array, dtype=np.float64)

    def make_gatherer(self, error, iterations, start_step):
        return WeightGatherer(self, error, iterations, start_step)

    def run_chunk(self, error, gram, neg_two_lr, steps, gatherer, chunk_start):
        """Run `steps` steps from `error`; return the new error and the (steps, B) loss excess."""
        size = error.shape[0]
        trajectory = np.empty((steps + 1, size, 4), dtype=self.dtype)
        losses = np.empty((steps, size), dtype=self.dtype)
        gradient = np.empty((size, 4), dtype=self.dtype)
        trajectory[0] = error
        # Diverging members overflow to inf and nan by design; they are detected from the losses.
        with np.errstate(over="ignore", invalid="ignore"):
            for k in range(steps):
                current = trajectory[k]
                np.matmul(current, gram, out=gradient)
                np.vecdot(current, gradient, out=losses[k])
                np.multiply(gradient, neg_two_lr, out=gradient)
                np.add(current, gradient, out=trajectory[k + 1])
            gatherer.update(trajectory, losses, chunk_start)
        return trajectory[steps], losses
