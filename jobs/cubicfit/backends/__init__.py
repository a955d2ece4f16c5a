"""Gradient-descent backends: one batched loop, run on numpy or torch arrays."""

from cubicfit.backends.engine import BatchFit, ChunkReport, fit_batch

__all__ = ["BatchFit", "ChunkReport", "fit_batch"]
