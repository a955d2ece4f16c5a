"""The sweep DAG under Airflow 3.3: parsing, pod requests, and dag.test() runs against S3.

Importing Airflow reconfigures logging and warning filters of the importing
process, and Python reports a deprecation only once per process. So each
check runs this file as a script in a fresh interpreter
(`python tests/test_dag.py COMMAND ARGUMENT`). The script prints one line
`RESULT-JSON {...}`, and the tests below read that line and check the bucket.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAG_FOLDER = ROOT / "dags"
DAG_FILE = DAG_FOLDER / "cubic_fit_sweep.py"
DAG_ID = "cubic_fit_sweep"
RESULT_MARK = "RESULT-JSON "
TEST_SECRET_NAME = "cubicfit-test-s3"
CHILD_TIMEOUT = 600  # seconds; a dag.test() run of a small grid takes about 15

pytestmark = pytest.mark.airflow


# The test side

def base_env(home: Path | None = None, **extra: str) -> dict[str, str]:
    """Return an environment with no Airflow, AWS, S3 or cubicfit settings of the caller."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("AIRFLOW", "AWS_", "S3_", "CUBICFIT_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update({
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAG_FOLDER),
        # Kubernetes access would need this file; the pod tests must work without it.
        "KUBECONFIG": "/nonexistent/kubeconfig",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    })
    if home is not None:
        env["AIRFLOW_HOME"] = str(home)
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home}/airflow.db"
    env.update(extra)
    return env


def connection_env(endpoint) -> dict[str, str]:
    """Return AIRFLOW_CONN_CUBICFIT_S3, the DAG's default S3 connection, for `endpoint`."""
    connection = {"conn_type": "aws", "login": endpoint.access_key,
                  "password": endpoint.secret_key,
                  "extra": {"endpoint_url": endpoint.url, "region_name": endpoint.region}}
    return {"AIRFLOW_CONN_CUBICFIT_S3": json.dumps(connection)}


def run_child(command: str, argument, env: dict[str, str]) -> tuple[dict, str]:
    """Run `python tests/test_dag.py COMMAND ARGUMENT`; return its result and its output."""
    completed = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", __file__, command,
         json.dumps(argument)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False)
    output = completed.stdout + completed.stderr
    lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if completed.returncode != 0 or not lines:
        pytest.fail(f"child {command} exited with {completed.returncode}; output:\n"
                    f"{output[-6000:]}", pytrace=False)
    return json.loads(lines[-1][len(RESULT_MARK):]), output


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory) -> Path:
    """Return an Airflow home with a migrated SQLite database."""
    home = tmp_path_factory.mktemp("airflow-home")
    migrated = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"],
                              env=base_env(home), capture_output=True, text=True, timeout=300,
                              check=False)
    assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
    return home


def small_grid(bucket: str, **overrides) -> dict:
    conf = {"learning_rates": [1e-6, 3e-6, 5e-6], "iterations": [300], "seeds": [0, 1],
            "backends": ["numpy"], "devices": ["cpu"], "base": {"n_points": 200},
            "sweep_name": "dag-test", "execution_mode": "local",
            "output": f"s3://{bucket}/airflow", "points_per_task": 4}
    conf.update(overrides)
    return conf


def read_json(endpoint, bucket: str, key: str):
    return json.loads(endpoint.client().get_object(Bucket=bucket, Key=key)["Body"].read())


def result_etags(endpoint, bucket: str, prefix: str) -> dict[str, str]:
    client = endpoint.client()
    return {key: client.head_object(Bucket=bucket, Key=key)["ETag"]
            for key in endpoint.list_keys(bucket, prefix) if key.endswith("/result.json")}


# Parsing

def test_dag_parses_without_db_connections_or_warnings(tmp_path):
    # A database that cannot be opened: any access while parsing is an import error.
    env = base_env(AIRFLOW_HOME=str(tmp_path), AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=(
        "sqlite:////nonexistent-dir/airflow.db"))
    info, _ = run_child("parse", None, env)
    assert info["import_errors"] == {}
    assert info["warnings"] == []
    assert info["queries"] == 0
    assert info["connection_lookups"] == []
    assert info["dag_ids"] == [DAG_ID]


