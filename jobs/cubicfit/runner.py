"""Execute fits: skip finished runs, batch the rest, and write each run's files.

Write order per run: config.json, then losses.csv and fit.png, then
result.json last. result.json is created only if absent (unless forced), so
its presence means "finished" and two processes racing on the same run
cannot both record a result.
"""

import dataclasses
import json
import logging
import math
import os
import signal
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from cubicfit.backends import ChunkReport, fit_batch
from cubicfit.checkpoints import (
    BatchCheckpointer,
    Checkpoint,
    load_checkpoint,
    remove_checkpoint,
)
from cubicfit.config import FitConfig
from cubicfit.devices import describe_device
from cubicfit.errors import Interrupted, StorageError
from cubicfit.interrupts import StopFlag
from cubicfit.plots import FitPlotter, loss_range_of, png_bytes
from cubicfit.problem import build_problem, start_values
from cubicfit.results import (
    coefficients_dict,
    host_name,
    library_versions,
    losses_csv,
    run_prefix,
    to_json_bytes,
    utc_now,
)
from cubicfit.storage import ResultStore

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Outcome:
    config: FitConfig
    result: dict
    skipped: bool  # True when an earlier or concurrent run had already finished it

    @property
    def status(self) -> str:
        return self.result["status"]


def batch_key(config: FitConfig) -> tuple:
    """Configs with equal keys share data, dtype and device, so they can run as one batch."""
    return (config.backend, config.device, config.dtype, config.n_points, config.x_min,
            config.x_max, config.target, config.log_every)


def read_result(store: ResultStore, run_id: str) -> dict | None:
    """Return the stored result of a run, None when there is none; a damaged one is an error."""
    key = f"{run_prefix(run_id)}/result.json"
    data = store.read_bytes(key)
    if data is None:
        return None
    try:
        result = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        result = error
    if not isinstance(result, dict) or "status" not in result or "coefficients" not in result:
        raise StorageError(
            f"{store.describe(key)} is not a valid result ({_short(result)}); it was changed "
            "outside cubicfit: delete it, or rerun with --force to replace it"
        )
    return result


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def max_batch_size(device: str) -> int:
    """Return how many runs share one batch; host memory for losses grows with it."""
    return 65_536 if device.startswith("cuda") else 4_096


def finished_run_ids(store: ResultStore) -> set[str]:
    """Return the ids of runs with a result.json, from one listing of runs/."""
    return {key.split("/")[1] for key in store.list_keys("runs/")
            if key.count("/") == 2 and key.endswith("/result.json")}


def execute(
    configs: Sequence[FitConfig],
    store: ResultStore,
    *,
    force: bool = False,
    stop: StopFlag | None = None,
    finished: set[str] | None = None,
) -> list[Outcome]:
    """Run every config that has no result yet; return outcomes in the order of `configs`.

    `finished`, when given, lists the run ids already known to have a result, so
    only those are read back instead of probing every run. Unfinished runs with
    a checkpoint resume from it; `force` discards results and checkpoints.
    """
    stop = stop or StopFlag()
    outcomes: dict[str, Outcome] = {}
    pending: dict[tuple, list[FitConfig]] = {}
    resumed: dict[str, Checkpoint] = {}
    for config in configs:
        probe = not force and (finished is None or config.run_id in finished)
        existing = read_result(store, config.run_id) if probe else None
        if existing is not None:
            log.log(logging.INFO if finished is None else logging.DEBUG,
                    "run %s already finished (%s) at %s; skipping it (use --force to rerun)",
                    config.run_id, existing.get("status"),
                    store.describe(run_prefix(config.run_id)))
            outcomes[config.run_id] = Outcome(config, existing, skipped=True)
            continue
        if force:
            remove_checkpoint(store, config.run_id)
            start_step = 0
        else:
            checkpoint = load_checkpoint(store, config.run_id, config.dtype)
            start_step = checkpoint.step if checkpoint else 0
            if checkpoint:
                resumed[config.run_id] = checkpoint
                log.info("run %s resumes from its checkpoint at step %d", config.run_id,
                         checkpoint.step)
        # Members of one batch share their start step, so resumed runs batch separately.
        pending.setdefault((batch_key(config), start_step), []).append(config)

    for (_, start_step), group in pending.items():
        size = max_batch_size(group[0].device)
        for first in range(0, len(group), size):
            batch = group[first:first + size]
            for outcome in _run_batch(batch, store, force=force, stop=stop,
                                      start_step=start_step, resumed=resumed):
                outcomes[outcome.config.run_id] = outcome
    return [outcomes[config.run_id] for config in configs]


