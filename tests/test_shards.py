import pytest

from cubicfit.errors import ConfigError
from cubicfit.sweep.shards import resolve_shard, select_shard


@pytest.mark.parametrize("count", [1, 2, 3, 7, 40])
def test_shards_cover_each_point_once(count):
    points = list(range(37))
    shares = [select_shard(points, index, count) for index in range(count)]

    assert sorted(point for share in shares for point in share) == points
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.parametrize(
    ("index", "count", "environ", "expected"),
    [
        (None, None, {}, (0, 1)),
        ("2", "4", {}, (2, 4)),
        (None, None, {"CUBICFIT_SHARD_INDEX": "1", "CUBICFIT_SHARD_COUNT": "3"}, (1, 3)),
        (None, None, {"JOB_COMPLETION_INDEX": "2", "CUBICFIT_SHARD_COUNT": "3"}, (2, 3)),
        ("0", "2", {"JOB_COMPLETION_INDEX": "1", "CUBICFIT_SHARD_COUNT": "3"}, (0, 2)),
        (None, "4", {"JOB_COMPLETION_INDEX": "3"}, (3, 4)),
        ("1", None, {"CUBICFIT_SHARD_COUNT": "2"}, (1, 2)),
    ],
)
def test_shard_sources(index, count, environ, expected):
    assert resolve_shard(index, count, environ) == expected


@pytest.mark.parametrize(
    ("index", "count", "environ", "message"),
    [
        ("1", None, {}, "shard count is missing"),
        (None, "2", {}, "shard index is missing"),
        ("x", "2", {}, "--shard-index: 'x' is not a non-negative integer"),
        ("-1", "2", {}, "is not a non-negative integer"),
        ("01", "2", {}, "is not a non-negative integer"),
        ("2", "2", {}, "out of range for 2 shard"),
        ("0", "0", {}, "must be at least 1"),
        (None, None, {"JOB_COMPLETION_INDEX": "1"}, "CUBICFIT_SHARD_COUNT"),
        (None, None, {"JOB_COMPLETION_INDEX": "one", "CUBICFIT_SHARD_COUNT": "2"},
         "JOB_COMPLETION_INDEX: 'one'"),
        (None, None, {"JOB_COMPLETION_INDEX": "5", "CUBICFIT_SHARD_COUNT": "2"}, "out of range"),
    ],
)
def test_invalid_shards(index, count, environ, message):
    with pytest.raises(ConfigError, match=message):
        resolve_shard(index, count, environ)