@pytest.fixture(scope="module")
def dag_info(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("parse-home")
    info, _ = run_child("parse", None, base_env(home))
    return info


def test_dag_parse_runs_no_queries(dag_info):
    # Unlike the test above, the database exists here, so a query would run and be counted.
    assert dag_info["import_errors"] == {}
    assert dag_info["queries"] == 0
    assert dag_info["connection_lookups"] == []


def test_dag_has_docs_tags_and_retries(dag_info):
    assert dag_info["tags"] == ["cubicfit", "sweep"]
    assert dag_info["schedule"] is None
    assert dag_info["catchup"] is False
    assert len(dag_info["doc_md"]) > 200
    assert dag_info["description"]
    for task_id, task in dag_info["tasks"].items():
        assert task["retries"] >= 1, task_id


def test_dag_tasks_and_mapping(dag_info):
    tasks = dag_info["tasks"]
    assert set(tasks) == {"plan", "fit.list_worker_batches", "fit.list_cpu_pods",
                          "fit.list_gpu_pods", "fit.run_in_worker", "fit.run_in_cpu_pod",
                          "fit.run_in_gpu_pod", "report"}
    assert {task_id for task_id, task in tasks.items() if task["mapped"]} == {
        "fit.run_in_worker", "fit.run_in_cpu_pod", "fit.run_in_gpu_pod"}
    assert tasks["fit.run_in_gpu_pod"]["pool"] == "cubicfit_gpu"
    assert tasks["fit.run_in_cpu_pod"]["pool"] == "default_pool"
    assert tasks["report"]["trigger_rule"] == "none_failed"
    assert dag_info["serialized_tasks"] == len(tasks)


def test_dag_params_have_types_defaults_and_descriptions(dag_info):
    params = dag_info["params"]
    assert set(params) == {"learning_rates", "iterations", "seeds", "backends", "devices",
                           "base", "sweep_name", "output", "execution_mode", "aws_conn_id",
                           "image", "cuda_image", "namespace", "points_per_task"}
    for name, param in params.items():
        assert param["schema"].get("type"), name
        assert param["schema"].get("title"), name
        assert "default" in param, name
        assert param["description"] or name == "execution_mode", name
    assert params["execution_mode"]["schema"]["enum"] == ["kubernetes", "local"]
    assert params["devices"]["schema"]["items"]["enum"] == ["cpu", "cuda"]
    assert params["learning_rates"]["schema"]["items"]["exclusiveMinimum"] == 0


def test_dag_settings_come_from_airflow_config(tmp_path):
    env = base_env(tmp_path, AIRFLOW__CUBICFIT__EXECUTION_MODE="local",
                   AIRFLOW__CUBICFIT__IMAGE="registry.example/cubicfit:9",
                   AIRFLOW__CUBICFIT__GPU_POOL="gpus")
    info, _ = run_child("parse", None, env)
    assert info["params"]["execution_mode"]["default"] == "local"
    assert info["params"]["image"]["default"] == "registry.example/cubicfit:9"
    assert info["tasks"]["fit.run_in_gpu_pod"]["pool"] == "gpus"


def test_bad_airflow_config_is_an_import_error(tmp_path):
    env = base_env(tmp_path, AIRFLOW__CUBICFIT__EXECUTION_MODE="ssh")
    info, _ = run_child("parse", None, env)
    (message,) = info["import_errors"].values()
    assert "AIRFLOW__CUBICFIT__EXECUTION_MODE) is 'ssh'" in message


# Pod requests, built offline

def pod_params(**overrides) -> dict:
    params = {"learning_rates": [1e-6, 2e-6], "iterations": [500], "seeds": [0, 1, 2],
              "backends": ["torch"], "devices": ["cuda"], "base": {},
              "sweep_name": "gpu-study", "execution_mode": "kubernetes",
              "output": "s3://results/gpu", "aws_conn_id": "cubicfit_s3",
              "image": "registry.example/cubicfit:0.1.0",
              "cuda_image": "registry.example/cubicfit:0.1.0-cuda",
              "namespace": "sweeps", "points_per_task": 4}
    params.update(overrides)
    return params


def container_of(pod: dict) -> dict:
    (container,) = pod["spec"]["containers"]
    return container


def assert_secret_backed_environment(container: dict) -> None:
    env = {variable["name"]: variable for variable in container["env"]}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "S3_ENDPOINT_URL",
                "AWS_DEFAULT_REGION"):
        assert "value" not in env[key], key
        assert env[key]["valueFrom"]["secretKeyRef"] == {
            "name": TEST_SECRET_NAME, "key": key,
            **({"optional": True} if key in ("S3_ENDPOINT_URL", "AWS_DEFAULT_REGION") else {})}
    inline = {name: variable.get("value") for name, variable in env.items()
              if "value" in variable}
    assert inline == {"HOME": "/tmp", "MPLCONFIGDIR": "/tmp/matplotlib"}


