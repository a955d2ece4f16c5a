"""report.png: every run's loss curve, and the final loss over the grid as a heat map."""

import io
import math

import numpy as np


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
    FigureCanvasAgg(figure)
    curve_axes, heat_axes = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
    figure.subplots_adjust(left=0.06, right=0.97, bottom=0.14, top=0.86, wspace=0.32)
    figure.suptitle(f"sweep {spec.sweep_id}: {len(rows)} runs over {', '.join(spec.grid)}")

    _draw_curves(figure, curve_axes, rows, curves, colors)
    _draw_heat_map(figure, heat_axes, spec, rows, colors)

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _draw_curves(figure, axes, rows, curves, colors):
    import matplotlib

    rates = [row["learning_rate"] for row in rows if row["run_id"] in curves]
    norm = colors.LogNorm(min(rates), max(rates)) if rates and min(rates) < max(rates) else None
    colormap = matplotlib.colormaps["viridis"]
    optimum = None
    diverged_drawn = False
    for row in rows:
        losses = curves.get(row["run_id"])
        if losses is None:
            continue
        finite = np.isfinite(losses)
        color = colormap(norm(row["learning_rate"])) if norm else "tab:blue"
        diverged = row["status"] == "diverged"
        axes.plot(np.arange(len(losses))[finite], losses[finite], color=color, linewidth=0.9,
                  alpha=0.8, linestyle=":" if diverged else "-",
                  label="diverged run" if diverged and not diverged_drawn else None)
        diverged_drawn = diverged_drawn or diverged
        optimum = row.get("optimal_loss") or optimum
    drawn = [curves[row["run_id"]] for row in rows if row["run_id"] in curves]
    if drawn:
        from cubicfit.plots import loss_range_of

        # Diverged curves run up to 1e308; the axis stops at 10x the largest start loss.
        axes.set_ylim(*loss_range_of(drawn))
    if optimum:
        axes.axhline(optimum, color="tab:red", linestyle="--", linewidth=1,
                     label=f"least-squares optimum {optimum:.4g}")
    axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("loss (sum of squared errors, log scale)")
    shown = sum(1 for row in rows if row["run_id"] in curves)
    axes.set_title(f"loss per step ({shown} of {len(rows)} runs)")
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
        norm = colors.LogNorm(low, high if high > low else low * 1.0001)
        image = axes.imshow(np.ma.masked_invalid(grid), cmap="magma_r", norm=norm, aspect="auto",
                            origin="lower")
        figure.colorbar(image, ax=axes, label="final loss (log scale)")
    axes.set_xlim(-0.5, len(x_values) - 0.5)
    axes.set_ylim(-0.5, len(y_values) - 0.5)
    axes.set_facecolor("0.85")
    annotate = grid.size <= 150
    for line in range(grid.shape[0]):
        for column in range(grid.shape[1]):
            if status[line, column] == "diverged":
                axes.text(column, line, "diverged", ha="center", va="center", fontsize=7,
                          color="tab:red")
            elif status[line, column] == "missing":
                axes.text(column, line, "no result", ha="center", va="center", fontsize=7)
            elif annotate:
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
    title = "final loss over the grid"
    if len(others) > 1:
        title += f" (best over {', '.join(others[1:])})"
    axes.set_title(title)
