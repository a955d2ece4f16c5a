"""One fit's configuration: fields, defaults, strict parsing, layering and the run id.

Precedence, lowest to highest: defaults, the YAML file, `CUBICFIT_<FIELD>`
environment variables, command-line flags. Every error names the field and
the source of the bad value and tells how to fix it.
"""

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from cubicfit.errors import ConfigError
from cubicfit.yamlio import load_yaml_file

BACKENDS = ("numpy", "torch", "torch-autograd")
DTYPES = ("float32", "float64")
TARGETS = ("sin", "cos", "tanh", "exp")
DEFAULT_DTYPE = {"numpy": "float64", "torch": "float32", "torch-autograd": "float32"}

# Limits that keep one process within memory: losses are kept for every step.
MAX_ITERATIONS = 10_000_000
MAX_POINTS = 10_000_000
MAX_SEED = 2**63 - 1
# Python refuses to convert strings of more than 4300 digits; every field's range is far
# below this, so longer text is rejected before conversion.
MAX_INTEGER_CHARACTERS = 1000
ENV_PREFIX = "CUBICFIT_"
# CUBICFIT_* variables that are not fit fields but are read elsewhere.
OTHER_ENV_VARS = {"CUBICFIT_SHARD_INDEX", "CUBICFIT_SHARD_COUNT", "CUBICFIT_LOG_FORMAT",
                  "CUBICFIT_S3_MAX_ATTEMPTS"}

# Kubernetes injects <SERVICE>_SERVICE_HOST, <SERVICE>_PORT... for every Service in the
# namespace, so a Service named "cubicfit" would add CUBICFIT_SERVICE_HOST and friends.
_SERVICE_LINK = re.compile(r"^CUBICFIT_(?:[A-Z0-9_]*_)?(?:SERVICE_HOST|SERVICE_PORT\w*|PORT\w*)$")
_DEVICE = re.compile(r"^(?:cpu|auto|cuda(?::(?:0|[1-9][0-9]{0,2}))?)$")
_PLAIN_INT = re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$")


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """A fully resolved and validated configuration of one fit."""

    backend: str = "numpy"
    device: str = "cpu"
    dtype: str = "float64"
    learning_rate: float = 1e-6
    iterations: int = 2000
    seed: int = 0
    init: tuple[float, float, float, float] | None = None
    n_points: int = 2000
    x_min: float = -math.pi
    x_max: float = math.pi
    target: str = "sin"
    log_every: int = 100
    checkpoint_every: int = 1_000_000
    output: str = "./results"

    @property
    def device_kind(self) -> str:
        return "cuda" if self.device.startswith("cuda") else self.device

    def identity(self) -> dict[str, Any]:
        """Return the fields that change the numbers; the run id is their hash."""
        identity = {
            "backend": self.backend,
            "device": self.device_kind,
            "dtype": self.dtype,
            "learning_rate": self.learning_rate,
            "iterations": self.iterations,
            "n_points": self.n_points,
            "x_min": self.x_min,
            "x_max": self.x_max,
            "target": self.target,
        }
        if self.init is None:
            identity["seed"] = self.seed
        else:
            identity["init"] = list(self.init)
        return identity

    @property
    def run_id(self) -> str:
        return compute_run_id(self.identity())

    def to_json_dict(self) -> dict[str, Any]:
        """Return the resolved configuration as written to config.json (no output location)."""
        fields = dataclasses.asdict(self)
        fields.pop("output")
        fields["init"] = list(self.init) if self.init is not None else None
        return {"run_id": self.run_id, **fields}


FIELD_NAMES = tuple(field.name for field in dataclasses.fields(FitConfig))
DEFAULTS = {field.name: field.default for field in dataclasses.fields(FitConfig)}


def compute_run_id(identity: Mapping[str, Any]) -> str:
    """Hash the identity fields; `repr` of floats makes 1e-6 and 0.000001 the same."""
    canonical = json.dumps({"v": 1, **identity}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# Parsing of one value. `text` is True for values from the environment or a
# flag, which arrive as strings and are converted here; YAML values arrive
# typed and must already have the right type.

def _parse_int(name: str, value: Any, source: str, text: bool) -> int:
    if text and isinstance(value, str):
        stripped = value.strip()
        if len(stripped) > MAX_INTEGER_CHARACTERS:
            raise ConfigError(f"{name}: a {len(stripped)}-character value from {source} is not a "
                              "valid integer for any field")
        if not _PLAIN_INT.match(stripped):
            raise ConfigError(
                f"{name}: {_show(value)} from {source} is not an integer; "
                "write a plain decimal number such as 2000 (no leading zeros, no exponent)"
            )
        return int(stripped)
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer() and math.isfinite(value):
            raise ConfigError(
                f"{name}: {_show(value)} from {source} is a float; "
                f"write it as an integer ({int(value)})"
            )
        hint = "; write it without quotes" if isinstance(value, str) else ""
        raise ConfigError(
            f"{name}: expected an integer, got {_describe(value)} from {source}{hint}"
        )
    return value


def _parse_float(name: str, value: Any, source: str, text: bool) -> float:
    if text and isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ConfigError(
                f"{name}: {_show(value)} from {source} is not a number; write for example 1e-6"
            ) from None
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name}: expected a number, got {_describe(value)} from {source}")
    else:
        try:
            number = float(value)
        except OverflowError:
            raise ConfigError(
                f"{name}: the integer from {source} is too large for a float; write a finite number"
            ) from None
    if not math.isfinite(number):
        raise ConfigError(f"{name}: {_show(value)} from {source} is not a finite number")
    return number


