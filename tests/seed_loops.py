"""Plain transcriptions of the per-point gradient-descent loops that cubicfit replaces.

They work on every sample in every step, exactly like the classic numpy and
PyTorch examples, and serve as the reference trajectory in tests.
"""

import math

import numpy as np


def numpy_loop(start, steps, learning_rate, dtype=np.float64, n_points=2000):
    """Return (losses for steps 0..steps, final coefficients) of the per-point numpy loop."""
    x = np.linspace(-math.pi, math.pi, n_points).astype(dtype)
    y = np.sin(x)
    a, b, c, d = (dtype(value) for value in start)
    rate = dtype(learning_rate)
    losses = []
    with np.errstate(over="ignore", invalid="ignore"):
        for step in range(steps + 1):
            prediction = a + b * x + c * x**2 + d * x**3
            losses.append(float(np.square(prediction - y).sum()))
            if step == steps:
                break
            gradient = 2.0 * (prediction - y)
            a = a - rate * gradient.sum()
            b = b - rate * (gradient * x).sum()
            c = c - rate * (gradient * x**2).sum()
            d = d - rate * (gradient * x**3).sum()
    return np.array(losses), np.array([a, b, c, d], dtype=np.float64)


def torch_loop(start, steps, learning_rate, dtype="float32", n_points=2000):
    """Return (losses for steps 0..steps, final coefficients) of the per-point torch loop."""
    import torch

    torch_dtype = getattr(torch, dtype)
    x = torch.linspace(-math.pi, math.pi, n_points, dtype=torch_dtype)
    y = torch.sin(x)
    a, b, c, d = (torch.tensor(float(value), dtype=torch_dtype) for value in start)
    losses = []
    for step in range(steps + 1):
        prediction = a + b * x + c * x**2 + d * x**3
        losses.append((prediction - y).pow(2).sum().item())
        if step == steps:
            break
        gradient = 2.0 * (prediction - y)
        a = a - learning_rate * gradient.sum()
        b = b - learning_rate * (gradient * x).sum()
        c = c - learning_rate * (gradient * x**2).sum()
        d = d - learning_rate * (gradient * x**3).sum()
    return np.array(losses), np.array([a.item(), b.item(), c.item(), d.item()])
