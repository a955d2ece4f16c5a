"""The sweep DAG's logic without Airflow: parameters, batches, plans, pods and child processes.

Nothing here imports Airflow, which reconfigures logging and warnings in the
importing process; tests/test_dag.py runs the Airflow side in child processes.
"""

import json

import pytest

from cubicfit.errors import ConfigError
from cubicfit.exitcodes import ExitCode
from cubicfit.pipeline import pods
from cubicfit.pipeline.batches import batch_size, split_into_batches
from cubicfit.pipeline.command import CommandFailed, run_cubicfit
from cubicfit.pipeline.environment import child_environment
from cubicfit.pipeline.planning import build_plan, parse_request_spec, pod_batches, worker_batches
from cubicfit.pipeline.request import read_request
from cubicfit.pipeline.settings import DeploymentSettings, read_settings
from cubicfit.sweep.spec import MAX_GRID_POINTS, parse_sweep_spec


def make_params(**overrides):
    params = {
        "learning_rates": [1e-6, 2e-6],
        "iterations": [200],
        "seeds": [0, 1, 2],
        "backends": ["numpy"],
        "devices": ["cpu"],
        "base": {"n_points": 500},
        "sweep_name": None,
        "output": "s3://results/sweeps",
        "execution_mode": "kubernetes",
        "aws_conn_id": "cubicfit_s3",
        "image": "registry.example/cubicfit:0.1.0",
        "cuda_image": "registry.example/cubicfit:0.1.0-cuda",
        "namespace": "cubicfit",
        "points_per_task": 4,
    }
    params.update(overrides)
    return params


def no_finished_runs(spec):
    return set()


# Parameters

def test_request_builds_spec_in_grid_order():
    request = read_request(make_params(sweep_name="lr-study"))
    document = json.loads(request.spec_text)
    assert document["name"] == "lr-study"
    assert list(document["grid"]) == ["backend", "device", "learning_rate", "iterations", "seed"]
    assert document["base"] == {"n_points": 500, "output": "s3://results/sweeps"}
    assert request.aws_conn_id == "cubicfit_s3"


def test_request_spec_matches_cli_parsing():
    request = read_request(make_params())
    points = parse_request_spec(request).expand()
    assert len(points) == 6
    assert {point.config.n_points for point in points} == {500}
    assert {point.config.output for point in points} == {"s3://results/sweeps"}


@pytest.mark.parametrize("overrides, message", [
    ({"learning_rates": []}, "the grid is empty because learning_rates has no values"),
    ({"seeds": []}, "the grid is empty because seeds has no values"),
    ({"backends": ["numpy", "torch"], "devices": ["cpu", "cuda"]},
     "remove numpy from backends or cuda from devices"),
    ({"base": {"learning_rate": 1e-6}}, "base sets 'learning_rate', which has its own form field"),
    ({"base": {"output": "/tmp/x"}}, "base sets 'output'"),
    ({"output": "./results"}, "pods cannot write to a folder of the Airflow worker"),
    ({"output": "results", "execution_mode": "local"}, "'results', a relative folder"),
    ({"execution_mode": "docker"}, "execution_mode is 'docker'"),
    ({"points_per_task": 0}, "points_per_task must be a whole number >= 1, got 0"),
    ({"points_per_task": True}, "points_per_task must be a whole number"),
    ({"image": None}, "parameter image is missing"),
    ({"seeds": "0,1"}, "parameter seeds must be a list of values, got '0,1'"),
])
def test_request_rejects_bad_params(overrides, message):
    with pytest.raises(ConfigError) as error:
        read_request(make_params(**overrides))
    assert message in str(error.value)


def test_request_allows_local_folder_in_local_mode():
    request = read_request(make_params(execution_mode="local", output="/tmp/cubicfit-results"))
    assert request.output == "/tmp/cubicfit-results"


def test_request_empty_connection_means_environment():
    assert read_request(make_params(aws_conn_id="")).aws_conn_id is None
    assert read_request(make_params(aws_conn_id=None)).aws_conn_id is None


def test_invalid_grid_value_names_field():
    request = read_request(make_params(iterations=[0]))
    with pytest.raises(ConfigError, match="iterations: must be between 1 and"):
        build_plan(request, 1024, no_finished_runs)


# Batches

def expand(grid, base=None):
    return parse_sweep_spec({"base": base or {}, "grid": grid}, "test").expand()


def test_batches_respect_points_per_task():
    points = expand({"learning_rate": [1e-6, 2e-6], "seed": list(range(10))})
    batches = split_into_batches(points, points_per_task=6, max_tasks=1024)
    assert [len(batch.run_ids) for batch in batches] == [5, 5, 5, 5]
    assert [batch.index for batch in batches] == [0, 1, 2, 3]
    all_ids = [run_id for batch in batches for run_id in batch.run_ids]
    assert sorted(all_ids) == sorted(point.config.run_id for point in points)
    assert len(set(all_ids)) == len(all_ids)


