"""fit.png for each run: the target against the fitted cubic, and the loss per step.

A sweep draws hundreds of these, so the figure is set up once per batch with
shared axes and only the run's own lines and title are redrawn on a cached
background (matplotlib blitting). Runs of one batch therefore share axis
limits, which also makes their plots comparable at a glance.
"""

import io

import numpy as np

MAX_PLOT_POINTS = 2000  # per curve; longer curves are thinned evenly for drawing


def _thin(count: int) -> np.ndarray:
    if count <= MAX_PLOT_POINTS:
        return np.arange(count)
    indices = np.linspace(0, count - 1, MAX_PLOT_POINTS).round().astype(np.int64)
    return np.unique(indices)


class FitPlotter:
    """Draw fit.png for runs that share one problem; build once, call `render` per run."""

    def __init__(self, problem, target: str, max_steps: int, loss_range: tuple[float, float]):
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D

        self.figure = Figure(figsize=(10, 4), dpi=100)
        self.canvas = FigureCanvasAgg(self.figure)
        fit_axes, loss_axes = self.figure.subplots(1, 2)
        self.figure.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.84, wspace=0.25)

        keep = _thin(len(problem.x))
        x = problem.x[keep].astype(np.float64)
        y = problem.y[keep].astype(np.float64)
        self.curve_x = np.linspace(x[0], x[-1], 400)
        optimum = np.polynomial.polynomial.polyval(self.curve_x, problem.optimum)
        fit_axes.plot(x, y, color="0.55", linewidth=3, label=f"target {target}(x)")
        fit_axes.plot(self.curve_x, optimum, color="tab:green", linestyle="--", linewidth=1,
                      label="least-squares optimum")
        span = float(y.max() - y.min()) or 1.0
        fit_axes.set_ylim(float(y.min()) - 0.3 * span, float(y.max()) + 0.3 * span)
        fit_axes.set_xlim(x[0], x[-1])
        fit_axes.set_xlabel("x")
        fit_axes.set_ylabel("y")
        fit_axes.set_title("target and fitted cubic")
        fit_axes.grid(alpha=0.3)
        handles, labels = fit_axes.get_legend_handles_labels()
        handles.append(Line2D([], [], color="tab:blue", linewidth=1.5))
        labels.append("gradient-descent fit")
        fit_axes.legend(handles, labels, loc="upper left", fontsize=8)

        loss_axes.set_yscale("log")
        loss_axes.set_xlim(0, max(max_steps, 1))
        low, high = loss_range
        loss_axes.set_ylim(low, high)
        loss_axes.axhline(problem.optimal_loss, color="tab:green", linestyle="--", linewidth=1,
                          label=f"optimum {problem.optimal_loss:.4g}")
        loss_axes.set_xlabel("step")
        loss_axes.set_ylabel("loss (sum of squared errors)")
        loss_axes.set_title("loss per step (log scale)")
        loss_axes.grid(alpha=0.3, which="both")
        loss_axes.legend(loc="upper right", fontsize=8)

        self.fit_line = fit_axes.plot([], [], color="tab:blue", linewidth=1.5, animated=True)[0]
        self.loss_line = loss_axes.plot([], [], color="tab:red", linewidth=1.2, animated=True)[0]
        self.title = self.figure.text(0.5, 0.95, "", ha="center", va="center", fontsize=10,
                                      animated=True)
        self.fit_axes, self.loss_axes = fit_axes, loss_axes
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(self.figure.bbox)

    def render(self, coefficients, losses: np.ndarray, start_step: int, title: str) -> bytes:
        """Return the PNG bytes of one run's plot."""
        from PIL import Image

        self.canvas.restore_region(self.background)
        self.fit_line.set_data(self.curve_x, np.polynomial.polynomial.polyval(self.curve_x,
                                                                              coefficients))
        finite = np.isfinite(losses)
        keep = _thin(len(losses))
        keep = keep[finite[keep]]
        self.loss_line.set_data(start_step + keep, losses[keep])
        self.title.set_text(title)
        self.fit_axes.draw_artist(self.fit_line)
        self.loss_axes.draw_artist(self.loss_line)
        self.figure.draw_artist(self.title)
        pixels = np.asarray(self.canvas.buffer_rgba())[:, :, :3]
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()


def loss_range_of(loss_arrays) -> tuple[float, float]:
    """Return log-axis limits that show every finite loss up to 10x the largest start loss."""
    finite = [values[np.isfinite(values)] for values in loss_arrays]
    finite = [values for values in finite if len(values)]
    if not finite:
        return 1e-3, 1e3
    low = min(float(values.min()) for values in finite)
    high = max(float(values[0]) for values in finite)
    low = max(low, 1e-300) / 2
    return low, max(high * 10, low * 100)