def _parse_choice(name: str, value: Any, source: str, text: bool, choices) -> str:
    if not isinstance(value, str):
        raise ConfigError(
            f"{name}: expected one of {', '.join(choices)}, got {_describe(value)} from {source}"
        )
    if value not in choices:
        raise ConfigError(
            f"{name}: unknown value {_show(value)} from {source}; "
            f"choose one of {', '.join(choices)}"
        )
    return value


def _parse_device(name: str, value: Any, source: str, text: bool) -> str:
    if not isinstance(value, str) or not _DEVICE.match(value):
        raise ConfigError(
            f"{name}: invalid device {_describe(value)} from {source}; "
            "use cpu, cuda, cuda:N (N a GPU index) or auto"
        )
    return value


def _parse_init(name: str, value: Any, source: str, text: bool):
    if value is None:
        return None
    if text and isinstance(value, str):
        parts = [part for part in re.split(r"[,\s]+", value.strip().strip("[]")) if part]
        values = [_parse_float(f"{name}[{index}]", part, source, True)
                  for index, part in enumerate(parts)]
    elif isinstance(value, list | tuple):
        values = [_parse_float(f"{name}[{index}]", item, source, False)
                  for index, item in enumerate(value)]
    else:
        raise ConfigError(
            f"{name}: expected a list of 4 numbers [a, b, c, d], "
            f"got {_describe(value)} from {source}"
        )
    if len(values) != 4:
        raise ConfigError(
            f"{name}: expected 4 start values [a, b, c, d], got {len(values)} from {source}"
        )
    return tuple(values)


def _parse_output(name: str, value: Any, source: str, text: bool) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"{name}: expected a local folder or s3://bucket/prefix, got {_describe(value)} "
            f"from {source}"
        )
    if value.startswith("s3://"):
        from cubicfit.storage.location import parse_s3_url

        parse_s3_url(value, field=name)
    elif "://" in value:
        raise ConfigError(
            f"{name}: unsupported URL scheme in {_show(value)} from {source}; "
            "use a local folder or s3://bucket/prefix"
        )
    return value


def _parse_optional_dtype(name, value, source, text):
    if value is None:
        return None
    return _parse_choice(name, value, source, text, DTYPES)


PARSERS = {
    "backend": lambda n, v, s, t: _parse_choice(n, v, s, t, BACKENDS),
    "device": _parse_device,
    "dtype": _parse_optional_dtype,
    "learning_rate": _parse_float,
    "iterations": _parse_int,
    "seed": _parse_int,
    "init": _parse_init,
    "n_points": _parse_int,
    "x_min": _parse_float,
    "x_max": _parse_float,
    "target": lambda n, v, s, t: _parse_choice(n, v, s, t, TARGETS),
    "log_every": _parse_int,
    "checkpoint_every": _parse_int,
    "output": _parse_output,
}


