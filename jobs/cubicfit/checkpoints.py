"""Checkpoints of unfinished runs, so a killed or preempted fit resumes where it stopped.

A checkpoint of run R at step s contains the exact error state E_s = W_s - w* in
the run's dtype (stored as float64, which represents it exactly) and the
losses of steps 0 .. s-1. Resuming runs the same per-step arithmetic from
E_s, so the final result equals that of an uninterrupted run.

Layout under runs/<run_id>/:
    checkpoint-losses-<from>-<to>.csv   losses of steps from .. to-1, one file per save
    checkpoint.json                     step, error state and the list of segments
checkpoint.json is written after its segments and removed before them, so it
never names a missing segment. All of them are removed when result.json exists.
"""

import json
import logging
from dataclasses import dataclass

import numpy as np

from cubicfit.results import losses_csv, parse_losses_csv, run_prefix, to_json_bytes, utc_now
from cubicfit.storage import ResultStore

log = logging.getLogger(__name__)


@dataclass
class Checkpoint:
    run_id: str
    step: int  # the step to resume at
    error_state: np.ndarray  # (4,) E at `step`
    losses: np.ndarray  # losses of steps 0 .. step-1
    segments: list[str]


def _json_key(run_id: str) -> str:
    return f"{run_prefix(run_id)}/checkpoint.json"


def load_checkpoint(store: ResultStore, run_id: str, dtype: str) -> Checkpoint | None:
    """Return the run's checkpoint, or None when there is none or it does not add up."""
    data = store.read_bytes(_json_key(run_id))
    if data is None:
        return None
    try:
        document = json.loads(data)
        step = int(document["step"])
        state = np.array(document["error_state"], dtype=np.float64)
        if document.get("dtype") != dtype or state.shape != (4,):
            raise ValueError(f"dtype {document.get('dtype')} or state shape {state.shape}")
        parts = []
        for key in document["segments"]:
            segment = store.read_bytes(key)
            if segment is None:
                raise ValueError(f"segment {key} is missing")
            parts.append(parse_losses_csv(segment))
        losses = np.concatenate(parts) if parts else np.empty(0)
        if len(losses) != step:
            raise ValueError(f"{len(losses)} loss rows for step {step}")
    except (ValueError, KeyError, TypeError) as error:
        log.warning("ignoring the unusable checkpoint of run %s (%s); starting from step 0",
                    run_id, error)
        return None
    return Checkpoint(run_id, step, state, losses, list(document["segments"]))


def save_checkpoint(store: ResultStore, run_id: str, dtype: str, step: int, error_state,
                    new_losses: np.ndarray, previous: Checkpoint | None) -> Checkpoint:
    """Write the losses since `previous` as a segment, then checkpoint.json naming all segments."""
    first = previous.step if previous else 0
    if len(new_losses) != step - first:
        raise ValueError(f"expected {step - first} new loss rows, got {len(new_losses)}")
    segments = list(previous.segments) if previous else []
    if len(new_losses):
        key = f"{run_prefix(run_id)}/checkpoint-losses-{first}-{step}.csv"
        store.write_bytes(key, losses_csv(new_losses, first), "text/csv")
        segments.append(key)
        store.flush()
    state = np.asarray(error_state, dtype=np.float64)
    document = {"run_id": run_id, "step": step, "dtype": dtype,
                "error_state": [float(value) for value in state],
                "segments": segments, "saved_at": utc_now()}
    store.write_bytes(_json_key(run_id), to_json_bytes(document), "application/json")
    return Checkpoint(run_id, step, state, np.empty(0), segments)


def remove_checkpoint(store: ResultStore, run_id: str) -> None:
    """Delete checkpoint.json first, then every loss segment of the run."""
    store.delete(_json_key(run_id))
    prefix = f"{run_prefix(run_id)}/checkpoint-losses-"
    for key in store.list_keys(run_prefix(run_id) + "/"):
        if key.startswith(prefix):
            store.delete(key)


class BatchCheckpointer:
    """Collect each member's losses chunk by chunk and save checkpoints of unfinished members."""

    def __init__(self, store, configs, start_step: int, resumed: dict[str, Checkpoint]):
        self.store = store
        self.configs = configs
        self.saved = [resumed.get(config.run_id) for config in configs]
        self.saved_step = [start_step] * len(configs)
        self.pending: list[list[np.ndarray]] = [[] for _ in configs]

    def record(self, losses: np.ndarray, active: np.ndarray) -> None:
        for index in np.flatnonzero(active):
            self.pending[index].append(losses[index])

    def save(self, step: int, error_states: np.ndarray, members) -> None:
        """Checkpoint `members` at `step`, from the rows recorded since their last save."""
        for index in members:
            config = self.configs[index]
            rows = np.concatenate(self.pending[index]) if self.pending[index] else np.empty(0)
            count = step - self.saved_step[index]
            self.saved[index] = save_checkpoint(self.store, config.run_id, config.dtype, step,
                                                error_states[index], rows[:count],
                                                self.saved[index])
            self.pending[index] = [rows[count:]]
            self.saved_step[index] = step
        if len(members):
            log.info("checkpointed %d run(s) at step %d", len(members), step)
