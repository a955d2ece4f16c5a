"""The S3 result store, over real HTTP against the session's S3 endpoint.

The command-line tests call `cubicfit run` in this process, or in a
subprocess where the exit code of the process or two processes matter. The
store tests call S3Store directly. Faults come from tests/faultproxy.py, a
proxy between the job and the endpoint, and nothing patches boto3.
"""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from cubicfit.cli import main
from cubicfit.errors import ConfigError, StorageError
from cubicfit.storage.s3 import S3Store
from cubicfit.storage.s3_settings import parse_endpoint, parse_max_attempts
from s3_endpoint import free_port

# A short fit: these tests are about storage, not about convergence.
FIT = ["--iterations", "200", "--log-every", "100"]
RUN_FILES = ("config.json", "fit.png", "losses.csv", "result.json")
# result.json fields that differ between two runs of the same configuration.
TIMING_FIELDS = ("started_at", "finished_at", "fit_seconds", "steps_per_second")
# Request headers of the flexible checksums that botocore 1.36 and later send by
# default. S3-compatible servers that do not implement them reject such requests.
CHECKSUM_HEADER_PREFIXES = ("x-amz-checksum-", "x-amz-sdk-checksum-")
CHECKSUM_HEADERS = ("x-amz-trailer", "x-amz-decoded-content-length")


@dataclasses.dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cubicfit(monkeypatch, capsys):
    """Return a function that runs `cubicfit run ARGS` in this process, in `cwd`, with `env`.

    In-process runs save the interpreter start. The process-level tests use
    run_process() instead.
    """

    def run(env: dict[str, str], cwd, *args: str) -> Finished:
        handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
        with monkeypatch.context() as patch:
            for name in list(os.environ):
                if name not in env:
                    patch.delenv(name)
            for name, value in env.items():
                patch.setenv(name, value)
            patch.chdir(cwd)
            capsys.readouterr()
            try:
                code = main(["run", *args])
            finally:
                for number, handler in handlers.items():
                    signal.signal(number, handler)
            captured = capsys.readouterr()
        return Finished(int(code), captured.out, captured.err)

    return run


