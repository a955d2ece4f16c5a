"""Array operations of the engine on torch tensors, on the CPU or a CUDA device.

Inside `run_chunk` nothing is read back to the host: every operation writes
into a preallocated tensor with `out=`, so on CUDA the whole chunk is queued
without a synchronization. `to_host` is the only place where values cross to
the host, and the engine calls it once per chunk.
"""

import numpy as np
import torch

from cubicfit.backends.gather import WeightGatherer


class TorchOps:
    def __init__(self, dtype: str, device: str, autograd: bool = False):
        self.dtype = getattr(torch, dtype)
        self.device = torch.device(device)
        self.autograd = autograd

    def constant(self, array):
        return torch.tensor(np.asarray(array), dtype=self.dtype, device=self.device)

    def index_array(self, values):
        # A range is built on the device: torch.tensor copies from pageable host memory, and on
        # CUDA that copy waits for the stream, so once per chunk it would add a synchronization.
        if isinstance(values, range):
            return torch.arange(values.start, values.stop, values.step, dtype=torch.int64,
                                device=self.device)
        return torch.tensor(np.asarray(values), dtype=torch.int64, device=self.device)

    def bool_zeros(self, size):
        return torch.zeros(size, dtype=torch.bool, device=self.device)

    def copy(self, tensor):
        return tensor.clone()

    def clip(self, tensor, low, high):
        return torch.clamp(tensor, low, high)

    def where(self, condition, when_true, when_false):
        return torch.where(condition, when_true, when_false)

    def isfinite(self, tensor):
        return torch.isfinite(tensor)

    def first_true(self, mask):
        # argmax returns the first index of the maximum, so the first True of each column.
        return mask.any(dim=0), mask.to(torch.uint8).argmax(dim=0)

    def to_host(self, tensor):
        return tensor.detach().to(device="cpu", dtype=torch.float64).numpy()

    def make_gatherer(self, error, iterations, start_step):
        return WeightGatherer(self, error, iterations, start_step)

    def run_chunk(self, error, gram, neg_two_lr, steps, gatherer, chunk_start):
        """Run `steps` steps from `error`; return the new error and the (steps, B) loss excess."""
        size = error.shape[0]
        trajectory = torch.empty((steps + 1, size, 4), dtype=self.dtype, device=self.device)
        losses = torch.empty((steps, size), dtype=self.dtype, device=self.device)
        trajectory[0].copy_(error)
        if self.autograd:
            self._autograd_steps(trajectory, losses, gram, neg_two_lr / 2, steps)
        else:
            with torch.no_grad():
                gradient = torch.empty((size, 4), dtype=self.dtype, device=self.device)
                for k in range(steps):
                    current = trajectory[k]
                    torch.mm(current, gram, out=gradient)
                    torch.linalg.vecdot(current, gradient, out=losses[k])
                    torch.addcmul(current, gradient, neg_two_lr, out=trajectory[k + 1])
        with torch.no_grad():
            gatherer.update(trajectory, losses, chunk_start)
        return trajectory[steps], losses

    @staticmethod
    def _autograd_steps(trajectory, losses, gram, neg_lr, steps):
        """Take the same steps with the gradient from loss.backward() instead of 2 G E."""
        for k in range(steps):
            current = trajectory[k].detach().requires_grad_(True)
            excess = ((current @ gram) * current).sum(dim=1)
            excess.sum().backward()
            with torch.no_grad():
                losses[k].copy_(excess)
                torch.addcmul(current, current.grad, neg_lr, out=trajectory[k + 1])
