"""Split a grid between N processes (or Indexed Job pods) so each point runs exactly once.

Point i of the expanded grid belongs to shard i mod N. Round-robin gives the
shards equal counts, within one, even when the grid is ordered by an expensive field.
"""

from collections.abc import Mapping, Sequence

from cubicfit.errors import ConfigError


def _parse_whole(value: str, name: str) -> int:
    text = str(value).strip()
    if not text.isdigit() or (len(text) > 1 and text.startswith("0")):
        raise ConfigError(
            f"{name}: {value!r} is not a non-negative integer; set it to 0, 1, 2, ..."
        )
    return int(text)


def resolve_shard(
    index: str | None, count: str | None, environ: Mapping[str, str]
) -> tuple[int, int]:
    """Return (index, count) from flags, else CUBICFIT_SHARD_*, else JOB_COMPLETION_INDEX.

    Without any of them the whole grid is one shard, (0, 1).
    """
    # Index and count are looked up independently, so `--shard-count 4` in a Job's args
    # combines with the JOB_COMPLETION_INDEX that Kubernetes sets in each pod.
    index_name, count_name = "--shard-index", "--shard-count"
    if index is None and "CUBICFIT_SHARD_INDEX" in environ:
        index_name, index = "CUBICFIT_SHARD_INDEX", environ["CUBICFIT_SHARD_INDEX"]
    elif index is None and "JOB_COMPLETION_INDEX" in environ:
        index_name, index = "JOB_COMPLETION_INDEX", environ["JOB_COMPLETION_INDEX"]
    if count is None and "CUBICFIT_SHARD_COUNT" in environ:
        count_name, count = "CUBICFIT_SHARD_COUNT", environ["CUBICFIT_SHARD_COUNT"]
    if index is None and count is None:
        return 0, 1
    if index is None:
        raise ConfigError(
            f"{count_name} is set but the shard index is missing; set --shard-index, "
            "CUBICFIT_SHARD_INDEX or JOB_COMPLETION_INDEX"
        )
    if count is None:
        raise ConfigError(
            f"{index_name} is set but the shard count is missing; set --shard-count or "
            "CUBICFIT_SHARD_COUNT to the number of shards (the Job's completions)"
        )
    shard_index = _parse_whole(index, index_name)
    shard_count = _parse_whole(count, count_name)
    if shard_count < 1:
        raise ConfigError(f"{count_name}: must be at least 1, got {shard_count}")
    if shard_index >= shard_count:
        raise ConfigError(
            f"{index_name}: {shard_index} is out of range for {shard_count} shard(s); "
            f"use 0 to {shard_count - 1}"
        )
    return shard_index, shard_count


def select_shard(points: Sequence, index: int, count: int) -> list:
    return [point for position, point in enumerate(points) if position % count == index]