def test_batches_never_mix_device_kinds():
    points = expand({"backend": ["torch"], "device": ["cpu", "cuda"], "seed": [0, 1, 2]})
    batches = split_into_batches(points, points_per_task=100, max_tasks=1024)
    assert [batch.device_kind for batch in batches] == ["cpu", "cuda"]
    cuda_ids = {p.config.run_id for p in points if p.config.device == "cuda"}
    assert set(batches[1].run_ids) == cuda_ids


def test_batches_group_by_backend():
    points = expand({"seed": [0, 1], "backend": ["numpy", "torch"]})  # alternates backends
    batches = split_into_batches(points, points_per_task=2, max_tasks=1024)
    backends = {p.config.run_id: p.config.backend for p in points}
    assert [{backends[run_id] for run_id in batch.run_ids} for batch in batches] == [
        {"numpy"}, {"torch"}]


@pytest.fixture(scope="module")
def largest_grid():
    return expand({"backend": ["torch"], "device": ["cpu", "cuda"],
                   "seed": list(range(MAX_GRID_POINTS // 2))})


@pytest.mark.parametrize("max_tasks", [1024, 100, 7, 2])
def test_largest_grid_stays_within_map_length(largest_grid, max_tasks):
    batches = split_into_batches(largest_grid, points_per_task=64, max_tasks=max_tasks)
    assert len(batches) <= max_tasks
    assert sum(len(batch.run_ids) for batch in batches) == MAX_GRID_POINTS
    sizes = [len(batch.run_ids) for batch in batches]
    assert max(sizes) - min(sizes) <= 1


def test_batch_size_grows_only_when_needed():
    assert batch_size([100], points_per_task=10, max_tasks=1024) == 10
    assert batch_size([100], points_per_task=10, max_tasks=5) == 20
    assert batch_size([100, 1], points_per_task=10, max_tasks=2) == 100
    assert batch_size([3], points_per_task=50, max_tasks=1) == 50


def test_map_length_below_device_kinds_fails():
    points = expand({"backend": ["torch"], "device": ["cpu", "cuda"]})
    with pytest.raises(ConfigError, match="max_map_length is 1, but this grid needs at least 2"):
        split_into_batches(points, points_per_task=64, max_tasks=1)


def test_no_points_no_batches():
    assert split_into_batches([], points_per_task=64, max_tasks=1024) == []


# Plans

def test_plan_drops_finished_runs():
    request = read_request(make_params())
    ids = [point.config.run_id for point in parse_request_spec(request).expand()]
    plan = build_plan(request, 1024, lambda spec: set(ids[:4]))
    assert plan["point_count"] == 6
    assert plan["finished_count"] == 4
    planned = [run_id for batch in plan["batches"] for run_id in batch["run_ids"]]
    assert sorted(planned) == sorted(ids[4:])


def test_plan_with_every_run_finished_is_empty():
    request = read_request(make_params())
    plan = build_plan(request, 1024, lambda spec: {p.config.run_id for p in spec.expand()})
    assert plan["batches"] == []
    assert plan["finished_count"] == plan["point_count"] == 6


def test_plan_is_json_without_secrets():
    plan = build_plan(read_request(make_params()), 1024, no_finished_runs)
    text = json.dumps(plan)
    assert json.loads(text) == plan
    assert "AWS_SECRET_ACCESS_KEY" not in text
    assert plan["aws_conn_id"] == "cubicfit_s3"


def test_plan_selects_runner_by_mode():
    params = make_params(backends=["torch"], devices=["cpu", "cuda"])
    pod_plan = build_plan(read_request(params), 1024, no_finished_runs)
    assert worker_batches(pod_plan) == []
    assert {b["device_kind"] for b in pod_batches(pod_plan, "cuda")} == {"cuda"}
    assert {b["device_kind"] for b in pod_batches(pod_plan, "cpu")} == {"cpu"}

    local_plan = build_plan(read_request({**params, "execution_mode": "local"}), 1024,
                            no_finished_runs)
    assert pod_batches(local_plan, "cpu") == pod_batches(local_plan, "cuda") == []
    batches = worker_batches(local_plan)
    assert len(batches) == len(local_plan["batches"])
    assert batches[0]["spec_text"] == local_plan["spec_text"]
    assert batches[0]["aws_conn_id"] == "cubicfit_s3"


# Pods

def test_pod_arguments_pick_image_by_device():
    params = make_params(backends=["torch"], devices=["cpu", "cuda"], sweep_name="GPU_vs.CPU")
    plan = build_plan(read_request(params), 1024, no_finished_runs)
    cpu, cuda = plan["batches"][0], plan["batches"][-1]
    assert pods.batch_arguments(plan, cpu)["image"] == "registry.example/cubicfit:0.1.0"
    arguments = pods.batch_arguments(plan, cuda)
    assert arguments["image"] == "registry.example/cubicfit:0.1.0-cuda"
    assert arguments["name"] == f"cubicfit-gpu-vs-cpu-{cuda['index']}"
    assert arguments["namespace"] == "cubicfit"
    assert arguments["arguments"] == ["sweep", "--spec-text", plan["spec_text"], "--run-ids",
                                      ",".join(cuda["run_ids"]), "--no-report"]


def test_pod_settings_gpu_only_for_cuda():
    settings = DeploymentSettings(gpu_pool="gpus", gpu_node_selector={"gpu": "h200"})
    cpu = pods.operator_settings(settings, "cpu")
    cuda = pods.operator_settings(settings, "cuda")
    assert "nvidia.com/gpu" not in cpu["container_resources"].limits
    assert "pool" not in cpu
    assert "node_selector" not in cpu
    assert "tolerations" not in cpu
    assert cuda["container_resources"].limits["nvidia.com/gpu"] == "1"
    assert cuda["pool"] == "gpus"
    assert cuda["node_selector"] == {"gpu": "h200"}
    assert cuda["tolerations"][0].key == "nvidia.com/gpu"


def test_pod_environment_only_references_secret():
    for variable in pods.operator_settings(DeploymentSettings(s3_secret="s3-keys"), "cpu")[
            "env_vars"]:
        if variable.name.startswith(("AWS_", "S3_")):
            assert variable.value is None
            assert variable.value_from.secret_key_ref.name == "s3-keys"
            assert variable.value_from.secret_key_ref.key == variable.name


# Settings

class FakeConfig:
    def __init__(self, values):
        self.values = values

    def get(self, section, key, fallback=None):
        assert section == "cubicfit"
        return self.values.get(key, fallback)


def test_settings_defaults_and_overrides():
    assert read_settings(FakeConfig({})) == DeploymentSettings()
    settings = read_settings(FakeConfig({"execution_mode": "local", "namespace": "ml",
                                         "gpu_node_selector": '{"pool": "gpu"}'}))
    assert settings.execution_mode == "local"
    assert settings.namespace == "ml"
    assert settings.gpu_node_selector == {"pool": "gpu"}


@pytest.mark.parametrize("values, message", [
    ({"execution_mode": "ssh"}, "AIRFLOW__CUBICFIT__EXECUTION_MODE) is 'ssh'"),
    ({"namespace": "My_NS"}, "is 'My_NS', which is not a Kubernetes name"),
    ({"gpu_node_selector": "gpu=true"}, "gpu_node_selector (or AIRFLOW__CUBICFIT__"),
    ({"gpu_node_selector": '{"gpu": true}'}, "must be a JSON object of string labels"),
])
def test_settings_reject_bad_values(values, message):
    with pytest.raises(ConfigError) as error:
        read_settings(FakeConfig(values))
    assert message in str(error.value)


# Child processes

def test_child_environment_drops_cubicfit_variables():
    environ = {"PATH": "/bin", "CUBICFIT_LEARNING_RATE": "1", "JOB_COMPLETION_INDEX": "3",
               "S3_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "key"}
    env = child_environment(None, environ)
    assert env == {"PATH": "/bin", "S3_ENDPOINT_URL": "http://127.0.0.1:9",
                   "AWS_ACCESS_KEY_ID": "key"}


def test_command_returns_stdout_and_forwards_log(tmp_path, caplog):
    request = read_request(make_params(execution_mode="local", output=str(tmp_path / "out")))
    caplog.set_level("INFO")
    output = run_cubicfit(["plan", "--spec-text", request.spec_text, "--format", "json"],
                          child_environment(None), "test plan")
    assert len(json.loads(output)["points"]) == 6
    assert any(record.name == "cubicfit.pipeline.command" for record in caplog.records)


def test_command_config_error_not_retryable(tmp_path):
    with pytest.raises(CommandFailed) as error:
        run_cubicfit(["sweep", "--spec-text", '{"grid": {"seed": []}}'],
                     child_environment(None), "bad sweep")
    assert error.value.exit_code == ExitCode.INVALID_CONFIG
    assert not error.value.retryable
    assert "bad sweep failed with exit code 2 (invalid configuration)" in str(error.value)
    assert "grid field 'seed' needs a non-empty list" in str(error.value)


def test_command_storage_error_retryable(tmp_path):
    spec = json.dumps({"base": {"output": "s3://no-such-bucket-here/x"}, "grid": {"seed": [0]}})
    env = {**child_environment(None), "S3_ENDPOINT_URL": "http://127.0.0.1:9",
           "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
           "CUBICFIT_S3_MAX_ATTEMPTS": "1"}
    env = {key: value for key, value in env.items() if key != "AWS_PROFILE"}
    with pytest.raises(CommandFailed) as error:
        run_cubicfit(["sweep", "--spec-text", spec], env, "unreachable sweep")
    assert error.value.exit_code == ExitCode.STORAGE_ERROR
    assert error.value.retryable


def test_command_runs_without_path():
    output = run_cubicfit(["plan", "--spec-text", '{"base": {"output": "/nonexistent-dir"}, '
                           '"grid": {"seed": [0]}}', "--format", "json"],
                          {}, "plan without PATH")
    assert json.loads(output)["points"][0]["finished"] is False
