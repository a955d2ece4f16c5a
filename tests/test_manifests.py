"""Checks of the Kubernetes manifests in k8s/ that need no cluster.

The schema checks use kubernetes-validate's strict schemas, the configuration
checks the real `cubicfit` parser, and the exit-code checks the real CLI.
"""

import base64
import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes.utils.quantity import parse_quantity
from kubernetes_validate import utils as kubernetes_validate
from packaging.version import Version

from cubicfit.cli import build_parser, field_flags, main
from cubicfit.config import fields_from_env, load_fit_config
from cubicfit.exitcodes import ExitCode
from cubicfit.sweep.shards import resolve_shard
from cubicfit.sweep.spec import load_sweep_spec

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
MANIFESTS = sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")
OLDEST_VERSION = Version("1.29")
SCHEMA_VERSIONS = sorted(
    {version for version in kubernetes_validate.all_versions()
     if Version(version) >= OLDEST_VERSION},
    key=Version,
)
WORKLOAD_KINDS = ("Job", "Deployment")
# Exit codes of one fit that no retry can fix, and the ones a retry may fix.
FIT_FAIL_JOB_CODES = {ExitCode.INVALID_CONFIG, ExitCode.DEVICE_UNAVAILABLE, ExitCode.DIVERGED}
# A sweep records diverged points as results and exits 0, so 5 never occurs.
SWEEP_FAIL_JOB_CODES = {ExitCode.INVALID_CONFIG, ExitCode.DEVICE_UNAVAILABLE}
RETRIABLE_CODES = {ExitCode.INTERNAL_ERROR, ExitCode.STORAGE_ERROR}
HEADER_COMMANDS = ("Apply", "Check", "Logs", "Clean")
REQUIRED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/part-of",
                   "app.kubernetes.io/managed-by")
CREDENTIAL_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN", re.IGNORECASE)


def load(path: Path) -> list[dict]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def documents() -> list[tuple[Path, dict]]:
    return [(path, document) for path in MANIFESTS for document in load(path)]


