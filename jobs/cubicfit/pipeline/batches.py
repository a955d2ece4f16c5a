"""Split the unfinished grid points of a sweep into batches, one mapped `fit` task each.

A batch contains points of one device kind only, because a CUDA batch needs a
pod with a GPU and a CPU batch must not take one. Inside a device kind the
points are ordered by their batch key (backend, dtype and data), so that most
batches run as a single vectorized fit. The number of batches never exceeds
the limit passed in (Airflow's max_map_length): when the requested batch
size would need more, the batches grow instead.
"""

import dataclasses
import math
from collections.abc import Sequence

from cubicfit.errors import ConfigError
from cubicfit.runner import batch_key
from cubicfit.sweep.spec import GridPoint


@dataclasses.dataclass(frozen=True)
class Batch:
    index: int
    device_kind: str  # "cpu" or "cuda"
    run_ids: tuple[str, ...]

    def to_json_dict(self) -> dict:
        return {"index": self.index, "device_kind": self.device_kind,
                "run_ids": list(self.run_ids)}


def split_into_batches(points: Sequence[GridPoint], points_per_task: int,
                       max_tasks: int) -> list[Batch]:
    """Split `points` into batches of up to `points_per_task`, or larger to fit `max_tasks`."""
    groups = _group_by_device_kind(points)
    if not groups:
        return []
    if max_tasks < len(groups):
        raise ConfigError(
            f"Airflow's [core] max_map_length is {max_tasks}, but this grid needs at least "
            f"{len(groups)} fit tasks, one per device kind ({', '.join(groups)}); raise "
            "max_map_length or sweep one device kind at a time"
        )
    size = batch_size(
        [len(group) for group in groups.values()], points_per_task, max_tasks)

    batches: list[Batch] = []
    for device_kind, group in groups.items():
        count = math.ceil(len(group) / size)
        for chunk in _even_chunks(group, count):
            run_ids = tuple(point.config.run_id for point in chunk)
            batches.append(Batch(len(batches), device_kind, run_ids))
    return batches


def batch_size(group_sizes: Sequence[int], points_per_task: int, max_tasks: int) -> int:
    """Return the smallest size >= points_per_task that splits the groups into <= max_tasks."""
    def tasks_needed(size: int) -> int:
        return sum(math.ceil(n / size) for n in group_sizes)

    low, high = max(1, points_per_task), max(max(group_sizes), points_per_task, 1)
    if tasks_needed(low) <= max_tasks:
        return low
    # tasks_needed only falls as the size grows, and at `high` it equals the number of groups.
    while low < high:
        middle = (low + high) // 2
        if tasks_needed(middle) <= max_tasks:
            high = middle
        else:
            low = middle + 1
    return low


def _group_by_device_kind(points: Sequence[GridPoint]) -> dict[str, list[GridPoint]]:
    """Group points by device kind, and order each group by batch key, then grid position."""
    ranked: dict[str, list[tuple[int, int, GridPoint]]] = {}
    key_rank: dict[tuple, int] = {}
    for point in points:
        rank = key_rank.setdefault(batch_key(point.config), len(key_rank))
        ranked.setdefault(point.config.device_kind, []).append((rank, point.index, point))
    return {kind: [point for _, _, point in sorted(group, key=lambda item: item[:2])]
            for kind, group in ranked.items()}


def _even_chunks(items: list, count: int) -> list[list]:
    """Split `items` into `count` consecutive chunks whose sizes differ by at most one."""
    quotient, remainder = divmod(len(items), count)
    chunks, start = [], 0
    for position in range(count):
        end = start + quotient + (1 if position < remainder else 0)
        chunks.append(items[start:end])
        start = end
    return chunks