def _run_batch(batch: list[FitConfig], store: ResultStore, *, force: bool, stop: StopFlag,
               start_step: int, resumed: dict[str, Checkpoint]):
    first = batch[0]
    problem = build_problem(first.n_points, first.x_min, first.x_max, first.target, first.dtype)
    initial = np.array([c.init if c.init is not None else start_values(c.seed) for c in batch])
    learning_rates = np.array([c.learning_rate for c in batch])
    iterations = np.array([c.iterations for c in batch])
    initial_error = None
    if start_step:
        initial_error = np.array([resumed[c.run_id].error_state for c in batch])
    solo = len(batch) == 1

    for config in batch:
        prefix = run_prefix(config.run_id)
        if force:
            # Remove the old result first, so no reader pairs it with the new files.
            store.delete(f"{prefix}/result.json")
        store.write_bytes(f"{prefix}/config.json", to_json_bytes(config.to_json_dict()),
                          "application/json")

    log.info("fitting %d run(s) on %s (%s, %s): %d to %d steps%s", len(batch), first.device,
             first.backend, first.dtype, iterations.min(), iterations.max(),
             f", from step {start_step}" if start_step else "")
    started_at = utc_now()
    checkpointer = BatchCheckpointer(store, batch, start_step, resumed)
    every = first.checkpoint_every

    def on_chunk(report: ChunkReport) -> bool:
        _log_progress(report, batch, solo)
        checkpointer.record(report.losses, report.active)
        if stop.signal_number is not None:
            return True
        previous_end = report.step_end - report.losses.shape[1]
        if every and report.active.any() and report.step_end // every > previous_end // every:
            step, states = report.read_resume_state()
            checkpointer.save(step, states, np.flatnonzero(report.active))
        return False

    fit = fit_batch(first.backend, problem, initial, learning_rates, iterations,
                    dtype=first.dtype, device=first.device, log_every=first.log_every,
                    start_step=start_step, initial_error=initial_error, on_chunk=on_chunk)
    finished_at = utc_now()

    unfinished = [index for index in range(len(batch)) if not fit.is_complete(index)]
    if unfinished:
        step, states = fit.resume_state
        checkpointer.save(step, states, unfinished)

    complete = [index for index in range(len(batch)) if fit.is_complete(index)]
    all_losses = {}
    for index in complete:
        earlier = resumed[batch[index].run_id].losses if start_step else np.empty(0)
        all_losses[index] = np.concatenate([earlier, fit.losses[index]])
    plotter = versions = device_name = None
    if complete:
        plotter = FitPlotter(problem, first.target, int(iterations.max()),
                             loss_range_of(list(all_losses.values())))
        versions = library_versions(first.backend)
        device_name = describe_device(first.device)

    # Data files of every finished member first, then one flush, then the result.json files:
    # a result.json never becomes durable before the files it describes.
    documents = []
    for index in complete:
        documents.append((index, _result_document(batch[index], problem, fit, index,
                                                  all_losses[index], initial[index], started_at,
                                                  finished_at, versions, device_name)))
    others = {}
    if documents:
        others = _write_data_files(store, batch, documents, all_losses, plotter, force)
    prepared = []
    for index, result in documents:
        if index in others:
            yield Outcome(batch[index], others[index], skipped=True)
        else:
            prepared.append((index, result))
    store.flush()
    for index, result in prepared:
        config = batch[index]
        outcome = _record_result(store, config, result, force)
        if checkpointer.saved[index] is not None:
            remove_checkpoint(store, config.run_id)
        yield outcome
    store.flush()
    if unfinished:
        raise Interrupted(stop.signal_number or signal.SIGTERM)
    stop.raise_if_set()


