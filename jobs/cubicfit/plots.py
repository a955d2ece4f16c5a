"""fit.png for each run: the target against the fitted cubic, and the loss per step.

A sweep draws hundreds of these, so the figure is set up once per batch with
shared axes and only the run's own lines and title are redrawn on a cached
background (matplotlib blitting). Runs of one batch therefore share axis
limits, which also makes their plots comparable at a glance.

Two per-run steps would cost more than the drawing itself, so both take a
cheaper path to the same picture (times per run on a 2-core AMD EPYC VM with
matplotlib 3.11 and Pillow 13; `make bench` reports the current split):
- matplotlib 3.11 lays out and renders text glyph by glyph in Python, about
  6 ms for the title. Pillow draws it in C from the same font file at the
  same size, in about 0.6 ms; glyph positions may differ by a pixel.
- Pillow's PNG encoder (src/libImaging/ZipEncode.c) tries four row filters
  on every row and keeps the best, about 9 ms for this image. `png_bytes`
  writes the rows unfiltered with zlib level 1, in about 3 ms, and the file
  comes out about as large.
"""

import struct
import zlib

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

        self.figure = Figure(figsize=(10, 4), dpi=80)
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
        # An explicit y skips matplotlib's title placement, which measures every tick label; with
        # no ticks above the axes it would leave the titles at y = 1 anyway.
        fit_axes.set_title("target and fitted cubic", y=1.0)
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
        loss_axes.set_title("loss per step (log scale)", y=1.0)
        loss_axes.grid(alpha=0.3, which="both")
        loss_axes.legend(loc="upper right", fontsize=8)

        self.fit_line = fit_axes.plot([], [], color="tab:blue", linewidth=1.5, animated=True)[0]
        self.loss_line = loss_axes.plot([], [], color="tab:red", linewidth=1.2, animated=True)[0]
        self.fit_axes, self.loss_axes = fit_axes, loss_axes
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(self.figure.bbox)
        self.title_font, self.title_center = self._title_font()

    def _title_font(self):
        """Return the Pillow font of the run title (10 pt) and its centre in pixels."""
        from matplotlib.font_manager import FontProperties, findfont
        from PIL import ImageFont

        properties = FontProperties(size=10)
        size_pixels = properties.get_size_in_points() * self.figure.dpi / 72
        width, height = self.canvas.get_width_height()
        font = ImageFont.truetype(findfont(properties), size=size_pixels)
        return font, (width * 0.5, height * (1 - 0.95))  # centred, at 95% of the height

    def render(self, coefficients, losses: np.ndarray, start_step: int, title: str) -> bytes:
        """Return the PNG bytes of one run's plot."""
        return png_bytes(*self.render_pixels(coefficients, losses, start_step, title))

    def render_pixels(self, coefficients, losses: np.ndarray, start_step: int,
                      title: str) -> tuple[bytes, int, int]:
        """Draw one run's plot; return its 8-bit RGB pixels with width and height for png_bytes."""
        from PIL import Image, ImageDraw

        self.canvas.restore_region(self.background)
        self.fit_line.set_data(self.curve_x, np.polynomial.polynomial.polyval(self.curve_x,
                                                                              coefficients))
        finite = np.isfinite(losses)
        keep = _thin(len(losses))
        keep = keep[finite[keep]]
        self.loss_line.set_data(start_step + keep, losses[keep])
        self.fit_axes.draw_artist(self.fit_line)
        self.loss_axes.draw_artist(self.loss_line)

        size = self.canvas.get_width_height()
        image = Image.frombuffer("RGBA", size, self.canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
        image = image.convert("RGB")
        ImageDraw.Draw(image).text(self.title_center, title, fill="black", font=self.title_font,
                                   anchor="mm")
        return image.tobytes(), *size


def png_bytes(rgb: bytes, width: int, height: int) -> bytes:
    """Encode 8-bit RGB rows as a PNG file: no row filter, zlib level 1."""
    rows = np.empty((height, 1 + 3 * width), dtype=np.uint8)
    rows[:, 0] = 0  # each row starts with its filter type, 0 ("None")
    rows[:, 1:] = np.frombuffer(rgb, dtype=np.uint8).reshape(height, 3 * width)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, not interlaced
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(rows, 1)) + _png_chunk(b"IEND", b""))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


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