def find(path: Path, kind: str, name: str | None = None) -> dict:
    matches = [document for document in load(path) if document["kind"] == kind
               and (name is None or document["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''} in {path.name}: {len(matches)}"
    return matches[0]


def workloads() -> list[tuple[Path, dict]]:
    return [(path, document) for path, document in documents()
            if document["kind"] in WORKLOAD_KINDS]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def cubicfit_jobs() -> list[tuple[Path, dict]]:
    return [(path, document) for path, document in workloads() if document["kind"] == "Job"
            and any(container["image"].startswith("cubicfit:")
                    for container in containers(pod_spec(document)))]


def workload_id(item) -> str:
    path, document = item
    return f"{path.name}:{document['metadata']['name']}"


def plain_env(container: dict) -> dict[str, str]:
    """Return the variables that have literal values (values from a Secret are unknown here)."""
    return {entry["name"]: entry["value"] for entry in container.get("env", []) if "value" in entry}


def materialize_mounts(path: Path, spec: dict, container: dict, folder: Path) -> dict[str, Path]:
    """Create a folder per volume mount with its ConfigMap files, and map mount paths to them."""
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    mounts = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        local = folder / mount["name"]
        local.mkdir(parents=True)
        if "configMap" in volume:
            config_map = find(path, "ConfigMap", volume["configMap"]["name"])
            for key, text in config_map["data"].items():
                (local / key).write_text(text)
        mounts[mount["mountPath"]] = local
    return mounts


def local_path(container_path: str, mounts: dict[str, Path]) -> Path:
    for mount_path, local in mounts.items():
        if container_path.startswith(mount_path.rstrip("/") + "/"):
            return local / container_path[len(mount_path.rstrip("/")) + 1:]
    raise AssertionError(f"{container_path} is not under any volume mount of the container")


def fail_job_codes(job: dict) -> set[int]:
    return {code for rule in job["spec"]["podFailurePolicy"]["rules"]
            if rule["action"] == "FailJob" and "onExitCodes" in rule
            for code in rule["onExitCodes"]["values"]}


def header_lines(path: Path) -> list[str]:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return lines


def secret_values() -> set[str]:
    values = set()
    for _, document in documents():
        if document["kind"] == "Secret":
            values.update(document.get("stringData", {}).values())
            values.update(base64.b64decode(value).decode()
                          for value in document.get("data", {}).values())
    return values


# Schemas

@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_manifests_pass_strict_schema(version):
    for path, document in documents():
        name = f"{path.name}: {document['kind']} {document['metadata']['name']}"
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            location = ".".join(str(part) for part in error.path)
            pytest.fail(f"{name}: invalid for Kubernetes {version} at {location}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            # The command-line tool only warns here, but an unknown kind is a mistake.
            pytest.fail(f"{name}: {error.message}")


def test_schema_versions_reach_newest():
    newest = max(kubernetes_validate.all_versions(), key=Version)

    assert SCHEMA_VERSIONS[0] == "1.29.0"
    assert SCHEMA_VERSIONS[-1] == newest


def test_strict_schema_rejects_typo():
    job = copy.deepcopy(find(K8S / "job.yaml", "Job"))
    job["spec"]["backofLimit"] = 3

    with pytest.raises(kubernetes_validate.ValidationError, match="backofLimit"):
        kubernetes_validate.validate(job, SCHEMA_VERSIONS[-1], strict=True)


# Kustomize

def test_kustomization_lists_manifests():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    namespace = find(K8S / "namespace.yaml", "Namespace")["metadata"]["name"]

    # job-gpu.yaml stays out: its pod would wait for a GPU node until the deadline.
    assert set(kustomization["resources"]) == {path.name for path in MANIFESTS} - {"job-gpu.yaml"}
    assert kustomization["namespace"] == namespace


def test_kustomize_build():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; `kubectl kustomize` renders the kustomization")
    rendered = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                              check=True).stdout
    resources = [document for document in yaml.safe_load_all(rendered) if document]
    binding = next(document for document in resources if document["kind"] == "RoleBinding")
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]

    assert len(resources) == sum(len(load(K8S / name)) for name in listed)
    for resource in resources:
        kubernetes_validate.validate(resource, SCHEMA_VERSIONS[-1], strict=True)
        if resource["kind"] != "Namespace":
            assert resource["metadata"]["namespace"] == "cubicfit", resource["metadata"]["name"]
    assert [subject["namespace"] for subject in binding["subjects"]] == ["cubicfit"]


# Jobs

@pytest.mark.parametrize("item", [item for item in workloads() if item[1]["kind"] == "Job"],
                         ids=workload_id)
def test_job_failure_handling(item):
    _, job = item
    spec = job["spec"]
    rules = spec["podFailurePolicy"]["rules"]
    container_names = {container["name"] for container in containers(pod_spec(job))}
    ignored = [condition for rule in rules if rule["action"] == "Ignore"
               for condition in rule.get("onPodConditions", [])]

    assert pod_spec(job)["restartPolicy"] == "Never"
    assert isinstance(spec["backoffLimit"], int)
    assert spec["activeDeadlineSeconds"] > 0
    assert spec["ttlSecondsAfterFinished"] > 0
    assert {"type": "DisruptionTarget", "status": "True"} in ignored
    assert fail_job_codes(job)
    for rule in rules:
        if "onExitCodes" in rule:
            assert rule["onExitCodes"]["containerName"] in container_names


@pytest.mark.parametrize("item", cubicfit_jobs(), ids=workload_id)
def test_fail_job_codes_are_cli_codes(item):
    _, job = item
    codes = fail_job_codes(job)
    command = containers(pod_spec(job))[0]["args"][0]

    assert codes <= {int(code) for code in ExitCode}
    assert not codes & RETRIABLE_CODES
    assert codes == (SWEEP_FAIL_JOB_CODES if command == "sweep" else FIT_FAIL_JOB_CODES)


def test_fail_job_codes_match_cli_exits(tmp_path, capsys):
    job = find(K8S / "job.yaml", "Job")
    mounts = materialize_mounts(K8S / "job.yaml", pod_spec(job), containers(pod_spec(job))[0],
                                tmp_path / "mounts")
    config = str(local_path(containers(pod_spec(job))[0]["args"][1], mounts))
    output = ["--output", str(tmp_path / "results")]
    failures = {
        "invalid configuration": ["--learning-rate", "-1"],
        "missing device": ["--backend", "torch", "--device", "cuda:999"],
        "diverged run": ["--learning-rate", "1e-3"],
    }

    exits = {case: main(["run", config, *output, *flags]) for case, flags in failures.items()}
    capsys.readouterr()

    assert set(exits.values()) == fail_job_codes(job), exits


@pytest.mark.parametrize("name", ["job.yaml", "job-gpu.yaml"])
def test_fit_config_parses(name, tmp_path):
    path = K8S / name
    job = find(path, "Job")
    (container,) = pod_spec(job)["containers"]
    args = build_parser().parse_args(container["args"])
    mounts = materialize_mounts(path, pod_spec(job), container, tmp_path)

    config = load_fit_config(str(local_path(args.config, mounts)), plain_env(container),
                             field_flags(args))

    assert args.command == "run"
    assert config.output.startswith("s3://")


def test_gpu_job_asks_for_gpu(tmp_path):
    path = K8S / "job-gpu.yaml"
    job = find(path, "Job")
    spec = pod_spec(job)
    (container,) = spec["containers"]
    gpus = container["resources"]["limits"]["nvidia.com/gpu"]
    args = build_parser().parse_args(container["args"])
    mounts = materialize_mounts(path, spec, container, tmp_path)
    config = load_fit_config(str(local_path(args.config, mounts)), plain_env(container),
                             field_flags(args))

    assert parse_quantity(gpus) == int(parse_quantity(gpus)) >= 1
    assert config.device == "cuda"
    assert config.backend in ("torch", "torch-autograd")
    assert spec["nodeSelector"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists",
            "effect": "NoSchedule"} in spec["tolerations"]
    assert container["image"].endswith("-cuda")


def test_cpu_job_asks_for_no_gpu(tmp_path):
    path = K8S / "job.yaml"
    job = find(path, "Job")
    (container,) = pod_spec(job)["containers"]
    args = build_parser().parse_args(container["args"])
    mounts = materialize_mounts(path, pod_spec(job), container, tmp_path)
    config = load_fit_config(str(local_path(args.config, mounts)), plain_env(container),
                             field_flags(args))

    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert config.device == "cpu"


def test_sweep_job_matches_spec(tmp_path):
    path = K8S / "sweep-job.yaml"
    job = find(path, "Job")
    spec = job["spec"]
    (container,) = pod_spec(job)["containers"]
    args = build_parser().parse_args(container["args"])
    mounts = materialize_mounts(path, pod_spec(job), container, tmp_path)
    environ = plain_env(container)
    sweep = load_sweep_spec(str(local_path(args.spec, mounts)), environ)
    count = int(environ["CUBICFIT_SHARD_COUNT"])

    assert args.command == "sweep"
    assert args.shard_index is None
    assert args.shard_count is None
    assert spec["completionMode"] == "Indexed"
    assert count == spec["completions"]
    assert spec["parallelism"] <= spec["completions"]
    assert spec["backoffLimitPerIndex"] >= 1
    assert spec["backoffLimit"] >= spec["completions"] * spec["backoffLimitPerIndex"]
    assert len(sweep.expand()) >= count  # no shard without work
    assert sweep.output.startswith("s3://")
    for index in range(count):
        environ_in_pod = {**environ, "JOB_COMPLETION_INDEX": str(index)}
        assert resolve_shard(None, None, environ_in_pod) == (index, count)


# Pods

@pytest.mark.parametrize("item", workloads(), ids=workload_id)
def test_pods_run_restricted(item):
    _, workload = item
    spec = pod_spec(workload)
    pod_context = spec["securityContext"]

    assert pod_context["runAsNonRoot"] is True
    assert pod_context["runAsUser"] > 0
    assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for container in containers(spec):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert not context.get("privileged", False), container["name"]
        assert context.get("runAsNonRoot", True) is True, container["name"]
        assert context.get("runAsUser", 1) > 0, container["name"]


@pytest.mark.parametrize("item", workloads(), ids=workload_id)
def test_pods_write_only_to_volumes(item):
    _, workload = item
    spec = pod_spec(workload)
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    for container in containers(spec):
        mounts = {mount["mountPath"]: volumes[mount["name"]]
                  for mount in container.get("volumeMounts", [])}
        writable = [mount_path for mount_path, volume in mounts.items()
                    if "emptyDir" in volume or "persistentVolumeClaim" in volume]
        assert "emptyDir" in mounts.get("/tmp", {}), f"{container['name']}: no emptyDir on /tmp"
        for name in ("HOME", "MPLCONFIGDIR"):
            value = plain_env(container).get(name)
            if value is not None:
                assert any(value == mount_path or value.startswith(mount_path + "/")
                           for mount_path in writable), f"{container['name']}: {name}={value}"


@pytest.mark.parametrize("item", workloads(), ids=workload_id)
def test_pods_set_resources(item):
    _, workload = item
    for container in containers(pod_spec(workload)):
        requests = container["resources"]["requests"]
        limits = container["resources"]["limits"]
        for resource in ("cpu", "memory"):
            assert parse_quantity(requests[resource]) <= parse_quantity(limits[resource]), (
                f"{container['name']}: {resource} request above the limit")
        threads = plain_env(container).get("OMP_NUM_THREADS")
        if threads is not None:
            assert int(threads) <= parse_quantity(limits["cpu"])


@pytest.mark.parametrize("item", workloads(), ids=workload_id)
def test_pods_disable_service_links(item):
    _, workload = item

    assert pod_spec(workload)["enableServiceLinks"] is False


def test_service_link_variables_are_ignored():
    # What a Service named cubicfit injects when service links are on.
    assert fields_from_env({"CUBICFIT_SERVICE_HOST": "10.96.0.10",
                            "CUBICFIT_PORT": "tcp://10.96.0.10:80"}) == {}


def test_images_pinned():
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M)[1]
    for path, workload in workloads():
        for container in containers(pod_spec(workload)):
            image = container["image"]
            if image.startswith("cubicfit:"):
                assert image in (f"cubicfit:{version}", f"cubicfit:{version}-cuda"), image
            else:
                assert re.search(r":[^/:@]+@sha256:[0-9a-f]{64}$", image), (
                    f"{path.name}: {image} is not pinned by tag and digest")
            assert ":latest" not in image


# Credentials

def test_no_secret_inlined():
    secrets = secret_values()
    secret_keys = {document["metadata"]["name"]: set(document.get("stringData", {}))
                   | set(document.get("data", {}))
                   for _, document in documents() if document["kind"] == "Secret"}

    assert secrets
    for path, document in documents():
        if document["kind"] == "ConfigMap":
            for text in document["data"].values():
                assert not any(secret in text for secret in secrets), path.name
    for path, workload in workloads():
        for container in containers(pod_spec(workload)):
            where = f"{path.name}: {container['name']}"
            for text in container.get("command", []) + container.get("args", []):
                assert not any(secret in text for secret in secrets), where
            for entry in container.get("env", []):
                if "value" in entry:
                    assert entry["value"] not in secrets, f"{where}: {entry['name']}"
                    assert not CREDENTIAL_NAME.search(entry["name"]), f"{where}: {entry['name']}"
                else:
                    reference = entry["valueFrom"]["secretKeyRef"]
                    assert reference["key"] in secret_keys[reference["name"]], (
                        f"{where}: {entry['name']} reads a key the Secret lacks")


# Metadata and headers

def test_labels():
    for path, document in documents():
        labels = document["metadata"]["labels"]
        for label in REQUIRED_LABELS:
            assert label in labels, f"{path.name}: {document['metadata']['name']} lacks {label}"
    for path, workload in workloads():
        template_labels = workload["spec"]["template"]["metadata"]["labels"]
        for label in REQUIRED_LABELS:
            assert label in template_labels, f"{path.name}: pod template lacks {label}"
        selector = workload["spec"].get("selector", {}).get("matchLabels", {})
        assert selector.items() <= template_labels.items()
    service = find(K8S / "minio.yaml", "Service")
    deployment = find(K8S / "minio.yaml", "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


@pytest.mark.parametrize("path", [*MANIFESTS, K8S / "kustomization.yaml"],
                         ids=lambda path: path.name)
def test_header_commands(path):
    lines = header_lines(path)
    commands = {line.split(":", 1)[0]: line.split(":", 1)[1].strip()
                for line in lines if line.split(":", 1)[0] in HEADER_COMMANDS}
    defined = {(document["kind"].lower(), document["metadata"]["name"])
               for document in (load(path) if path in MANIFESTS else
                                [doc for _, doc in documents()])}

    assert set(commands) == set(HEADER_COMMANDS)
    assert f"k8s/{path.name}" in commands["Apply"] or "-k k8s/" in commands["Apply"]
    assert commands["Clean"].startswith("kubectl delete")
    for command in commands.values():
        for kind, name in re.findall(r"\b(job|deployment)/([a-z0-9-]+)", command):
            assert (kind, name) in defined, f"{command} names {kind}/{name}, not in {path.name}"


# Airflow RBAC

def test_airflow_role_least_privilege():
    path = K8S / "airflow-rbac.yaml"
    role = find(path, "Role")
    binding = find(path, "RoleBinding")
    account = find(path, "ServiceAccount")
    namespace = find(K8S / "namespace.yaml", "Namespace")["metadata"]["name"]
    granted = {(resource, verb) for rule in role["rules"] for resource in rule["resources"]
               for verb in rule["verbs"]}

    assert {group for rule in role["rules"] for group in rule["apiGroups"]} == {""}
    assert granted == {
        ("pods", "create"), ("pods", "get"), ("pods", "list"), ("pods", "patch"),
        ("pods", "delete"), ("pods/log", "get"), ("events", "list"), ("events", "watch"),
    }
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": namespace}]
    assert account["automountServiceAccountToken"] is False
