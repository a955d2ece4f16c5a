"""The sweep report: summary.csv, report.md and report.png, built from stored results.

It reads only what is in storage, so it can run after all shards of a sweep
have finished, in any process.
"""

import csv
import io
import logging
import math

from cubicfit.results import parse_losses_csv, run_prefix
from cubicfit.storage import ResultStore
from cubicfit.sweep.execute import sweep_document, sweep_prefix
from cubicfit.sweep.spec import GridPoint, SweepSpec

log = logging.getLogger(__name__)

LEADERBOARD_SIZE = 10
MAX_CURVES = 300  # loss curves drawn in report.png; more would be unreadable and slow to fetch

SUMMARY_COLUMNS = (
    "index", "run_id", "status", "backend", "device", "dtype", "learning_rate", "iterations",
    "seed", "final_loss", "optimal_loss", "optimality_gap", "relative_optimality_gap",
    "stability_bound", "diverged_at_step", "steps_completed", "fit_seconds",
)


def collect_results(store: ResultStore, points: list[GridPoint]) -> list[dict | None]:
    from cubicfit.runner import read_result

    return [read_result(store, point.config.run_id) for point in points]


def summary_rows(spec: SweepSpec, points, results) -> list[dict]:
    rows = []
    for point, result in zip(points, results, strict=True):
        config = point.config
        row = {"index": point.index, "run_id": config.run_id, "backend": config.backend,
               "device": config.device, "dtype": config.dtype,
               "learning_rate": config.learning_rate, "iterations": config.iterations,
               "seed": config.seed if config.init is None else ""}
        for field, value in point.values.items():
            row.setdefault(field, value if not isinstance(value, tuple) else list(value))
        if result is None:
            row["status"] = "missing"
        else:
            row["status"] = result["status"]
            for column in ("final_loss", "optimal_loss", "optimality_gap",
                           "relative_optimality_gap", "stability_bound", "diverged_at_step",
                           "steps_completed", "fit_seconds"):
                row[column] = result.get(column)
        rows.append(row)
    return rows


def summary_csv(spec: SweepSpec, rows: list[dict]) -> bytes:
    extra = [field for field in spec.grid if field not in SUMMARY_COLUMNS]
    columns = list(SUMMARY_COLUMNS[:3]) + extra + list(SUMMARY_COLUMNS[3:])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: ("" if row.get(key) is None else _cell(row.get(key)))
                         for key in columns})
    return buffer.getvalue().encode()


def _cell(value):
    return repr(value) if isinstance(value, float) else value


