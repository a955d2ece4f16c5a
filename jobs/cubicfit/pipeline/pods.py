"""KubernetesPodOperator settings for the `fit` batches of kubernetes mode.

`operator_settings` returns what every pod of one device kind shares (the
`partial` arguments), `batch_arguments` what differs per batch (the
`expand_kwargs` items). The pods match the manifests in k8s/. The image's
entrypoint is `cubicfit`, and the pods pass the "restricted" Pod Security
profile of the cubicfit namespace. They read the S3 settings from the
Kubernetes Secret by key reference, so no credential appears in the pod
spec, the DAG or XCom.
"""

import re

from kubernetes.client import models as k8s

from cubicfit.pipeline.settings import DeploymentSettings

# Keys of the Secret; the optional ones may be left out (AWS S3 needs no endpoint).
SECRET_KEYS = {"AWS_ACCESS_KEY_ID": False, "AWS_SECRET_ACCESS_KEY": False,
               "S3_ENDPOINT_URL": True, "AWS_DEFAULT_REGION": True}
RUN_AS_ID = 10001  # the cubicfit user of the image (jobs/Dockerfile)

# NOTE: the sizes are those of k8s/sweep-job.yaml and k8s/job-gpu.yaml, which call
# them estimates. A batch keeps every loss in memory: about 8 bytes x iterations x runs.
RESOURCES = {
    "cpu": k8s.V1ResourceRequirements(requests={"cpu": "500m", "memory": "512Mi"},
                                      limits={"cpu": "1", "memory": "2Gi"}),
    "cuda": k8s.V1ResourceRequirements(requests={"cpu": "1", "memory": "2Gi"},
                                       limits={"cpu": "2", "memory": "4Gi"}),
}
# Seconds a pod may stay Pending: image pulls, and for GPUs a node pool scaling up.
STARTUP_TIMEOUT = {"cpu": 600, "cuda": 1200}


def operator_settings(settings: DeploymentSettings, device_kind: str) -> dict:
    """Return the KubernetesPodOperator.partial arguments shared by the pods of `device_kind`."""
    resources = RESOURCES[device_kind]
    common = {
        "kubernetes_conn_id": settings.kubernetes_conn_id,
        "cmds": ["cubicfit"],
        "env_vars": _environment(settings.s3_secret),
        "image_pull_policy": "IfNotPresent",
        "security_context": k8s.V1PodSecurityContext(
            run_as_non_root=True, run_as_user=RUN_AS_ID, run_as_group=RUN_AS_ID,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault")),
        "container_security_context": k8s.V1SecurityContext(
            allow_privilege_escalation=False, read_only_root_filesystem=True,
            capabilities=k8s.V1Capabilities(drop=["ALL"])),
        # The root filesystem is read-only; matplotlib and HOME need a writable /tmp.
        "volumes": [k8s.V1Volume(name="tmp",
                                 empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="1Gi"))],
        "volume_mounts": [k8s.V1VolumeMount(name="tmp", mount_path="/tmp")],  # noqa: S108
        "automount_service_account_token": False,
        # Service links add a variable per Service in the namespace, such as
        # CUBICFIT_SERVICE_HOST. cubicfit ignores those, but the job needs none.
        "full_pod_spec": k8s.V1Pod(spec=k8s.V1PodSpec(containers=[],
                                                      enable_service_links=False)),
        "on_finish_action": "delete_pod",
        "get_logs": True,
        "log_events_on_failure": True,
        "startup_timeout_seconds": STARTUP_TIMEOUT[device_kind],
        "do_xcom_push": False,
    }
    if device_kind == "cpu":
        return {**common, "container_resources": resources}
    gpu_limits = {**resources.limits, settings.gpu_resource: "1"}
    return {
        **common,
        # Extended resources such as nvidia.com/gpu need only a limit; the request equals it.
        "container_resources": k8s.V1ResourceRequirements(requests=resources.requests,
                                                          limits=gpu_limits),
        "node_selector": dict(settings.gpu_node_selector),
        "tolerations": [k8s.V1Toleration(key=settings.gpu_toleration_key, operator="Exists",
                                         effect="NoSchedule")],
        "pool": settings.gpu_pool,
    }


def batch_arguments(plan: dict, batch: dict) -> dict:
    """Return the expand_kwargs item of one batch: image, namespace, name, labels, arguments."""
    return {
        "image": plan["cuda_image"] if batch["device_kind"] == "cuda" else plan["image"],
        "namespace": plan["namespace"],
        "name": f"cubicfit-{_name_part(plan['sweep_id'])}-{batch['index']}",
        "labels": {"app.kubernetes.io/name": "cubicfit",
                   "app.kubernetes.io/component": "sweep-batch",
                   "app.kubernetes.io/part-of": "cubicfit",
                   "cubicfit/batch": str(batch["index"])},
        "annotations": {"cubicfit/sweep-id": plan["sweep_id"],
                        "cubicfit/runs": str(len(batch["run_ids"]))},
        "arguments": ["sweep", "--spec-text", plan["spec_text"],
                      "--run-ids", ",".join(batch["run_ids"]), "--no-report"],
    }


def _environment(secret: str) -> list[k8s.V1EnvVar]:
    variables = [k8s.V1EnvVar(name="HOME", value="/tmp"),  # noqa: S108
                 k8s.V1EnvVar(name="MPLCONFIGDIR", value="/tmp/matplotlib")]  # noqa: S108
    for key, optional in SECRET_KEYS.items():
        selector = k8s.V1SecretKeySelector(name=secret, key=key, optional=optional or None)
        variables.append(k8s.V1EnvVar(name=key,
                                      value_from=k8s.V1EnvVarSource(secret_key_ref=selector)))
    return variables


def _name_part(sweep_id: str) -> str:
    """Return the sweep id as part of a pod name: lowercase letters, digits and '-'."""
    slug = re.sub(r"[^a-z0-9-]+", "-", sweep_id.lower()).strip("-")
    return slug[:40].rstrip("-") or "sweep"
