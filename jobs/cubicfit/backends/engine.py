"""The batched gradient-descent loop shared by every backend.

A batch is B independent fits of the same problem (same data, dtype and
device), each with its own start values, learning rate and iteration count.
The state is E = W - w* (shape B x 4); one step is

    GE   = E @ G                      (G = XᵀX, shared by the batch)
    loss = L* + rowwise E · GE        (the sum of squared errors)
    E   <- E - 2 lr * GE              (plain gradient descent)

so a member never depends on the others, and a batch of one is a solo run.

The loop runs in chunks of `log_every` steps. Inside a chunk it never reads
anything back to the host: weights and losses are written into preallocated
device buffers. At the end of a chunk the backend copies the loss buffer to
the host once; everything else (which member diverged where, which weights
to keep) is either decided from that copy or gathered on the device.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cubicfit.problem import Problem


@dataclass
class ChunkReport:
    """Progress report passed to the caller after each chunk."""

    step_end: int  # first step not yet run
    losses: np.ndarray  # (B, steps in chunk) losses of the chunk, float64
    elapsed: float  # seconds since the loop started
    active: np.ndarray  # (B,) bool: members still running
    read_weights: Callable[[], np.ndarray]  # current weights W (B, 4), at step_end
    # (step, E) to resume from: the error state at step_end - 1, read with one extra host copy.
    read_resume_state: Callable[[], tuple[int, np.ndarray]]


@dataclass
class BatchFit:
    """Per-member outcome of a batch; losses[i] covers steps start_step .. last step evaluated."""

    losses: list[np.ndarray]
    coefficients: np.ndarray  # (B, 4) float64: final weights, or the last finite-loss weights
    final_losses: np.ndarray  # (B,) loss of the final weights; nan when diverged
    diverged_at: np.ndarray  # (B,) first step with a non-finite loss, or -1
    fit_seconds: float
    stopped_at: int | None = None  # first step not run when the caller asked to stop early
    resume_state: tuple[int, np.ndarray] | None = None  # (step, E) to resume from, when stopped
    iterations: np.ndarray | None = None  # (B,) requested steps per member

    def is_complete(self, index: int) -> bool:
        """Return whether member `index` finished or diverged (always, unless stopped early)."""
        return self.stopped_at is None or self.diverged_at[index] >= 0 or (
            self.iterations[index] < self.stopped_at)


def fit_batch(
    backend: str,
    problem: Problem,
    initial: np.ndarray,
    learning_rates: np.ndarray,
    iterations: np.ndarray,
    *,
    dtype: str,
    device: str = "cpu",
    log_every: int = 100,
    start_step: int = 0,
    initial_error: np.ndarray | None = None,
    on_chunk: Callable[[ChunkReport], bool | None] | None = None,
) -> BatchFit:
    """Run a batch from `initial` (weights at `start_step`) until every member finished or diverged.

    Member i evaluates losses for steps start_step .. iterations[i]; the loss at
    step iterations[i] is that of its final weights. `initial_error`, when given,
    is the exact error state E = W - w* from a checkpoint and replaces `initial`.
    When `on_chunk` returns True the loop stops after that chunk and the result
    carries `stopped_at` and the state to resume from.
    """
    ops = _make_ops(backend, dtype, device)
    initial = np.asarray(initial, dtype=np.float64).reshape(-1, 4)
    learning_rates = np.asarray(learning_rates, dtype=np.float64).reshape(-1)
    iterations = np.asarray(iterations, dtype=np.int64).reshape(-1)
    size = len(initial)
    last_step = int(iterations.max())
    if start_step > last_step:
        raise ValueError(f"start_step {start_step} is past the last step {last_step}")

    gram = ops.constant(problem.gram)
    start_error = initial - problem.optimum if initial_error is None else initial_error
    error = ops.constant(start_error)
    neg_two_lr = ops.constant(-2.0 * learning_rates).reshape(size, 1)
    gather = ops.make_gatherer(error, iterations, start_step)

    host_losses = np.full((size, last_step - start_step + 1), np.nan)
    diverged_at = np.full(size, -1, dtype=np.int64)
    active = np.ones(size, dtype=bool)
    began = time.perf_counter()

    step = start_step
    stopped_at = None
    while step <= last_step and active.any():
        # Chunks end on multiples of log_every, so a resumed run chunks like an uninterrupted one.
        chunk_end = min((step // log_every + 1) * log_every, last_step + 1)
        error, losses = ops.run_chunk(error, gram, neg_two_lr, chunk_end - step, gather, step)
        losses = ops.to_host(losses) + problem.optimal_loss  # the one host read per chunk
        host_losses[:, step - start_step:chunk_end - start_step] = losses.T

        steps = np.arange(step, chunk_end)
        relevant = steps[None, :] <= iterations[:, None]
        bad = ~np.isfinite(losses.T) & relevant
        newly = bad.any(axis=1) & (diverged_at < 0)
        diverged_at[newly] = step + bad[newly].argmax(axis=1)
        active &= (diverged_at < 0) & (iterations >= chunk_end)
        step = chunk_end
        if on_chunk is not None:
            current = error

            def resume_state(previous=gather.before_chunk, at=step - 1):
                return at, ops.to_host(previous)

            stop = on_chunk(ChunkReport(
                step_end=step,
                losses=losses.T,
                elapsed=time.perf_counter() - began,
                active=active.copy(),
                read_weights=lambda current=current: ops.to_host(current) + problem.optimum,
                read_resume_state=resume_state,
            ))
            if stop and step <= last_step and active.any():
                stopped_at = step
                break

    finals, last_finite = gather.result()
    fit_seconds = time.perf_counter() - began

    coefficients = np.where((diverged_at >= 0)[:, None], last_finite, finals) + problem.optimum
    member_losses = []
    final_losses = np.full(size, np.nan)
    for index in range(size):
        end = diverged_at[index] if diverged_at[index] >= 0 else iterations[index]
        if stopped_at is not None and diverged_at[index] < 0 and end >= stopped_at:
            # Unfinished: keep the losses before the resume step, which recomputes its own.
            end = stopped_at - 2
        member_losses.append(host_losses[index, :end - start_step + 1].copy())
        if diverged_at[index] < 0 and end == iterations[index]:
            final_losses[index] = host_losses[index, end - start_step]
    resume = None
    if stopped_at is not None:
        resume = (stopped_at - 1, ops.to_host(gather.before_chunk))
    return BatchFit(member_losses, coefficients, final_losses, diverged_at, fit_seconds,
                    stopped_at, resume, iterations)


def _make_ops(backend: str, dtype: str, device: str):
    if backend == "numpy":
        from cubicfit.backends.numpy_ops import NumpyOps

        return NumpyOps(dtype)
    from cubicfit.backends.torch_ops import TorchOps

    return TorchOps(dtype, device, autograd=backend == "torch-autograd")
