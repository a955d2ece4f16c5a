"""The DAG's parameters: the fields of the trigger form in the Airflow UI and their validation.

Airflow checks every value against its JSON schema when a run is triggered,
from the form or the REST API, and rejects the run before any task starts.
Rules that span several fields (numpy on CUDA, a local output with
Kubernetes pods, an empty grid) are checked by the `plan` task, which fails
without retries before any fit starts.
"""

from airflow.sdk import Param

from cubicfit.config import BACKENDS, DTYPES, MAX_ITERATIONS, MAX_POINTS, MAX_SEED, TARGETS
from cubicfit.pipeline.settings import AIRFLOW_ID, DNS_LABEL, EXECUTION_MODES, DeploymentSettings

GRID = "Grid: every combination of these values is one run"
FIT = "Settings shared by every run"
EXECUTION = "Output and execution"

SWEEP_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
IMAGE = r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$"
DEVICE_KINDS = ("cpu", "cuda")
# More grid points per task make the --run-ids argument of a pod longer:
# 10000 run ids are about 170 kB, well below the size limits of a pod spec.
MAX_POINTS_PER_TASK = 10_000
DEFAULT_POINTS_PER_TASK = 64

# The fit fields that `base` may set. The grid fields and `output` have their own fields.
BASE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "dtype": {"type": ["string", "null"], "enum": [*DTYPES, None]},
        "init": {"type": ["array", "null"], "items": {"type": "number"},
                 "minItems": 4, "maxItems": 4},
        "n_points": {"type": "integer", "minimum": 4, "maximum": MAX_POINTS},
        "x_min": {"type": "number"},
        "x_max": {"type": "number"},
        "target": {"type": "string", "enum": list(TARGETS)},
        "log_every": {"type": "integer", "minimum": 1, "maximum": MAX_ITERATIONS},
    },
}


def trigger_params(settings: DeploymentSettings) -> dict[str, Param]:
    """Return the DAG's params; `settings` supplies the deployment's defaults."""
    return {
        "learning_rates": Param(
            [1e-6, 2e-6, 3e-6],
            type="array",
            items={"type": "number", "exclusiveMinimum": 0},
            title="Learning rates",
            description="Gradient-descent step sizes, each > 0. For the default data, rates "
            "above about 3.56e-6 (the stability bound that every result.json reports) diverge.",
            section=GRID,
        ),
        "iterations": Param(
            [2000],
            type="array",
            items={"type": "integer", "minimum": 1, "maximum": MAX_ITERATIONS},
            title="Iterations",
            description="Numbers of gradient-descent steps.",
            section=GRID,
        ),
        "seeds": Param(
            [0, 1, 2],
            type="array",
            items={"type": "integer", "minimum": 0, "maximum": MAX_SEED},
            title="Seeds",
            description="Seeds of the N(0, 1) start values. Ignored when the base "
            "configuration sets init.",
            section=GRID,
        ),
        "backends": Param(
            ["numpy"],
            type="array",
            items={"type": "string", "enum": list(BACKENDS)},
            examples=list(BACKENDS),
            title="Backends",
            description="numpy runs on the CPU only; torch and torch-autograd run on the CPU "
            "or on CUDA.",
            section=GRID,
        ),
        "devices": Param(
            ["cpu"],
            type="array",
            items={"type": "string", "enum": list(DEVICE_KINDS)},
            examples=list(DEVICE_KINDS),
            title="Devices",
            description="cuda needs a torch backend. In kubernetes mode a CUDA batch runs in a "
            "pod with one GPU.",
            section=GRID,
        ),
        "base": Param(
            {"n_points": 2000, "target": "sin"},
            **BASE_SCHEMA,
            title="Base configuration",
            description="Fit fields shared by every run, as JSON: dtype (float32 or float64), "
            "init ([a, b, c, d] start values), n_points, x_min, x_max, target (sin, cos, tanh "
            "or exp) and log_every. Unset fields keep the cubicfit defaults.",
            section=FIT,
        ),
        "sweep_name": Param(
            None,
            type=["null", "string"],
            pattern=SWEEP_NAME,
            title="Sweep name",
            description="Names the report folder sweeps/<name>/: 1 to 64 letters, digits, '.', "
            "'_' or '-'. Empty: a name derived from the grid and base configuration.",
            section=FIT,
        ),
        "output": Param(
            settings.output,
            type="string",
            minLength=1,
            title="Output location",
            description="s3://bucket/prefix for the results and the report. In local mode it "
            "may also be a folder on the Airflow worker.",
            section=EXECUTION,
        ),
        "execution_mode": Param(
            settings.execution_mode,
            type="string",
            enum=list(EXECUTION_MODES),
            values_display={"kubernetes": "kubernetes: one pod per batch",
                            "local": "local: in the Airflow worker, for development"},
            title="Execution mode",
            section=EXECUTION,
        ),
        "aws_conn_id": Param(
            settings.aws_conn_id,
            type=["null", "string"],
            pattern=AIRFLOW_ID,
            title="S3 connection",
            description="Airflow connection of type aws with the S3 credentials, and "
            "endpoint_url in its extra for MinIO. The plan and report tasks, and local-mode "
            "fits, use it; when it does not exist they use the worker's environment. Pods "
            "read the Kubernetes Secret instead.",
            section=EXECUTION,
        ),
        "image": Param(
            settings.image,
            type="string",
            pattern=IMAGE,
            title="Image",
            description="cubicfit image for CPU batches in kubernetes mode.",
            section=EXECUTION,
        ),
        "cuda_image": Param(
            settings.cuda_image,
            type="string",
            pattern=IMAGE,
            title="CUDA image",
            description="cubicfit image with CUDA-enabled torch, for CUDA batches in kubernetes "
            "mode.",
            section=EXECUTION,
        ),
        "namespace": Param(
            settings.namespace,
            type="string",
            pattern=DNS_LABEL,
            title="Namespace",
            description="Kubernetes namespace of the pods; the Secret with the S3 credentials "
            f"({settings.s3_secret}) must exist there.",
            section=EXECUTION,
        ),
        "points_per_task": Param(
            DEFAULT_POINTS_PER_TASK,
            type="integer",
            minimum=1,
            maximum=MAX_POINTS_PER_TASK,
            title="Grid points per task",
            description="The largest number of runs in one fit task (one pod in kubernetes "
            "mode). Raised automatically when the grid would need more mapped tasks than Airflow's "
            "[core] max_map_length allows.",
            section=EXECUTION,
        ),
    }
