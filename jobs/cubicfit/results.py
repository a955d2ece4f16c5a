"""The files of one run: config.json, losses.csv and result.json, as bytes."""

import functools
import json
import math
import os
import platform
import socket
from datetime import UTC, datetime

import numpy as np

import cubicfit

COEFFICIENT_NAMES = ("a", "b", "c", "d")


def run_prefix(run_id: str) -> str:
    return f"runs/{run_id}"


def coefficients_dict(values) -> dict[str, float]:
    return {name: float(value) for name, value in zip(COEFFICIENT_NAMES, values, strict=True)}


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@functools.cache
def host_name() -> str:
    # In a Kubernetes pod HOSTNAME is the pod name. Cached: gethostname costs about 1 ms here.
    return os.environ.get("HOSTNAME") or socket.gethostname()


def library_versions(backend: str) -> dict[str, str]:
    versions = {"cubicfit": cubicfit.__version__, "python": platform.python_version(),
                "numpy": np.__version__}
    if backend.startswith("torch"):
        import torch

        versions["torch"] = torch.__version__
        if torch.version.cuda:
            versions["cuda"] = torch.version.cuda
    return versions


def to_json_bytes(document) -> bytes:
    """Serialise with non-finite floats as null, since JSON has no inf or nan."""
    return (json.dumps(_finite_or_none(document), indent=2, sort_keys=False, allow_nan=False)
            + "\n").encode()


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(item) for item in value]
    return value


def losses_csv(losses: np.ndarray, start_step: int = 0) -> bytes:
    """Return `step,loss` rows; losses use the shortest repr that reads back exactly."""
    rows = [f"{start_step + index},{value!r}" for index, value in enumerate(losses.tolist())]
    return ("step,loss\n" + "\n".join(rows) + "\n").encode()


def parse_losses_csv(data: bytes) -> np.ndarray:
    """Return the loss column of a losses.csv file."""
    # "step,loss\n0,1.5\n1,2.5" becomes step,loss,0,1.5,1,2.5: the losses are every second field.
    fields = data.decode().strip().replace("\n", ",").split(",")
    return np.array(fields[3::2], dtype=np.float64)


def result_line(coefficients) -> str:
    """Format the fitted polynomial as `y = a + b x + c x^2 + d x^3` with its numbers."""
    a, b, c, d = (float(value) for value in coefficients)
    terms = [f"{a:.10g}"]
    for value, power in ((b, " x"), (c, " x^2"), (d, " x^3")):
        sign = "-" if value < 0 else "+"
        terms.append(f"{sign} {abs(value):.10g}{power}")
    return "y = " + " ".join(terms)
