"""report.png: every run's loss curve, and the final loss over the grid as a heat map."""

import math

import numpy as np

from cubicfit.plots import loss_range_of, png_bytes

MAX_CURVE_POINTS = 400  # per curve in report.png; enough for a 500-pixel-wide axis


def _label(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(f"{item:g}" for item in value) + "]"
    return str(value)


def _axis_values(rows, field):
    values = []
    for row in rows:
        value = row.get(field)
        key = tuple(value) if isinstance(value, list) else value
        if key not in values:
            values.append(key)
    if all(isinstance(value, int | float) for value in values):
        values.sort()
    return values


def report_png(spec, rows: list[dict], curves: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import colors
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 5.2), dpi=100)
    canvas = FigureCanvasAgg(figure)
    curve_axes, heat_axes = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
    figure.subplots_adjust(left=0.06, right=0.97, bottom=0.14, top=0.86, wspace=0.32)
    figure.suptitle(f"sweep {spec.sweep_id}: {len(rows)} runs over {', '.join(spec.grid)}")

    _draw_curves(figure, curve_axes, rows, curves, colors)
    _draw_heat_map(figure, heat_axes, spec, rows, colors)

    canvas.draw()
    width, height = canvas.get_width_height()
    rgb = np.asarray(canvas.buffer_rgba())[:, :, :3].tobytes()
    return png_bytes(rgb, width, height)


def _draw_curves(figure, axes, rows, curves, colors):
    import matplotlib
    from matplotlib.collections import LineCollection

    drawn = [row for row in rows if row["run_id"] in curves]
    rates = [row["learning_rate"] for row in drawn]
    norm = colors.LogNorm(min(rates), max(rates)) if rates and min(rates) < max(rates) else None
    colormap = matplotlib.colormaps["viridis"]
    low, high = loss_range_of([curves[row["run_id"]] for row in drawn]) if drawn else (1, 10)

    # One LineCollection per line style draws hundreds of curves in one artist.
    segments = {"-": [], ":": []}
    line_colors = {"-": [], ":": []}
    for row in drawn:
        losses = curves[row["run_id"]]
        keep = np.unique(np.linspace(0, len(losses) - 1, min(len(losses), MAX_CURVE_POINTS))
                         .round().astype(np.int64))
        values = losses[keep]
        finite = np.isfinite(values)
        # Diverged curves reach 1e308; clipping them above the axis keeps the transform finite.
        points = np.column_stack([keep[finite], np.clip(values[finite], low / 10, high * 10)])
        style = ":" if row["status"] == "diverged" else "-"
        segments[style].append(points)
        line_colors[style].append(colormap(norm(row["learning_rate"])) if norm else "tab:blue")
    for style, label in (("-", None), (":", "diverged run")):
        if segments[style]:
            axes.add_collection(LineCollection(segments[style], colors=line_colors[style],
                                               linewidths=0.9, alpha=0.8, linestyles=style,
                                               label=label))
    optimum = next((row.get("optimal_loss") for row in drawn if row.get("optimal_loss")), None)
    if optimum:
        axes.axhline(optimum, color="tab:red", linestyle="--", linewidth=1,
                     label=f"least-squares optimum {optimum:.4g}")
    axes.set_yscale("log")
    axes.set_xlim(0, max((len(curves[row["run_id"]]) for row in drawn), default=1))
    axes.set_ylim(low, high)
    axes.set_xlabel("step")
    axes.set_ylabel("loss (sum of squared errors, log scale)")
    axes.set_title(f"loss per step ({len(drawn)} of {len(rows)} runs)")
    axes.grid(alpha=0.3, which="both")
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="upper right", fontsize=8)
    if norm:
        mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=colormap)
        figure.colorbar(mappable, ax=axes, label="learning rate")


def _draw_heat_map(figure, axes, spec, rows, colors):
    varied = list(spec.grid)
    x_field = "learning_rate" if "learning_rate" in varied else varied[0]
    others = [field for field in varied if field != x_field]
    y_field = others[0] if others else None
    x_values = _axis_values(rows, x_field)
    y_values = _axis_values(rows, y_field) if y_field else [None]

    # The best final loss per cell, over any further grid fields; nan marks no succeeded run.
    grid = np.full((len(y_values), len(x_values)), np.nan)
    status = np.full(grid.shape, "missing", dtype=object)
    for row in rows:
        x_key = row.get(x_field)
        y_key = row.get(y_field) if y_field else None
        column = x_values.index(tuple(x_key) if isinstance(x_key, list) else x_key)
        line = y_values.index(tuple(y_key) if isinstance(y_key, list) else y_key)
        if row["status"] == "succeeded":
            loss = row["final_loss"]
            if math.isnan(grid[line, column]) or loss < grid[line, column]:
                grid[line, column] = loss
            status[line, column] = "succeeded"
        elif row["status"] == "diverged" and status[line, column] != "succeeded":
            status[line, column] = "diverged"

    finite = grid[np.isfinite(grid)]
    norm = None
    if len(finite):
        low, high = float(finite.min()), float(finite.max())
        # Runs above the stability bound can end near 1e300; beyond 1e6 times the best loss
        # the color saturates, so the differences among the good runs stay visible.
        high = min(high, low * 1e6)
        norm = colors.LogNorm(low, high if high > low else low * 1.0001, clip=True)
        image = axes.imshow(np.ma.masked_invalid(grid), cmap="magma_r", norm=norm, aspect="auto",
                            origin="lower")
        figure.colorbar(image, ax=axes, label="final loss (log scale)")
    axes.set_xlim(-0.5, len(x_values) - 0.5)
    axes.set_ylim(-0.5, len(y_values) - 0.5)
    axes.set_facecolor("0.85")
    annotate = grid.size <= 150
    narrow_labels = len(x_values) <= 8  # whole words fit in the cells
    if not narrow_labels:
        # One marker artist per kind; hundreds of text labels would dominate the drawing time.
        for kind, marker, color in (("diverged", "x", "tab:red"), ("missing", "$?$", "black")):
            lines, columns = np.nonzero(status == kind)
            if len(lines):
                axes.scatter(columns, lines, marker=marker, s=18, color=color, linewidths=1)
    for line in range(grid.shape[0]):
        for column in range(grid.shape[1]):
            if status[line, column] == "diverged" and narrow_labels:
                axes.text(column, line, "diverged", ha="center", va="center", fontsize=7,
                          color="tab:red")
            elif status[line, column] == "missing" and narrow_labels:
                axes.text(column, line, "no result", ha="center", va="center", fontsize=7)
            elif status[line, column] == "succeeded" and annotate:
                # Light text on the dark end of the colormap, dark text elsewhere.
                dark = norm is not None and norm(grid[line, column]) > 0.6
                axes.text(column, line, f"{grid[line, column]:.4g}", ha="center", va="center",
                          fontsize=7, color="white" if dark else "black")
    axes.set_xticks(range(len(x_values)), [_label(value) for value in x_values], rotation=45,
                    ha="right", fontsize=8)
    axes.set_xlabel(x_field)
    if y_field:
        axes.set_yticks(range(len(y_values)), [_label(value) for value in y_values], fontsize=8)
        axes.set_ylabel(y_field)
    else:
        axes.set_yticks([])
    title = "final loss over the grid" + ("" if narrow_labels else " (x: diverged, ?: no result)")
    if len(others) > 1:
        title += f" (best over {', '.join(others[1:])})"
    axes.set_title(title)
