"""Run the container command of k8s/sweep-job.yaml once per completion index.

Each run gets the pod's environment: the manifest's literal variables,
JOB_COMPLETION_INDEX as Kubernetes sets it for an Indexed Job, and the S3
settings of the test endpoint in place of the cubicfit-s3 Secret. The mounted
ConfigMap becomes a local file whose output points at a fresh test bucket.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cubicfit.cli import build_parser
from cubicfit.storage.location import parse_s3_url
from cubicfit.sweep.shards import select_shard
from cubicfit.sweep.spec import load_sweep_spec

MANIFEST = Path(__file__).resolve().parent.parent / "k8s" / "sweep-job.yaml"
SHARD_TIMEOUT = 300  # seconds for one shard's six grid points


def manifest_objects() -> tuple[dict, dict]:
    documents = [document for document in yaml.safe_load_all(MANIFEST.read_text()) if document]
    (job,) = [document for document in documents if document["kind"] == "Job"]
    config_maps = {document["metadata"]["name"]: document for document in documents
                   if document["kind"] == "ConfigMap"}
    return job, config_maps


def mount_locally(spec: dict, container: dict, config_maps: dict, folder: Path) -> dict[str, Path]:
    """Create a folder per volume mount with its ConfigMap files, and map mount paths to them."""
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    mounts = {}
    for mount in container["volumeMounts"]:
        local = folder / mount["name"]
        local.mkdir(parents=True)
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            for key, text in config_maps[volume["configMap"]["name"]]["data"].items():
                (local / key).write_text(text)
        mounts[mount["mountPath"].rstrip("/")] = local
    return mounts


def translate(value: str, mounts: dict[str, Path]) -> str:
    """Map a path inside the container to the local folder of its mount."""
    for mount_path, local in mounts.items():
        if value == mount_path or value.startswith(mount_path + "/"):
            return str(local) + value[len(mount_path):]
    return value


@pytest.mark.slow
def test_indexes_run_each_point_once(s3_endpoint, s3_bucket, tmp_path):
    job, config_maps = manifest_objects()
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    mounts = mount_locally(spec, container, config_maps, tmp_path / "mounts")
    args = [translate(argument, mounts) for argument in container["args"]]
    spec_path = Path(translate(build_parser().parse_args(container["args"]).spec, mounts))

    # Point the spec's output at the test bucket, keeping its key prefix.
    sweep_spec = yaml.safe_load(spec_path.read_text())
    _, prefix = parse_s3_url(sweep_spec["base"]["output"])
    sweep_spec["base"]["output"] = f"s3://{s3_bucket}/{prefix}"
    spec_path.write_text(yaml.safe_dump(sweep_spec))

    literal = {entry["name"]: translate(entry["value"], mounts)
               for entry in container["env"] if "value" in entry}
    from_secret = {entry["name"] for entry in container["env"] if "valueFrom" in entry}
    base_env = s3_endpoint.env(**literal)
    count = int(literal["CUBICFIT_SHARD_COUNT"])
    points = load_sweep_spec(str(spec_path), literal).expand()
    name = sweep_spec["name"]

    assert from_secret <= base_env.keys(), "the test endpoint lacks a variable the Secret provides"
    assert count == job["spec"]["completions"]

    finished: set[str] = set()
    for index in range(count):
        completed = subprocess.run(
            [sys.executable, "-m", "cubicfit", *args],
            env={**base_env, "JOB_COMPLETION_INDEX": str(index)},
            cwd=tmp_path, capture_output=True, text=True, timeout=SHARD_TIMEOUT,
        )
        keys = s3_endpoint.list_keys(s3_bucket, prefix + "/")
        results = {key.split("/")[-2] for key in keys
                   if key.startswith(f"{prefix}/runs/") and key.endswith("/result.json")}
        report = {key.rsplit("/", 1)[-1] for key in keys
                  if key.startswith(f"{prefix}/sweeps/{name}/")}
        expected = {point.config.run_id for point in select_shard(points, index, count)}

        assert completed.returncode == 0, f"shard {index}: {completed.stderr[-3000:]}"
        assert expected, f"shard {index} has no grid points"
        assert results - finished == expected, f"shard {index} ran other points than its own"
        if index < count - 1:
            assert "report.md" not in report, f"shard {index} wrote the report too early"
        finished = results

    statuses = {json.loads(s3_endpoint.client().get_object(
        Bucket=s3_bucket, Key=f"{prefix}/runs/{run_id}/result.json")["Body"].read())["status"]
        for run_id in finished}

    assert finished == {point.config.run_id for point in points}
    assert {"summary.csv", "report.md", "report.png"} <= report
    # Diverged points are results of a sweep, and every shard still exited 0.
    assert statuses == {"succeeded", "diverged"}
