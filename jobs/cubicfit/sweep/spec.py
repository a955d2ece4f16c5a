"""Sweep specs: `name`, `base` fit fields and a `grid` of values, expanded to fit configs.

Expansion is the cartesian product of the grid's value lists, in the order
the spec lists its fields and values, so every process expands a spec to the
same list. Points that resolve to the same configuration (1e-6 and 0.000001)
have the same run id and are kept once, at their first position.
"""

import dataclasses
import hashlib
import itertools
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from cubicfit.config import (
    FIELD_NAMES,
    FitConfig,
    build_config,
    fields_from_env,
    parse_fields,
)
from cubicfit.errors import ConfigError
from cubicfit.yamlio import load_yaml_file

# One process keeps every expanded config and, per batch, every loss in memory.
MAX_GRID_POINTS = 100_000
SPEC_KEYS = ("name", "base", "grid")
NOT_IN_GRID = ("output",)  # one sweep writes to one place
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclasses.dataclass(frozen=True)
class GridPoint:
    index: int  # position in the expanded, deduplicated grid
    values: dict[str, Any]  # the grid fields of this point
    config: FitConfig


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    name: str | None
    base: dict[str, Any]  # parsed fit fields, before defaults
    grid: dict[str, list[Any]]  # parsed values per field, in spec order
    source: str

    @property
    def sweep_id(self) -> str:
        """Return the spec's name, or `sweep-` and a hash of base and grid when unnamed."""
        if self.name:
            return self.name
        canonical = json.dumps({"base": _jsonable(self.base), "grid": _jsonable(self.grid)},
                               sort_keys=True, separators=(",", ":"))
        return "sweep-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]

    @property
    def output(self) -> str:
        return self.base.get("output") or FitConfig.output

    def point_count(self) -> int:
        return math.prod(len(values) for values in self.grid.values())

    def expand(self) -> list[GridPoint]:
        """Return the grid points in a stable order, without duplicates."""
        names = list(self.grid)
        points: list[GridPoint] = []
        seen: set[str] = set()
        for combination in itertools.product(*(self.grid[name] for name in names)):
            values = dict(zip(names, combination, strict=True))
            config = build_config({**self.base, **values}, f"grid point {_format(values)}")
            if config.run_id in seen:
                continue
            seen.add(config.run_id)
            points.append(GridPoint(len(points), values, config))
        return points

    def to_json_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base": _jsonable(self.base), "grid": _jsonable(self.grid)}


def _jsonable(value):
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    return value


def _format(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in values.items())


def parse_sweep_spec(
    document: Any,
    source: str,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SweepSpec:
    """Validate a parsed spec; `environ` and `overrides` (flag strings) layer over `base`."""
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: a sweep spec is a mapping with the keys name, base and grid")
    unknown = [key for key in document if key not in SPEC_KEYS]
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{unknown[0]}'; a sweep spec has only {', '.join(SPEC_KEYS)} "
            "(fit fields go under base or grid)"
        )

    name = document.get("name")
    if name is not None and (not isinstance(name, str) or not _NAME.match(name)):
        raise ConfigError(
            f"{source}: name {name!r} is invalid; use 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )

    base_raw = document.get("base") or {}
    if not isinstance(base_raw, dict):
        raise ConfigError(f"{source}: base must be a mapping of fit fields, got {base_raw!r}")
    base = parse_fields(base_raw, f"{source} (base)")

    grid_raw = document.get("grid")
    if not isinstance(grid_raw, dict) or not grid_raw:
        raise ConfigError(
            f"{source}: grid is missing or empty; list at least one field with its values, "
            "for example grid: {learning_rate: [1e-6, 1e-5]}"
        )
    grid: dict[str, list[Any]] = {}
    for field, values in grid_raw.items():
        if field not in FIELD_NAMES:
            parse_fields({field: None}, f"{source} (grid)")  # raises with a suggestion
        if field in NOT_IN_GRID:
            raise ConfigError(f"{source}: grid field '{field}' cannot vary; set it in base")
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"{source}: grid field '{field}' needs a non-empty list of values, got {values!r}"
            )
        grid[field] = [parse_fields({field: value}, f"{source} (grid)")[field] for value in values]
    layered = {}
    if environ is not None:
        layered.update(fields_from_env(environ))
    for key, value in (overrides or {}).items():
        layered.update(parse_fields({key: value}, f"flag --{key.replace('_', '-')}", text=True))
    clash = sorted(set(layered) & set(grid))
    if clash:
        raise ConfigError(
            f"field '{clash[0]}' is set by an environment variable or flag but varies in the grid "
            f"of {source}; remove one of them"
        )
    base.update(layered)
    if ("device" in grid and "auto" in grid["device"]) or base.get("device") == "auto":
        raise ConfigError(
            f"{source}: device auto is not allowed in a sweep (from the spec, CUBICFIT_DEVICE or a "
            "flag), because run ids must not depend on the machine that plans them; use cpu or cuda"
        )
    overlap = sorted(set(document.get("base") or {}) & set(grid))
    if overlap:
        raise ConfigError(
            f"{source}: field '{overlap[0]}' is set in base and varies in grid; remove it from base"
        )

    spec = SweepSpec(name, base, grid, source)
    count = spec.point_count()
    if count > MAX_GRID_POINTS:
        raise ConfigError(
            f"{source}: the grid has {count} points, more than the limit of {MAX_GRID_POINTS}; "
            "split it into several sweeps"
        )
    return spec


def load_sweep_spec(path: str, environ=None, overrides=None) -> SweepSpec:
    return parse_sweep_spec(load_yaml_file(path), path, environ, overrides)
