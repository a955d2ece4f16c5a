"""Deployment settings of the sweep DAG, read from the `[cubicfit]` section of the Airflow config.

They are read when the DAG file is parsed, from the configuration file or
`AIRFLOW__CUBICFIT__<KEY>` environment variables, never from the metadata
database or a connection. Some become the defaults of the trigger form
(execution_mode, output, image, cuda_image, namespace, aws_conn_id); the
others fix how pods are built. None of them is secret: the S3 credentials
stay in the Kubernetes Secret and the Airflow connection that they name.
"""

import dataclasses
import json
import re
from typing import Any

from cubicfit.errors import ConfigError

EXECUTION_MODES = ("kubernetes", "local")
SECTION = "cubicfit"
# A Kubernetes object name (RFC 1123 label): namespaces, Secrets.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
# An Airflow connection or pool id: letters, digits, '.', '_' and '-'.
AIRFLOW_ID = r"^[A-Za-z0-9_.-]{1,250}$"


@dataclasses.dataclass(frozen=True)
class DeploymentSettings:
    execution_mode: str = "kubernetes"
    output: str = "s3://cubicfit/results"
    image: str = "cubicfit:0.1.0"
    cuda_image: str = "cubicfit:0.1.0-cuda"
    namespace: str = "cubicfit"
    aws_conn_id: str = "cubicfit_s3"
    s3_secret: str = "cubicfit-s3"  # noqa: S105 - the name of a Kubernetes Secret, not a secret
    kubernetes_conn_id: str = "kubernetes_default"
    gpu_pool: str = "cubicfit_gpu"
    gpu_resource: str = "nvidia.com/gpu"
    gpu_toleration_key: str = "nvidia.com/gpu"
    gpu_node_selector: dict[str, str] = dataclasses.field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"})


def read_settings(config: Any) -> DeploymentSettings:
    """Build the settings from an Airflow config object; a missing key keeps its default."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(DeploymentSettings):
        raw = config.get(SECTION, field.name, fallback=None)
        if raw is None or not str(raw).strip():
            continue
        values[field.name] = _parse(field.name, str(raw).strip())
    return DeploymentSettings(**values)


def _parse(name: str, text: str) -> Any:
    variable = f"AIRFLOW__{SECTION.upper()}__{name.upper()}"
    if name == "gpu_node_selector":
        return _parse_node_selector(text, variable)
    if name == "execution_mode" and text not in EXECUTION_MODES:
        raise ConfigError(f"[{SECTION}] {name} (or {variable}) is {text!r}; "
                          f"set it to one of {', '.join(EXECUTION_MODES)}")
    if name in ("namespace", "s3_secret") and not re.match(DNS_LABEL, text):
        raise ConfigError(f"[{SECTION}] {name} (or {variable}) is {text!r}, which is not a "
                          "Kubernetes name; use lowercase letters, digits and '-'")
    if name in ("aws_conn_id", "kubernetes_conn_id", "gpu_pool") and not re.match(AIRFLOW_ID, text):
        raise ConfigError(f"[{SECTION}] {name} (or {variable}) is {text!r}; use letters, "
                          "digits, '.', '_' and '-'")
    return text


def _parse_node_selector(text: str, variable: str) -> dict[str, str]:
    try:
        selector = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"[{SECTION}] gpu_node_selector (or {variable}) is not valid JSON "
                          f"({error}); write an object such as "
                          '{"nvidia.com/gpu.present": "true"}') from None
    if not isinstance(selector, dict) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in selector.items()):
        raise ConfigError(f"[{SECTION}] gpu_node_selector (or {variable}) must be a JSON object "
                          "of string labels to string values, got " + text)
    return selector