def _log_progress(report: ChunkReport, batch: list[FitConfig], solo: bool) -> None:
    last = report.losses[:, -1]
    if solo:
        log.info("step %d loss %.10g elapsed %.3fs", report.step_end - 1, last[0], report.elapsed)
        return
    finite = np.where(np.isfinite(last), last, np.inf)
    best = int(np.argmin(finite))
    log.info("step %d: %d of %d runs active, best loss %.10g (run %s), elapsed %.3fs",
             report.step_end - 1, int(report.active.sum()), len(batch), finite[best],
             batch[best].run_id, report.elapsed)


def _result_document(config, problem, fit, index, losses, initial, started_at, finished_at,
                     versions, device_name) -> dict:
    diverged_at = int(fit.diverged_at[index])
    diverged = diverged_at >= 0
    if diverged:
        # The reported coefficients are the last ones whose loss was finite.
        final_loss = float(losses[-2]) if len(losses) >= 2 else math.nan
        steps_completed = diverged_at
    else:
        final_loss = float(fit.final_losses[index])
        steps_completed = config.iterations
    gap = final_loss - problem.optimal_loss
    return {
        "run_id": config.run_id,
        "status": "diverged" if diverged else "succeeded",
        "initial_coefficients": coefficients_dict(initial),
        "coefficients": coefficients_dict(fit.coefficients[index]),
        "final_loss": final_loss,
        "optimal_loss": problem.optimal_loss,
        "optimal_coefficients": coefficients_dict(problem.optimum),
        "optimality_gap": gap,
        "relative_optimality_gap": gap / problem.optimal_loss if problem.optimal_loss else None,
        "stability_bound": problem.stability_bound,
        "learning_rate": config.learning_rate,
        "learning_rate_over_bound": config.learning_rate / problem.stability_bound,
        "iterations": config.iterations,
        "steps_completed": steps_completed,
        "diverged_at_step": diverged_at if diverged else None,
        "backend": config.backend,
        "device": device_name,
        "dtype": config.dtype,
        "batch_size": len(fit.losses),
        "fit_seconds": fit.fit_seconds,
        "steps_per_second": steps_completed / fit.fit_seconds if fit.fit_seconds > 0 else None,
        "versions": versions,
        "started_at": started_at,
        "finished_at": finished_at,
        "host": host_name(),
    }


# A second process writes half of a batch's files when the store is a local folder and the
# batch has at least this many runs. Below it, starting the process costs more than it saves.
PARALLEL_WRITE_MIN_RUNS = 64


def _write_data_files(store, batch, documents, all_losses, plotter, force) -> dict[int, dict]:
    """Write losses.csv and fit.png of each (index, result) in `documents`.

    Return {index: stored result} for runs that another process finished meanwhile.
    """
    from cubicfit.storage.local import LocalStore

    if (len(documents) >= PARALLEL_WRITE_MIN_RUNS and isinstance(store, LocalStore)
            and (os.cpu_count() or 1) > 1 and hasattr(os, "fork")):
        return _write_data_files_forked(store, batch, documents, all_losses, plotter, force)
    return _write_data_files_here(store, batch, documents, all_losses, plotter, force)


def _write_data_files_here(store, batch, documents, all_losses, plotter, force) -> dict:
    others = {}
    # PNG compression (zlib) and the write release the GIL, so a second thread encodes and
    # stores each fit.png while this one draws the next.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fit-png") as encoder:
        pending_writes = []
        for index, result in documents:
            outcome = _write_run_files(store, batch[index], result, all_losses[index], plotter,
                                       force, encoder, pending_writes)
            if outcome is not None:
                others[index] = outcome.result
        for write in pending_writes:
            write.result()  # re-raises a StorageError from the encoder thread
    return others