def run_process(env, cwd, *args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cubicfit", "run", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False)


def start_process(env, cwd, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cubicfit", "run", *args], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_no_fit(result) -> None:
    """Check that the job stopped before the fit began."""
    assert "fitting" not in result.stderr, result.stderr
    assert not re.search(r"\bstep \d+ loss", result.stderr), result.stderr


def assert_no_secret(result, *secrets) -> None:
    for secret in secrets:
        assert secret not in result.stdout
        assert secret not in result.stderr


def run_keys(endpoint, bucket, prefix) -> dict[str, list[str]]:
    """Return {run_id: [file names]} of the objects under `prefix`/runs/."""
    runs: dict[str, list[str]] = {}
    for key in endpoint.list_keys(bucket, f"{prefix}/runs/"):
        run_id, name = key[len(prefix) + len("/runs/"):].split("/", 1)
        runs.setdefault(run_id, []).append(name)
    return runs


def read_object(endpoint, bucket, key) -> bytes:
    return endpoint.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def s3_store(endpoint, url, **env_overrides) -> S3Store:
    return S3Store.from_url(url, environ=endpoint.env(**env_overrides))


# A whole run against S3


def test_fit_matches_local_store(s3_endpoint, s3_bucket, tmp_path, run_cubicfit):
    local = run_cubicfit(s3_endpoint.env(), tmp_path, *FIT, "--output", str(tmp_path / "local"))
    remote = run_cubicfit(s3_endpoint.env(), tmp_path, *FIT, "--output",
                          f"s3://{s3_bucket}/exp/one")
    assert local.returncode == 0, local.stderr
    assert remote.returncode == 0, remote.stderr
    assert_no_secret(remote, s3_endpoint.secret_key)

    runs = run_keys(s3_endpoint, s3_bucket, "exp/one")
    assert len(runs) == 1
    ((run_id, names),) = runs.items()
    assert sorted(names) == sorted(RUN_FILES)
    local_files = sorted(path.name for path in (tmp_path / "local" / "runs" / run_id).iterdir())
    assert local_files == sorted(RUN_FILES)

    for name in RUN_FILES:
        remote_bytes = read_object(s3_endpoint, s3_bucket, f"exp/one/runs/{run_id}/{name}")
        local_bytes = (tmp_path / "local" / "runs" / run_id / name).read_bytes()
        assert s3_endpoint.secret_key.encode() not in remote_bytes
        if name != "result.json":
            assert remote_bytes == local_bytes, name
            continue
        remote_result, local_result = json.loads(remote_bytes), json.loads(local_bytes)
        for field in TIMING_FIELDS:
            remote_result.pop(field)
            local_result.pop(field)
        assert remote_result == local_result

    head = s3_endpoint.client().head_object(Bucket=s3_bucket,
                                            Key=f"exp/one/runs/{run_id}/result.json")
    assert head["ContentType"] == "application/json"


def test_rerun_skips_finished(s3_endpoint, s3_bucket, tmp_path, run_cubicfit):
    output = f"s3://{s3_bucket}/again"
    first = run_cubicfit(s3_endpoint.env(), tmp_path, *FIT, "--output", output)
    assert first.returncode == 0, first.stderr
    ((run_id, _),) = run_keys(s3_endpoint, s3_bucket, "again").items()
    key = f"again/runs/{run_id}/result.json"
    before = s3_endpoint.client().head_object(Bucket=s3_bucket, Key=key)

    second = run_cubicfit(s3_endpoint.env(), tmp_path, *FIT, "--output", output)

    assert second.returncode == 0, second.stderr
    assert "already finished" in second.stderr
    assert_no_fit(second)
    assert second.stdout.startswith("y = ")
    after = s3_endpoint.client().head_object(Bucket=s3_bucket, Key=key)
    assert after["ETag"] == before["ETag"]
    assert after["LastModified"] == before["LastModified"]


def test_force_rerun_replaces(s3_endpoint, s3_bucket, tmp_path, run_cubicfit):
    output = f"s3://{s3_bucket}/forced"
    assert run_cubicfit(s3_endpoint.env(), tmp_path, *FIT, "--output", output).returncode == 0
    ((run_id, _),) = run_keys(s3_endpoint, s3_bucket, "forced").items()
    key = f"forced/runs/{run_id}/result.json"
    before = json.loads(read_object(s3_endpoint, s3_bucket, key))

    forced = run_cubicfit(s3_endpoint.env(), tmp_path, *FIT, "--output", output, "--force")

    assert forced.returncode == 0, forced.stderr
    assert "fitting" in forced.stderr
    after = json.loads(read_object(s3_endpoint, s3_bucket, key))
    assert after["started_at"] != before["started_at"]


# Storage problems found before any compute: exit code 4, nothing written


def test_endpoint_without_scheme(s3_endpoint, s3_bucket, tmp_path, run_cubicfit):
    bare = s3_endpoint.url.split("://", 1)[1]
    result = run_cubicfit(s3_endpoint.env(S3_ENDPOINT_URL=bare), tmp_path, *FIT,
                          "--output", f"s3://{s3_bucket}/x")

    assert result.returncode == 4, result.stderr
    assert "S3_ENDPOINT_URL" in result.stderr
    assert "has no scheme" in result.stderr
    assert f"http://{bare}" in result.stderr
    assert_no_fit(result)
    assert s3_endpoint.list_keys(s3_bucket) == []
    assert list(tmp_path.iterdir()) == []


def test_endpoint_unreachable(s3_endpoint, s3_bucket, tmp_path, run_cubicfit):
    closed = f"http://127.0.0.1:{free_port()}"
    env = s3_endpoint.env(S3_ENDPOINT_URL=closed, CUBICFIT_S3_MAX_ATTEMPTS="2")
    result = run_cubicfit(env, tmp_path, *FIT, "--output", f"s3://{s3_bucket}/x")

    assert result.returncode == 4, result.stderr
    assert f"cannot reach the S3 endpoint {closed}" in result.stderr
    assert "check S3_ENDPOINT_URL" in result.stderr
    assert "retry 1 of 1" in result.stderr
    assert_no_fit(result)
    assert list(tmp_path.iterdir()) == []


def test_missing_bucket(s3_endpoint, tmp_path, run_cubicfit):
    bucket = f"cubicfit-missing-{free_port()}"
    result = run_cubicfit(s3_endpoint.env(), tmp_path, *FIT, "--output", f"s3://{bucket}/x")

    assert result.returncode == 4, result.stderr
    assert f"bucket '{bucket}' does not exist" in result.stderr
    assert "--create-bucket" in result.stderr
    assert_no_fit(result)
    assert not s3_endpoint.bucket_exists(bucket)


def test_create_bucket_flag(s3_endpoint, tmp_path, run_cubicfit):
    bucket = f"cubicfit-created-{free_port()}"
    s3_endpoint.created_buckets.append(bucket)  # deleted at the end of the session
    result = run_cubicfit(s3_endpoint.env(), tmp_path, *FIT, "--output", f"s3://{bucket}/x",
                          "--create-bucket")

    assert result.returncode == 0, result.stderr
    assert f"created bucket {bucket}" in result.stderr
    runs = run_keys(s3_endpoint, bucket, "x")
    assert [sorted(names) for names in runs.values()] == [sorted(RUN_FILES)]


@pytest.mark.parametrize("case", ["wrong-secret", "unknown-key", "read-only"])
def test_credentials_rejected(credential_endpoint, tmp_path, case, run_cubicfit):
    endpoint = credential_endpoint.endpoint
    bucket = credential_endpoint.bucket
    if case == "wrong-secret":
        access_key, secret_key = endpoint.access_key, "wrong-secret-4b1d0c77e2"
        expected = "set AWS_SECRET_ACCESS_KEY"
    elif case == "unknown-key":
        access_key, secret_key = "CUBICFITUNKNOWN7Q2Z", "some-secret-9f8e7d6c"
        expected = "set AWS_ACCESS_KEY_ID"
    else:
        if credential_endpoint.read_only_keys is None:
            pytest.skip("no read-only user on this endpoint")
        access_key, secret_key = credential_endpoint.read_only_keys
        expected = "access denied"
    env = endpoint.env(AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key)
    prefix = f"creds-{case}"

    result = run_cubicfit(env, tmp_path, *FIT, "--output", f"s3://{bucket}/{prefix}")

    assert result.returncode == 4, result.stderr
    assert expected in result.stderr
    assert_no_fit(result)
    assert_no_secret(result, secret_key, endpoint.secret_key)
    assert access_key not in result.stderr
    assert endpoint.list_keys(bucket, prefix) == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("unset", [("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
                                   ("AWS_SECRET_ACCESS_KEY",)])
def test_credentials_missing(s3_endpoint, s3_bucket, tmp_path, unset, run_cubicfit):
    env = s3_endpoint.env(**dict.fromkeys(unset))
    result = run_cubicfit(env, tmp_path, *FIT, "--output", f"s3://{s3_bucket}/x")

    assert result.returncode == 4, result.stderr
    assert "AWS_SECRET_ACCESS_KEY" in result.stderr
    assert_no_fit(result)
    assert_no_secret(result, s3_endpoint.secret_key)
    assert s3_endpoint.list_keys(s3_bucket) == []


def test_max_attempts_invalid(s3_endpoint, s3_bucket, tmp_path, run_cubicfit):
    env = s3_endpoint.env(CUBICFIT_S3_MAX_ATTEMPTS="0")
    result = run_cubicfit(env, tmp_path, *FIT, "--output", f"s3://{s3_bucket}/x")

    assert result.returncode == 2, result.stderr
    assert "CUBICFIT_S3_MAX_ATTEMPTS" in result.stderr


# Faults injected between the job and the endpoint


def test_server_stops_mid_run(s3_endpoint, s3_bucket, fault_proxy, tmp_path, run_cubicfit):
    env = s3_endpoint.env(S3_ENDPOINT_URL=fault_proxy.url, CUBICFIT_S3_MAX_ATTEMPTS="3")
    output = f"s3://{s3_bucket}/stop"
    fault_proxy.go_down_on(method="PUT", path_contains="/fit.png")

    # A separate process, so that the exit code is the one the process returns.
    failed = run_process(env, tmp_path, *FIT, "--output", output)

    assert failed.returncode == 4, failed.stderr
    assert f"cannot reach the S3 endpoint {fault_proxy.url}" in failed.stderr
    assert "fitting" in failed.stderr
    ((run_id, names),) = run_keys(s3_endpoint, s3_bucket, "stop").items()
    assert "result.json" not in names
    assert "config.json" in names

    fault_proxy.start()
    rerun = run_cubicfit(env, tmp_path, *FIT, "--output", output)

    assert rerun.returncode == 0, rerun.stderr
    assert f"run {run_id} succeeded" in rerun.stderr
    assert sorted(run_keys(s3_endpoint, s3_bucket, "stop")[run_id]) == sorted(RUN_FILES)


def test_transient_503_retried(s3_endpoint, s3_bucket, fault_proxy, tmp_path, run_cubicfit):
    env = s3_endpoint.env(S3_ENDPOINT_URL=fault_proxy.url)
    fault_proxy.fail(status=503, code="SlowDown", times=2, method="PUT",
                     path_contains="/losses.csv")

    result = run_cubicfit(env, tmp_path, *FIT, "--output", f"s3://{s3_bucket}/slow")

    assert result.returncode == 0, result.stderr
    retries = [line for line in result.stderr.splitlines() if "HTTP 503 SlowDown" in line]
    assert len(retries) == 2, result.stderr
    assert "retry 1 of 4" in retries[0]
    assert "retry 2 of 4" in retries[1]
    assert len(fault_proxy.requests_matching("PUT", "/losses.csv")) == 3
    ((_, names),) = run_keys(s3_endpoint, s3_bucket, "slow").items()
    assert sorted(names) == sorted(RUN_FILES)


def test_connection_reset_retried(s3_endpoint, s3_bucket, fault_proxy, tmp_path, run_cubicfit):
    env = s3_endpoint.env(S3_ENDPOINT_URL=fault_proxy.url)
    fault_proxy.reset(times=1, method="PUT", path_contains="/fit.png")

    result = run_cubicfit(env, tmp_path, *FIT, "--output", f"s3://{s3_bucket}/reset")

    assert result.returncode == 0, result.stderr
    assert "retry 1 of 4" in result.stderr
    ((_, names),) = run_keys(s3_endpoint, s3_bucket, "reset").items()
    assert sorted(names) == sorted(RUN_FILES)


def test_persistent_503_at_check(s3_endpoint, s3_bucket, fault_proxy, tmp_path, run_cubicfit):
    env = s3_endpoint.env(S3_ENDPOINT_URL=fault_proxy.url, CUBICFIT_S3_MAX_ATTEMPTS="3")
    fault_proxy.fail(status=503, code="SlowDown")

    result = run_cubicfit(env, tmp_path, *FIT, "--output", f"s3://{s3_bucket}/busy")

    assert result.returncode == 4, result.stderr
    assert "failed on all 3 attempts" in result.stderr
    assert "CUBICFIT_S3_MAX_ATTEMPTS" in result.stderr
    assert len(fault_proxy.requests) == 3
    assert_no_fit(result)
    assert s3_endpoint.list_keys(s3_bucket) == []


def test_persistent_503_mid_run(s3_endpoint, s3_bucket, fault_proxy, tmp_path, run_cubicfit):
    env = s3_endpoint.env(S3_ENDPOINT_URL=fault_proxy.url, CUBICFIT_S3_MAX_ATTEMPTS="3")
    fault_proxy.fail(status=503, code="SlowDown", method="PUT", path_contains="/fit.png")

    result = run_cubicfit(env, tmp_path, *FIT, "--output", f"s3://{s3_bucket}/busy")

    assert result.returncode == 4, result.stderr
    assert "PutObject" in result.stderr
    assert len(fault_proxy.requests_matching("PUT", "/fit.png")) == 3
    ((_, names),) = run_keys(s3_endpoint, s3_bucket, "busy").items()
    assert "result.json" not in names
    assert "fit.png" not in names


def test_lost_response_of_result(s3_endpoint, s3_bucket, fault_proxy, tmp_path, run_cubicfit):
    # The server stores result.json but the response is lost, so the retry gets 412.
    env = s3_endpoint.env(S3_ENDPOINT_URL=fault_proxy.url)
    fault_proxy.reset(times=1, after_forward=True, method="PUT", path_contains="/result.json")

    result = run_cubicfit(env, tmp_path, *FIT, "--output", f"s3://{s3_bucket}/lost")

    assert result.returncode == 0, result.stderr
    statuses = [request.status for request in fault_proxy.requests_matching("PUT", "result.json")]
    assert statuses == [200, 412]
    assert "an earlier attempt had stored it" in result.stderr
    assert "succeeded" in result.stderr
    assert "another process" not in result.stderr


def test_concurrent_runs_one_winner(s3_endpoint, s3_bucket, fault_proxy, tmp_path):
    # Both processes pass the "already finished?" check and fit. The proxy then
    # keeps their result.json uploads until both have arrived.
    env = s3_endpoint.env(S3_ENDPOINT_URL=fault_proxy.url)
    output = f"s3://{s3_bucket}/race"
    fault_proxy.hold(count=2, method="PUT", path_contains="/result.json")

    processes = [start_process(env, tmp_path, *FIT, "--output", output) for _ in range(2)]
    outputs = [process.communicate(timeout=120) for process in processes]

    assert [process.returncode for process in processes] == [0, 0], outputs
    stderrs = [stderr for _, stderr in outputs]
    winners = [stderr for stderr in stderrs if re.search(r"run \w+ succeeded", stderr)]
    losers = [stderr for stderr in stderrs if "finished by another process" in stderr]
    assert len(winners) == 1, stderrs
    assert len(losers) == 1, stderrs
    statuses = sorted(request.status
                      for request in fault_proxy.requests_matching("PUT", "/result.json"))
    assert statuses == [200, 412]
    ((_, names),) = run_keys(s3_endpoint, s3_bucket, "race").items()
    assert sorted(names) == sorted(RUN_FILES)


def test_conditional_write_unsupported(s3_endpoint, s3_bucket, fault_proxy, tmp_path, run_cubicfit):
    # A server without conditional writes responds with 501, and the job warns and goes on.
    env = s3_endpoint.env(S3_ENDPOINT_URL=fault_proxy.url)
    fault_proxy.fail(status=501, code="NotImplemented", method="PUT", header="if-none-match")

    result = run_cubicfit(env, tmp_path, *FIT, "--output", f"s3://{s3_bucket}/old-server")

    assert result.returncode == 0, result.stderr
    assert result.stderr.count("does not support conditional writes") == 1
    conditional = fault_proxy.requests_matching("PUT")
    assert sum("if-none-match" in request.headers for request in conditional) == 1
    ((_, names),) = run_keys(s3_endpoint, s3_bucket, "old-server").items()
    assert sorted(names) == sorted(RUN_FILES)


def test_request_headers_accepted(s3_endpoint, s3_bucket, fault_proxy, tmp_path, run_cubicfit):
    env = s3_endpoint.env(S3_ENDPOINT_URL=fault_proxy.url)
    result = run_cubicfit(env, tmp_path, *FIT, "--output", f"s3://{s3_bucket}/headers")
    assert result.returncode == 0, result.stderr

    host = fault_proxy.url.split("://", 1)[1]
    assert len(fault_proxy.requests) >= 6
    for request in fault_proxy.requests:
        names = set(request.headers)
        where = f"{request.method} {request.path}"
        assert not [name for name in names if name.startswith(CHECKSUM_HEADER_PREFIXES)], where
        assert not names.intersection(CHECKSUM_HEADERS), where
        assert "aws-chunked" not in request.headers.get("content-encoding", ""), where
        assert not request.headers.get("x-amz-content-sha256", "").startswith("STREAMING"), where
        # Path-style addressing: the bucket is in the path, not in the host name.
        assert request.headers["host"] == host, where
        assert request.path.startswith(f"/{s3_bucket}"), where
        assert f"/{s3_endpoint.region}/s3/aws4_request" in request.headers["authorization"]
    puts = fault_proxy.requests_matching("PUT", "/runs/")
    assert puts
    assert all("content-md5" in request.headers for request in puts)


# The store itself


def test_create_bytes_only_once(s3_endpoint, s3_bucket):
    store = s3_store(s3_endpoint, f"s3://{s3_bucket}/once")

    assert store.create_bytes("a/result.json", b"first", "application/json") is True
    assert store.create_bytes("a/result.json", b"second", "application/json") is False
    assert store.read_bytes("a/result.json") == b"first"


def test_create_bytes_thread_race(s3_endpoint, s3_bucket):
    store = s3_store(s3_endpoint, f"s3://{s3_bucket}/race")
    barrier = threading.Barrier(8)
    outcomes = []

    def create(index: int) -> None:
        barrier.wait()
        outcomes.append((store.create_bytes("key", f"writer {index}".encode(), "text/plain"),
                         index))

    threads = [threading.Thread(target=create, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [index for created, index in outcomes if created]
    assert len(winners) == 1
    assert store.read_bytes("key") == f"writer {winners[0]}".encode()


def test_write_bytes_replaces(s3_endpoint, s3_bucket):
    store = s3_store(s3_endpoint, f"s3://{s3_bucket}/replace")
    store.write_bytes("file.txt", b"old", "text/plain")
    store.write_bytes("file.txt", b"new", "text/plain")

    assert store.read_bytes("file.txt") == b"new"
    assert store.read_bytes("missing.txt") is None


def test_delete_missing_key(s3_endpoint, s3_bucket):
    store = s3_store(s3_endpoint, f"s3://{s3_bucket}/gone")
    store.write_bytes("file.txt", b"x", "text/plain")
    store.delete("file.txt")
    store.delete("file.txt")

    assert store.read_bytes("file.txt") is None


def test_list_keys_folder_prefix(s3_endpoint, s3_bucket):
    store = s3_store(s3_endpoint, f"s3://{s3_bucket}/root")
    for key in ("runs/ab/x.json", "runs/abc/y.json", "sweeps/s/summary.csv"):
        store.write_bytes(key, b"1", "text/plain")
    s3_endpoint.client().put_object(Bucket=s3_bucket, Key="root/runs/.write-check-1", Body=b"")
    s3_endpoint.client().put_object(Bucket=s3_bucket, Key="rootless/other", Body=b"")

    assert store.list_keys("runs/ab") == ["runs/ab/x.json"]
    assert store.list_keys("runs") == ["runs/ab/x.json", "runs/abc/y.json"]
    assert store.list_keys("") == ["runs/ab/x.json", "runs/abc/y.json", "sweeps/s/summary.csv"]


def test_list_keys_many_pages(s3_endpoint, s3_bucket):
    store = s3_store(s3_endpoint, f"s3://{s3_bucket}/p")
    store.list_page_size = 2
    expected = [f"runs/{index}/result.json" for index in range(5)]
    for key in expected:
        store.write_bytes(key, b"{}", "application/json")

    assert store.list_keys("runs") == expected
    assert store.list_keys("runs/3") == ["runs/3/result.json"]


def test_check_leaves_nothing(s3_endpoint, s3_bucket):
    store = s3_store(s3_endpoint, f"s3://{s3_bucket}/checked")
    store.check()

    assert s3_endpoint.list_keys(s3_bucket) == []


def test_check_read_only(s3_endpoint, s3_bucket, fault_proxy):
    store = s3_store(s3_endpoint, f"s3://{s3_bucket}/plan", S3_ENDPOINT_URL=fault_proxy.url)
    store.check(read_only=True)

    assert [request.method for request in fault_proxy.requests] == ["HEAD", "GET"]
    missing = s3_store(s3_endpoint, f"s3://cubicfit-missing-{free_port()}/plan")
    with pytest.raises(StorageError, match="does not exist"):
        missing.check(create=True, read_only=True)


def test_multipart_round_trip(s3_endpoint, s3_bucket):
    store = s3_store(s3_endpoint, f"s3://{s3_bucket}/big")
    store.multipart_threshold = store.part_size = 5 * 1024 * 1024
    data = bytes(range(256)) * (11 * 1024 * 1024 // 256)  # 11 MiB: three parts

    store.write_bytes("losses.csv", data, "text/csv")
    assert store.read_bytes("losses.csv") == data
    assert store.create_bytes("losses.csv", b"x" * len(data), "text/csv") is False
    assert store.read_bytes("losses.csv") == data
    uploads = s3_endpoint.client().list_multipart_uploads(Bucket=s3_bucket,
                                                          Prefix="big/losses.csv")
    assert uploads.get("Uploads", []) == []


def test_multipart_failure_aborted(s3_endpoint, s3_bucket, fault_proxy):
    store = s3_store(s3_endpoint, f"s3://{s3_bucket}/big", S3_ENDPOINT_URL=fault_proxy.url,
                       CUBICFIT_S3_MAX_ATTEMPTS="2")
    store.multipart_threshold = store.part_size = 5 * 1024 * 1024
    fault_proxy.fail(status=503, code="SlowDown", method="PUT", path_contains="partNumber=2")

    with pytest.raises(StorageError, match="UploadPart 2"):
        store.write_bytes("losses.csv", b"0" * (11 * 1024 * 1024), "text/csv")

    assert len(fault_proxy.requests_matching("DELETE", "uploadId=")) == 1
    uploads = s3_endpoint.client().list_multipart_uploads(Bucket=s3_bucket,
                                                          Prefix="big/losses.csv")
    assert uploads.get("Uploads", []) == []
    assert s3_endpoint.list_keys(s3_bucket) == []


def test_describe_and_redact(s3_endpoint, s3_bucket):
    store = s3_store(s3_endpoint, f"s3://{s3_bucket}/a/b")

    assert store.describe() == f"s3://{s3_bucket}/a/b"
    assert store.describe("runs/x") == f"s3://{s3_bucket}/a/b/runs/x"
    redacted = store.redact(f"key {s3_endpoint.access_key} secret {s3_endpoint.secret_key}")
    assert s3_endpoint.secret_key not in redacted
    assert s3_endpoint.access_key not in redacted
    assert redacted.endswith("secret ***")


# Settings


@pytest.mark.parametrize(("value", "message"), [
    ("127.0.0.1:9000", "has no scheme; set it to a full URL such as http://127.0.0.1:9000"),
    ("minio.example:9000", "has no scheme"),
    ("ftp://minio:9000", "use http:// or https://"),
    ("http://:9000", "has no host name"),
    ("http://minio:99999", "invalid port"),
    ("http://minio:9000/?a=1", "query or fragment"),
])
def test_endpoint_rejected(value, message):
    with pytest.raises(StorageError, match=re.escape(message)) as caught:
        parse_endpoint(value, "S3_ENDPOINT_URL")
    assert caught.value.exit_code == 4


def test_endpoint_with_credentials():
    with pytest.raises(StorageError) as caught:
        parse_endpoint("http://admin:hunter2secret@minio:9000", "S3_ENDPOINT_URL")
    assert "hunter2secret" not in str(caught.value)
    assert "AWS_SECRET_ACCESS_KEY" in str(caught.value)


def test_endpoint_accepted():
    assert parse_endpoint("https://minio.example:9000/", "S3_ENDPOINT_URL") == \
        "https://minio.example:9000"


@pytest.mark.parametrize("value", ["0", "21", "three", "-1"])
def test_max_attempts_rejected(value):
    with pytest.raises(ConfigError, match="CUBICFIT_S3_MAX_ATTEMPTS"):
        parse_max_attempts({"CUBICFIT_S3_MAX_ATTEMPTS": value})


def test_max_attempts_default():
    assert parse_max_attempts({}) == 5
    assert parse_max_attempts({"CUBICFIT_S3_MAX_ATTEMPTS": "3"}) == 3