def _show(value: Any) -> str:
    """Return repr(value), shortened when it is long enough to flood a terminal."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


def _describe(value: Any) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, str | int) and len(str(value)) > 60:
        return f"a {type(value).__name__} of {len(str(value))} characters"
    kind = {bool: "boolean", str: "string", int: "integer", float: "number",
            list: "list", dict: "mapping"}.get(type(value), type(value).__name__)
    return f"the {kind} {_show(value)}"


def parse_fields(raw: Mapping[str, Any], source: str, text: bool = False) -> dict[str, Any]:
    """Check names and types of `raw` fields; return them converted."""
    parsed = {}
    for name, value in raw.items():
        if name not in PARSERS:
            hint = _closest(name)
            suggestion = (f"; did you mean '{hint}'?" if hint
                          else f"; valid fields: {', '.join(FIELD_NAMES)}")
            raise ConfigError(f"unknown field '{name}' in {source}{suggestion}")
        parsed[name] = PARSERS[name](name, value, source, text)
    return parsed


def _closest(name: str) -> str | None:
    import difflib

    matches = difflib.get_close_matches(name.replace("-", "_").lower(), FIELD_NAMES, n=1)
    return matches[0] if matches else None


def fields_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Read CUBICFIT_<FIELD> variables; an unknown CUBICFIT_ variable is an error."""
    raw = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key in OTHER_ENV_VARS or _SERVICE_LINK.match(key):
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name not in PARSERS:
            hint = _closest(name)
            raise ConfigError(
                f"unknown environment variable {key}"
                + (f"; did you mean {ENV_PREFIX}{hint.upper()}?" if hint else "")
                + " (unset it, or use one of the fields: " + ", ".join(FIELD_NAMES) + ")"
            )
        raw[name] = value
    parsed = {}
    for name, value in raw.items():
        source = f"environment variable {ENV_PREFIX}{name.upper()}"
        parsed.update(parse_fields({name: value}, source, text=True))
    return parsed


def fields_from_file(path: str) -> dict[str, Any]:
    document = load_yaml_file(path)
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(
            f"{path}: expected a mapping of field: value at the top level, "
            f"got {_describe(document)}"
        )
    return parse_fields(document, path)


def build_config(
    fields: Mapping[str, Any],
    source: str = "the configuration",
    origins: Mapping[str, str] | None = None,
) -> FitConfig:
    """Apply defaults and cross-field rules to parsed fields; return the resolved config.

    `origins` maps a field to where its value came from, for error messages; other fields
    are reported as coming from `source`.
    """
    values = {**DEFAULTS, **{key: value for key, value in fields.items() if value is not None}}
    if fields.get("init") is None:
        values["init"] = None
    if fields.get("dtype") is None:
        values["dtype"] = DEFAULT_DTYPE[values["backend"]]
    origins = origins or {}

    def where(*names: str) -> str:
        found = [origins[name] for name in names if name in origins]
        return f"from {' and '.join(found)}" if found else f"in {source}"

    _check_ranges(values, where)
    return FitConfig(**values)


def _check_ranges(values: dict[str, Any], where) -> None:
    if values["backend"] == "numpy" and values["device"].startswith("cuda"):
        raise ConfigError(
            f"device: numpy runs only on the CPU, but device is {values['device']!r} "
            f"{where('device', 'backend')}; use backend torch or torch-autograd for CUDA, "
            "or device cpu"
        )
    if values["learning_rate"] <= 0:
        raise ConfigError(
            f"learning_rate: must be > 0, got {values['learning_rate']!r} "
            f"{where('learning_rate')}"
        )
    _check_int_range("iterations", values, 1, MAX_ITERATIONS, where)
    _check_int_range("n_points", values, 4, MAX_POINTS, where)
    _check_int_range("log_every", values, 1, MAX_ITERATIONS, where)
    _check_int_range("checkpoint_every", values, 0, MAX_ITERATIONS, where)
    _check_int_range("seed", values, 0, MAX_SEED, where)
    if not values["x_min"] < values["x_max"]:
        raise ConfigError(
            f"x_min: must be less than x_max, got x_min={values['x_min']!r} and "
            f"x_max={values['x_max']!r} {where('x_min', 'x_max')}"
        )
    # Powers up to x^6 enter the normal equations; beyond this range they overflow float64.
    if max(abs(values["x_min"]), abs(values["x_max"])) > 1e6:
        raise ConfigError(
            f"x_min/x_max: |x| must be at most 1e6 so that x^6 stays finite, got "
            f"[{values['x_min']!r}, {values['x_max']!r}] {where('x_min', 'x_max')}"
        )


def _check_int_range(name, values, low, high, where):
    value = values[name]
    if not low <= value <= high:
        raise ConfigError(
            f"{name}: must be between {low} and {high}, got {_show(value)} {where(name)}"
        )


def load_fit_config(
    path: str | None,
    environ: Mapping[str, str],
    flags: Mapping[str, Any] | None = None,
) -> FitConfig:
    """Layer file, environment and flags (flags are strings, as argparse gives them)."""
    fields: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if path:
        from_file = fields_from_file(path)
        fields.update(from_file)
        origins.update(dict.fromkeys(from_file, path))
    from_env = fields_from_env(environ)
    fields.update(from_env)
    origins.update({name: f"environment variable {ENV_PREFIX}{name.upper()}" for name in from_env})
    for name, value in (flags or {}).items():
        if value is not None:
            source = f"flag --{name.replace('_', '-')}"
            fields.update(parse_fields({name: value}, source, text=True))
            origins[name] = source
    return build_config(fields, origins=origins)
