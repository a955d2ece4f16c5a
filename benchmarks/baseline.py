"""The per-point gradient-descent loops that cubicfit replaces: the benchmark's baseline.

Each step evaluates the cubic on every sample point, then the sum-of-squares
loss, the gradient of the prediction, four gradient sums (computing x**2 and
x**3 again each time) and four updates, all in plain numpy or torch. The torch
loop reads its loss back with `.item()` on every step. These are the classic
numpy and PyTorch teaching examples, written out again so that the benchmark
times the product against the same algorithm on the same data.

Both loops return the losses of steps 0..steps (the last one is the loss of the
final coefficients, as cubicfit reports it) and the final [a, b, c, d].

As a script it runs one fit and prints the fitted polynomial, so that
`make bench` can time it as a whole process next to `cubicfit run`:

    python benchmarks/baseline.py --backend numpy --init 0.1,-0.2,0.3,0.4
"""

import argparse
import math

N_POINTS = 2000
X_MIN, X_MAX = -math.pi, math.pi


def numpy_loop(start, steps: int, learning_rate: float):
    """Run the numpy loop in float64 from `start`; return (losses, coefficients)."""
    import numpy as np

    x = np.linspace(X_MIN, X_MAX, N_POINTS)
    y = np.sin(x)
    a, b, c, d = (float(value) for value in start)

    losses = []
    for _ in range(steps):
        y_pred = a + b * x + c * x**2 + d * x**3
        loss = np.square(y_pred - y).sum()
        losses.append(loss)

        grad_y_pred = 2.0 * (y_pred - y)
        grad_a = grad_y_pred.sum()
        grad_b = (grad_y_pred * x).sum()
        grad_c = (grad_y_pred * x**2).sum()
        grad_d = (grad_y_pred * x**3).sum()

        a -= learning_rate * grad_a
        b -= learning_rate * grad_b
        c -= learning_rate * grad_c
        d -= learning_rate * grad_d

    y_pred = a + b * x + c * x**2 + d * x**3
    losses.append(np.square(y_pred - y).sum())
    return np.array(losses, dtype=np.float64), np.array([a, b, c, d], dtype=np.float64)


def torch_loop(start, steps: int, learning_rate: float, dtype: str = "float32",
               device: str = "cpu"):
    """Run the torch loop from `start`, reading the loss with `.item()` on every step.

    Return (losses, coefficients) like numpy_loop.
    """
    import numpy as np
    import torch

    torch_dtype = getattr(torch, dtype)
    x = torch.linspace(X_MIN, X_MAX, N_POINTS, dtype=torch_dtype, device=device)
    y = torch.sin(x)
    a, b, c, d = (torch.tensor(float(value), dtype=torch_dtype, device=device)
                  for value in start)

    losses = []
    for _ in range(steps):
        y_pred = a + b * x + c * x**2 + d * x**3
        loss = (y_pred - y).pow(2).sum().item()
        losses.append(loss)

        grad_y_pred = 2.0 * (y_pred - y)
        grad_a = grad_y_pred.sum()
        grad_b = (grad_y_pred * x).sum()
        grad_c = (grad_y_pred * x**2).sum()
        grad_d = (grad_y_pred * x**3).sum()

        a -= learning_rate * grad_a
        b -= learning_rate * grad_b
        c -= learning_rate * grad_c
        d -= learning_rate * grad_d

    y_pred = a + b * x + c * x**2 + d * x**3
    losses.append((y_pred - y).pow(2).sum().item())
    coefficients = [a.item(), b.item(), c.item(), d.item()]
    return np.array(losses, dtype=np.float64), np.array(coefficients, dtype=np.float64)


def run_loop(backend: str, start, steps: int, learning_rate: float, dtype: str, device: str):
    """Run the baseline loop of `backend` ("numpy" or "torch"); return (losses, coefficients)."""
    if backend == "numpy":
        if dtype != "float64" or device != "cpu":
            raise ValueError(f"the numpy baseline runs in float64 on the cpu, not {dtype} "
                             f"on {device}")
        return numpy_loop(start, steps, learning_rate)
    if backend == "torch":
        return torch_loop(start, steps, learning_rate, dtype, device)
    raise ValueError(f"unknown baseline backend {backend!r}; use numpy or torch")


def main() -> None:
    parser = argparse.ArgumentParser(description="Run one fit with the per-point baseline loop.")
    parser.add_argument("--backend", choices=("numpy", "torch"), default="numpy",
                        help="array library of the loop (default: numpy)")
    parser.add_argument("--dtype", default=None,
                        help="float32 or float64 (default: float64 for numpy, float32 for torch)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--init", required=True, help="start values a,b,c,d")
    parser.add_argument("--steps", type=int, default=2000, help="steps (default: 2000)")
    parser.add_argument("--learning-rate", type=float, default=1e-6,
                        help="learning rate (default: 1e-6)")
    args = parser.parse_args()

    dtype = args.dtype or ("float64" if args.backend == "numpy" else "float32")
    start = [float(value) for value in args.init.split(",")]
    _, (a, b, c, d) = run_loop(args.backend, start, args.steps, args.learning_rate, dtype,
                               args.device)
    print(f"Result: y = {a} + {b} x + {c} x^2 + {d} x^3")


if __name__ == "__main__":
    main()