def _fmt(value, digits=6) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def report_markdown(spec: SweepSpec, rows: list[dict]) -> str:
    finished = [row for row in rows if row["status"] != "missing"]
    succeeded = sorted((row for row in rows if row["status"] == "succeeded"),
                       key=lambda row: row["final_loss"])
    diverged = [row for row in rows if row["status"] == "diverged"]
    missing = [row for row in rows if row["status"] == "missing"]
    bounds = sorted({row["stability_bound"] for row in finished if row.get("stability_bound")})
    optima = sorted({row["optimal_loss"] for row in finished if row.get("optimal_loss")})

    lines = [f"# Sweep {spec.sweep_id}", ""]
    lines.append(f"{len(rows)} runs over {', '.join(spec.grid)}: {len(succeeded)} succeeded, "
                 f"{len(diverged)} diverged, {len(missing)} without a result yet.")
    lines.append("")
    if bounds:
        lines.append("Stability bound of gradient descent (largest stable learning rate): "
                     + ", ".join(f"{bound:.6g}" for bound in bounds) + ".")
    if optima:
        lines.append("Closed-form least-squares optimum (loss): "
                     + ", ".join(f"{value:.6g}" for value in optima) + ".")
    lines.append("")

    lines.append(f"## Best runs (top {min(LEADERBOARD_SIZE, len(succeeded))} by final loss)")
    lines.append("")
    varied = list(spec.grid)
    header = ["rank", "run_id", *varied, "final loss", "gap to optimum", "relative gap",
              "batch fit s"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for rank, row in enumerate(succeeded[:LEADERBOARD_SIZE], start=1):
        cells = [str(rank), f"`{row['run_id']}`", *(_fmt(row.get(field)) for field in varied),
                 _fmt(row["final_loss"], 8), _fmt(row["optimality_gap"], 4),
                 _fmt(row["relative_optimality_gap"], 3), _fmt(row["fit_seconds"], 3)]
        lines.append("| " + " | ".join(cells) + " |")
    if not succeeded:
        lines.append("| - | no succeeded runs |" + " |" * (len(header) - 2))
    lines.append("")

    lines.append("## Diverged learning rates")
    lines.append("")
    if diverged:
        by_rate: dict[float, list[dict]] = {}
        for row in diverged:
            by_rate.setdefault(row["learning_rate"], []).append(row)
        for rate, group in sorted(by_rate.items()):
            bound = group[0].get("stability_bound")
            ratio = f", {rate / bound:.3g}x the stability bound" if bound else ""
            steps = sorted(row["diverged_at_step"] for row in group)
            lines.append(f"- {rate:g}{ratio}: {len(group)} run(s), first non-finite loss at "
                         f"step {steps[0]}" + (f" to {steps[-1]}" if steps[-1] != steps[0] else ""))
    else:
        lines.append("None.")
    lines.append("")
    if missing:
        lines.append("## Runs without a result")
        lines.append("")
        lines.append(", ".join(f"`{row['run_id']}`" for row in missing[:50])
                     + (" and more" if len(missing) > 50 else ""))
        lines.append("")
    lines.append("Files: `summary.csv` (every run), `report.png` (loss curves and final loss "
                 "over the grid), `sweep.json` (the expanded grid).")
    return "\n".join(lines) + "\n"


def build_report(spec: SweepSpec, store: ResultStore,
                 points: list[GridPoint] | None = None) -> dict:
    """Write summary.csv, report.md and report.png; return the best run and counts.

    The return value is what the Airflow report task shows.
    """
    from cubicfit.results import to_json_bytes
    from cubicfit.sweep.plots import report_png

    points = points if points is not None else spec.expand()
    prefix = sweep_prefix(spec.sweep_id)
    results = collect_results(store, points)
    rows = summary_rows(spec, points, results)

    curves = {}
    for row in _curve_rows(rows):
        data = store.read_bytes(f"{run_prefix(row['run_id'])}/losses.csv")
        if data is not None:
            curves[row["run_id"]] = parse_losses_csv(data)

    if store.read_bytes(f"{prefix}/sweep.json") is None:
        store.write_bytes(f"{prefix}/sweep.json", to_json_bytes(sweep_document(spec, points)),
                          "application/json")
    store.write_bytes(f"{prefix}/summary.csv", summary_csv(spec, rows), "text/csv")
    store.write_bytes(f"{prefix}/report.png", report_png(spec, rows, curves), "image/png")
    store.write_bytes(f"{prefix}/report.md", report_markdown(spec, rows).encode(), "text/markdown")

    succeeded = sorted((row for row in rows if row["status"] == "succeeded"),
                       key=lambda row: row["final_loss"])
    best = succeeded[0] if succeeded else None
    summary = {
        "sweep_id": spec.sweep_id,
        "runs": len(rows),
        "succeeded": len(succeeded),
        "diverged": sum(row["status"] == "diverged" for row in rows),
        "missing": sum(row["status"] == "missing" for row in rows),
        "best_run_id": best["run_id"] if best else None,
        "best_final_loss": best["final_loss"] if best else None,
        "best_optimality_gap": best["optimality_gap"] if best else None,
        "report": store.describe(f"{prefix}/report.md"),
    }
    log.info("sweep %s report: %d runs, %d succeeded, %d diverged, %d missing; best %s "
             "(final loss %s, gap %s); %s", spec.sweep_id, summary["runs"], summary["succeeded"],
             summary["diverged"], summary["missing"], summary["best_run_id"],
             _fmt(summary["best_final_loss"], 8), _fmt(summary["best_optimality_gap"], 4),
             summary["report"])
    return summary


def _curve_rows(rows: list[dict]) -> list[dict]:
    """Pick at most MAX_CURVES finished runs, spread evenly over the grid order."""
    finished = [row for row in rows if row["status"] != "missing"]
    if len(finished) <= MAX_CURVES:
        return finished
    step = len(finished) / MAX_CURVES
    return [finished[math.floor(i * step)] for i in range(MAX_CURVES)]