def _write_data_files_forked(store, batch, documents, all_losses, plotter, force) -> dict:
    """Split the files between this process and a forked child that shares the plotter.

    Only local folders take this path: an S3 client's open connections must not be
    shared between processes. The child reports back over a pipe as JSON.
    """
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        report = {}
        code = 0
        try:
            report["others"] = _write_data_files_here(store, batch, documents[1::2], all_losses,
                                                      plotter, force)
        except StorageError as error:
            report["storage_error"] = str(error)
        except BaseException as error:  # noqa: BLE001 - reported to the parent, which re-raises
            report["error"] = f"{type(error).__name__}: {error}"
            code = 1
        finally:
            with os.fdopen(write_end, "w") as stream:
                json.dump(report, stream)
            os._exit(code)

    os.close(write_end)
    try:
        others = _write_data_files_here(store, batch, documents[0::2], all_losses, plotter,
                                        force)
    finally:
        with os.fdopen(read_end) as stream:
            text = stream.read()
        os.waitpid(child, 0)
    report = json.loads(text) if text else {"error": "the writer process ended without a report"}
    if "storage_error" in report:
        raise StorageError(report["storage_error"])
    if "error" in report:
        raise RuntimeError(f"writing run files in a second process failed: {report['error']}")
    others.update({int(index): result for index, result in report["others"].items()})
    return others


def _write_run_files(store, config, result, losses, plotter, force, encoder,
                     pending_writes) -> Outcome | None:
    """Write losses.csv and fit.png; return an Outcome instead when another process won."""
    prefix = run_prefix(config.run_id)
    if not force:
        # A concurrent process may have finished this run while we fitted; keep its files.
        # NOTE: a process that finishes between this check and our result.json still gets its
        # losses.csv and fit.png replaced by ours (equal bytes on the same hardware).
        existing = read_result(store, config.run_id)
        if existing is not None:
            log.warning("run %s was finished by another process meanwhile; keeping its files",
                        config.run_id)
            return Outcome(config, existing, skipped=True)
    store.write_bytes(f"{prefix}/losses.csv", losses_csv(losses), "text/csv")
    title = (f"run {config.run_id}: {config.backend} {config.dtype}, "
             f"lr {config.learning_rate:g}")
    if result["status"] == "diverged":
        title += f" - DIVERGED at step {result['diverged_at_step']}"
    else:
        title += f", {config.iterations} steps, final loss {result['final_loss']:.6g}"
    pixels = plotter.render_pixels(np.array(list(result["coefficients"].values())), losses, 0,
                                   title)
    pending_writes.append(encoder.submit(
        lambda: store.write_bytes(f"{prefix}/fit.png", png_bytes(*pixels), "image/png")))
    return None


def _record_result(store, config, result, force) -> Outcome:
    """Write result.json last: created only if absent, unless forced."""
    prefix = run_prefix(config.run_id)
    document = to_json_bytes(result)
    if force:
        store.write_bytes(f"{prefix}/result.json", document, "application/json")
    elif not store.create_bytes(f"{prefix}/result.json", document, "application/json"):
        log.warning("run %s was finished by another process meanwhile; keeping its result.json",
                    config.run_id)
        return Outcome(config, read_result(store, config.run_id) or result, skipped=True)
    if result["status"] == "diverged":
        log.info("run %s diverged at step %d (last finite loss %.4g), results in %s",
                 config.run_id, result["diverged_at_step"], result["final_loss"],
                 store.describe(prefix))
    else:
        log.info("run %s succeeded: final loss %.10g (optimum %.10g, gap %.4g), results in %s",
                 config.run_id, result["final_loss"], result["optimal_loss"],
                 result["optimality_gap"], store.describe(prefix))
    return Outcome(config, result, skipped=False)
