"""Keep each member's final and last-finite weights on the device while the batch runs.

The host learns of a divergence only at the end of a chunk, when the weights
of that step have been overwritten. So after every chunk the device picks,
from the chunk's weight trajectory, the weights each member needs: those at
step `iterations[i]` (the final weights), and those one step before the first
non-finite loss (the last finite fit). It uses only device operations, so it
adds no host read.
"""


class WeightGatherer:
    def __init__(self, ops, error, iterations, start_step: int):
        self.ops = ops
        self.iterations = ops.index_array(iterations)
        self.members = ops.index_array(range(len(iterations)))
        self.finals = ops.copy(error)
        self.last_finite = ops.copy(error)
        self.before_chunk = ops.copy(error)  # weights one step before the chunk, or the start
        self.diverged = ops.bool_zeros(len(iterations))

    def update(self, trajectory, losses, chunk_start: int) -> None:
        """Record weights from one chunk.

        `trajectory` contains steps chunk_start .. chunk_start + n and `losses` the n losses.
        """
        ops = self.ops
        steps = len(losses)

        rows = self.iterations - chunk_start
        ends_here = (rows >= 0) & (rows <= steps)
        picked = trajectory[ops.clip(rows, 0, steps), self.members]
        self.finals = ops.where(ends_here[:, None], picked, self.finals)

        step_numbers = ops.index_array(range(chunk_start, chunk_start + steps))
        bad = ~ops.isfinite(losses) & (step_numbers[:, None] <= self.iterations[None, :])
        has_bad, first_bad = ops.first_true(bad)
        newly = has_bad & ~self.diverged
        previous = trajectory[ops.clip(first_bad - 1, 0, steps), self.members]
        candidate = ops.where((first_bad == 0)[:, None], self.before_chunk, previous)
        self.last_finite = ops.where(newly[:, None], candidate, self.last_finite)
        self.diverged = self.diverged | newly
        self.before_chunk = ops.copy(trajectory[steps - 1])

    def result(self):
        """Return (final weights, last finite weights) as host arrays of errors W - w*."""
        return self.ops.to_host(self.finals), self.ops.to_host(self.last_finite)