def test_cuda_grid_pod_request(tmp_path):
    env = base_env(tmp_path, AIRFLOW__CUBICFIT__S3_SECRET=TEST_SECRET_NAME,
                   AIRFLOW__CUBICFIT__GPU_NODE_SELECTOR='{"gpu.example/model": "h200"}')
    result, _ = run_child("pods", pod_params(), env)
    assert result["cpu"] == []
    assert len(result["gpu"]) == 2  # 6 points, at most 4 per task
    spec_text = result["plan"]["spec_text"]
    for pod, batch in zip(result["gpu"], result["plan"]["batches"], strict=True):
        container = container_of(pod)
        assert container["image"] == "registry.example/cubicfit:0.1.0-cuda"
        assert container["command"] == ["cubicfit"]
        assert container["args"] == ["sweep", "--spec-text", spec_text, "--run-ids",
                                     ",".join(batch["run_ids"]), "--no-report"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert pod["metadata"]["namespace"] == "sweeps"
        assert pod["spec"]["nodeSelector"] == {"gpu.example/model": "h200"}
        assert pod["spec"]["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert pod["spec"]["enableServiceLinks"] is False
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert_secret_backed_environment(container)
        assert "Secret" not in json.dumps(pod["spec"].get("volumes", []))


def test_cpu_grid_pod_request_has_no_gpu(tmp_path):
    env = base_env(tmp_path, AIRFLOW__CUBICFIT__S3_SECRET=TEST_SECRET_NAME)
    result, _ = run_child("pods", pod_params(backends=["numpy"], devices=["cpu"]), env)
    assert result["gpu"] == []
    assert len(result["cpu"]) == 2
    for pod in result["cpu"]:
        container = container_of(pod)
        assert container["image"] == "registry.example/cubicfit:0.1.0"
        assert "nvidia.com/gpu" not in json.dumps(container["resources"])
        assert not pod["spec"].get("nodeSelector")
        assert not pod["spec"].get("tolerations")
        assert_secret_backed_environment(container)


def test_pod_request_holds_no_secret(tmp_path):
    secret = "never-in-a-pod-spec-1234"
    env = base_env(tmp_path, AWS_ACCESS_KEY_ID="AKIATESTKEY", AWS_SECRET_ACCESS_KEY=secret,
                   AIRFLOW_CONN_CUBICFIT_S3=json.dumps({"conn_type": "aws", "login": "key",
                                                        "password": secret}))
    result, output = run_child("pods", pod_params(devices=["cpu", "cuda"]), env)
    assert result["cpu"] and result["gpu"]
    assert secret not in json.dumps(result)


# dag.test() runs in local mode against the test S3 endpoint

@pytest.mark.slow
def test_local_run_writes_results_and_report(airflow_home, s3_endpoint, s3_bucket):
    conf = small_grid(s3_bucket)
    env = base_env(airflow_home, **connection_env(s3_endpoint))
    (first, second), output = run_child("run", [conf, conf], env)
    assert s3_endpoint.secret_key not in output

    assert first["state"] == "success"
    assert first["tasks"]["fit.run_in_worker"] == ["success", "success"]
    assert first["tasks"]["fit.run_in_cpu_pod"] == first["tasks"]["fit.run_in_gpu_pod"] == [
        "skipped"]
    plan = first["xcom"]["plan"]
    assert plan["point_count"] == 6
    assert plan["finished_count"] == 0
    run_ids = [run_id for batch in plan["batches"] for run_id in batch["run_ids"]]
    assert len(run_ids) == 6

    prefix = "airflow"
    keys = set(s3_endpoint.list_keys(s3_bucket, prefix))
    for run_id in run_ids:
        for name in ("config.json", "losses.csv", "fit.png", "result.json"):
            assert f"{prefix}/runs/{run_id}/{name}" in keys
    for name in ("sweep.json", "summary.csv", "report.md", "report.png"):
        assert f"{prefix}/sweeps/dag-test/{name}" in keys

    results = {run_id: read_json(s3_endpoint, s3_bucket, f"{prefix}/runs/{run_id}/result.json")
               for run_id in run_ids}
    succeeded = {run_id: r for run_id, r in results.items() if r["status"] == "succeeded"}
    best = min(succeeded, key=lambda run_id: succeeded[run_id]["final_loss"])
    report = first["xcom"]["report"]
    assert report["best_run_id"] == best
    assert report["best_final_loss"] == succeeded[best]["final_loss"]
    assert report["best_optimality_gap"] == succeeded[best]["optimality_gap"]
    assert report["runs"] == 6
    assert report["missing"] == 0
    assert report["diverged"] == sum(r["status"] == "diverged" for r in results.values())
    assert report["report"] == f"s3://{s3_bucket}/{prefix}/sweeps/dag-test/report.md"

    summary = s3_endpoint.client().get_object(
        Bucket=s3_bucket, Key=f"{prefix}/sweeps/dag-test/summary.csv")["Body"].read().decode()
    rows = {line.split(",")[1]: line for line in summary.splitlines()[1:]}
    assert set(rows) == set(run_ids)
    for run_id, result in results.items():
        assert result["status"] in rows[run_id]
    markdown = s3_endpoint.client().get_object(
        Bucket=s3_bucket, Key=f"{prefix}/sweeps/dag-test/report.md")["Body"].read().decode()
    assert f"| 1 | `{best}` |" in markdown

    # The same grid again: plan finds every result, no fit runs, the report is rebuilt.
    assert second["state"] == "success"
    assert second["xcom"]["plan"]["finished_count"] == 6
    assert second["xcom"]["plan"]["batches"] == []
    assert second["tasks"]["fit.run_in_worker"] == ["skipped"]
    assert second["xcom"]["report"]["best_run_id"] == best


@pytest.mark.slow
def test_invalid_params_rejected_before_fits(airflow_home, s3_endpoint, s3_bucket):
    env = base_env(airflow_home, **connection_env(s3_endpoint))
    confs = [
        small_grid(s3_bucket, learning_rates=[-1e-6]),
        small_grid(s3_bucket, backends=["numpy"], devices=["cuda"]),
        small_grid(s3_bucket, seeds=[]),
    ]
    (schema, numpy_cuda, empty), output = run_child("run", confs, env)

    assert schema["error"] == "ParamValidationError"
    assert "learning_rates" in schema["message"]
    assert "-1e-06 is less than or equal to the minimum of 0" in schema["message"]

    for run in (numpy_cuda, empty):
        assert run["state"] == "failed"
        assert run["tasks"]["plan"] == ["failed"]
        assert run["tries"]["plan"] == 1  # AirflowFailException: no retries
        assert run["tasks"]["fit.run_in_worker"] == ["upstream_failed"]
        assert run["tasks"]["report"] == ["upstream_failed"]
    assert "remove numpy from backends or cuda from devices" in output
    assert "the grid is empty because seeds has no values" in output
    assert s3_endpoint.list_keys(s3_bucket) == []


@pytest.mark.slow
def test_map_length_read_when_plan_runs(airflow_home, s3_endpoint, s3_bucket):
    env = base_env(airflow_home, AIRFLOW__CORE__MAX_MAP_LENGTH="2",
                   **connection_env(s3_endpoint))
    conf = small_grid(s3_bucket, learning_rates=[1e-6], seeds=[0, 1, 2, 3, 4],
                      points_per_task=1)
    (run,), _ = run_child("run", [conf], env)
    assert run["state"] == "success"
    assert [len(batch["run_ids"]) for batch in run["xcom"]["plan"]["batches"]] == [3, 2]
    assert run["tasks"]["fit.run_in_worker"] == ["success", "success"]
    assert run["xcom"]["report"]["runs"] == 5


@pytest.mark.slow
def test_retried_fit_skips_finished_runs(airflow_home, s3_endpoint, s3_bucket):
    from cubicfit.pipeline.planning import build_plan, worker_batches
    from cubicfit.pipeline.request import read_request

    conf = small_grid(s3_bucket, aws_conn_id="cubicfit_s3", image="unused",
                      cuda_image="unused", namespace="unused", points_per_task=6)
    (batch,) = worker_batches(build_plan(read_request(conf), 1024, lambda spec: set()))
    env = base_env(airflow_home, **connection_env(s3_endpoint))

    # A first try that finished only part of the batch before it was stopped.
    partial = {**batch, "run_ids": batch["run_ids"][:2]}
    run_child("fit", partial, env)
    before = result_etags(s3_endpoint, s3_bucket, "airflow/runs/")
    assert len(before) == 2

    summary, output = run_child("fit", batch, env)
    assert summary == {"batch": 0, "device_kind": "cpu", "runs": 6}
    assert "2 of 6 runs already finished; running 4" in output
    after = result_etags(s3_endpoint, s3_bucket, "airflow/runs/")
    assert len(after) == 6
    assert {key: after[key] for key in before} == before


@pytest.mark.slow
def test_fit_uses_environment_without_connection(airflow_home, s3_endpoint, s3_bucket):
    from cubicfit.pipeline.planning import build_plan, worker_batches
    from cubicfit.pipeline.request import read_request

    conf = small_grid(s3_bucket, aws_conn_id="no_such_connection", learning_rates=[1e-6],
                      seeds=[0], image="unused", cuda_image="unused", namespace="unused")
    (batch,) = worker_batches(build_plan(read_request(conf), 1024, lambda spec: set()))
    env = base_env(airflow_home, S3_ENDPOINT_URL=s3_endpoint.url,
                   AWS_ACCESS_KEY_ID=s3_endpoint.access_key,
                   AWS_SECRET_ACCESS_KEY=s3_endpoint.secret_key,
                   AWS_DEFAULT_REGION=s3_endpoint.region)
    _, output = run_child("fit", batch, env)
    assert "no Airflow connection 'no_such_connection'" in output
    assert len(result_etags(s3_endpoint, s3_bucket, "airflow/runs/")) == 1


# The child side: everything below runs in a fresh interpreter that imports Airflow.

def child_parse(_argument) -> dict:
    """Load the DAG folder as the DAG processor does, counting queries and connection lookups."""
    import warnings

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    queries = []
    event.listen(Engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: queries.append(statement))
    lookups = []

    from airflow.sdk import BaseHook, Connection

    def refuse_lookup(conn_id, *args, **kwargs):
        lookups.append(conn_id)
        raise RuntimeError(f"connection {conn_id!r} looked up while parsing the DAG")

    BaseHook.get_connection = classmethod(lambda cls, conn_id, *a, **k: refuse_lookup(conn_id))
    Connection.get = classmethod(lambda cls, conn_id, *a, **k: refuse_lookup(conn_id))

    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.definitions.mappedoperator import MappedOperator
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.trigger_rule import TriggerRule

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bag = DagBag(dag_folder=str(DAG_FILE))
    captured = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    captured += [str(w) for found in bag.captured_warnings.values() for w in found]
    info = {"import_errors": dict(bag.import_errors), "warnings": captured,
            "dag_ids": sorted(bag.dags), "queries": len(queries),
            "connection_lookups": lookups}
    if DAG_ID not in bag.dags:
        return info

    dag = bag.dags[DAG_ID]
    serialized = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    info.update({
        "tags": sorted(dag.tags),
        "schedule": dag.schedule,
        "catchup": dag.catchup,
        "doc_md": dag.doc_md or "",
        "description": dag.description,
        "params": {name: {"default": param.value, "description": param.description,
                          "schema": param.schema}
                   for name, param in ((name, dag.params.get_param(name))
                                       for name in dag.params)},
        "tasks": {task.task_id: {"retries": task.retries, "pool": task.pool,
                                 "mapped": isinstance(task, MappedOperator),
                                 "trigger_rule": TriggerRule(task.trigger_rule).value}
                  for task in dag.tasks},
        "serialized_tasks": len(serialized.task_dict),
        "queries": len(queries),
    })
    return info


def child_pods(params: dict) -> dict:
    """Plan `params` with no finished runs and build every pod request without a cluster."""
    from airflow.dag_processing.dagbag import DagBag
    from kubernetes.client import ApiClient

    from cubicfit.pipeline.planning import build_plan
    from cubicfit.pipeline.request import read_request

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags[DAG_ID]
    plan = build_plan(read_request(params), 1024, lambda spec: set())
    pods = {}
    for kind in ("cpu", "gpu"):
        items = dag.get_task(f"fit.list_{kind}_pods").python_callable(plan)
        mapped = dag.get_task(f"fit.run_in_{kind}_pod")
        requests = [mapped.unmap(item).build_pod_request_obj(dry_run=True) for item in items]
        pods[kind] = [ApiClient().sanitize_for_serialization(pod) for pod in requests]
    return {"plan": plan, **pods}


def child_run(confs: list[dict]) -> list[dict]:
    """Run dag.test() once per conf; return states, tries and XComs of each run."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.xcom import XComModel
    from airflow.sdk.exceptions import ParamValidationError
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag = DagBag(dag_folder=str(DAG_FILE)).dags[DAG_ID]
    runs = []
    for conf in confs:
        try:
            run = dag.test(run_conf=conf)
        except ParamValidationError as error:
            runs.append({"error": "ParamValidationError", "message": str(error)})
            continue
        tasks, tries = {}, {}
        for ti in sorted(run.get_task_instances(), key=lambda ti: (ti.task_id, ti.map_index)):
            tasks.setdefault(ti.task_id, []).append(str(ti.state))
            tries[ti.task_id] = ti.try_number
        with create_session() as session:
            rows = session.scalars(select(XComModel).where(
                XComModel.dag_id == DAG_ID, XComModel.run_id == run.run_id,
                XComModel.key == "return_value", XComModel.map_index == -1)).all()
            xcom = {row.task_id: XComModel.deserialize_value(row) for row in rows}
        runs.append({"state": str(run.state), "tasks": tasks, "tries": tries, "xcom": xcom})
    return runs


def child_fit(batch: dict) -> dict:
    """Run one batch as the fit task in local mode does."""
    from cubicfit.pipeline.tasks import fit_in_worker

    return fit_in_worker(batch)


CHILD_COMMANDS = {"parse": child_parse, "pods": child_pods, "run": child_run, "fit": child_fit}


if __name__ == "__main__":
    command, argument = sys.argv[1], json.loads(sys.argv[2])
    result = CHILD_COMMANDS[command](argument)
    print(RESULT_MARK + json.dumps(result, default=str), flush=True)
