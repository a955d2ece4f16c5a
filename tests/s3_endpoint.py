"""Start, probe and stop the S3 endpoints that the test suite runs against.

`start_endpoint()` picks the first available of these, unless the
environment variable TEST_S3_SERVER names one (auto, external, minio, docker
or moto):

1. external: S3_ENDPOINT_URL is already set. The suite uses it with
   AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from the environment and
   starts nothing.
2. minio: a `minio` binary on the PATH, started on a free port of 127.0.0.1
   with a temporary data folder.
3. docker: a Docker engine that responds, with MinIO from
   tests/minio-compose.yaml on a free port of 127.0.0.1.
4. moto: `moto_server` from the virtual environment on a free port of
   127.0.0.1, the embedded endpoint.

In auto mode a MinIO that fails to start is reported and the next choice is
tried. `start_credential_checking_moto()` starts a second moto_server with
IAM authentication on, for the tests of rejected credentials.
"""

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

TEST_ACCESS_KEY = "cubicfit-test"
# MinIO requires a root password of at least 8 characters.
TEST_SECRET_KEY = "cubicfit-test-secret-7f3a9c"
TEST_REGION = "us-east-1"
COMPOSE_FILE = Path(__file__).with_name("minio-compose.yaml")
READY_TIMEOUT = 30.0  # seconds for a started server to respond
KINDS = ("auto", "external", "minio", "docker", "moto")


class EndpointError(RuntimeError):
    """The requested test endpoint cannot be started or reached."""


@dataclasses.dataclass
class S3Endpoint:
    kind: str  # "external", "minio", "docker", "moto" or "moto-iam"
    url: str
    access_key: str
    secret_key: str
    description: str
    region: str = TEST_REGION
    created_buckets: list[str] = dataclasses.field(default_factory=list)

    def client(self, access_key: str | None = None, secret_key: str | None = None,
               url: str | None = None):
        """Return a boto3 S3 client for this endpoint (or `url`), without retries."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=url or self.url,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"},
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required",
                          retries={"mode": "standard", "total_max_attempts": 1}),
        )

    def env(self, **overrides: str | None) -> dict[str, str]:
        """Return an environment for a `cubicfit` subprocess that writes to this endpoint.

        AWS_*, S3_* and CUBICFIT_* variables of the calling shell are dropped,
        and the AWS profile files and instance metadata are switched off, so
        only these settings count. An override of None removes the variable.
        """
        env = {name: value for name, value in os.environ.items()
               if not name.startswith(("AWS_", "S3_", "CUBICFIT_"))}
        env.update({
            "S3_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        })
        for name, value in overrides.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def make_bucket(self) -> str:
        """Create a bucket with a fresh name, deleted again when the session ends."""
        name = f"cubicfit-test-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        self.created_buckets.append(name)
        return name

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        client = self.client()
        keys = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(entry["Key"] for entry in page.get("Contents", []))
        return sorted(keys)

    def bucket_exists(self, bucket: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client().head_bucket(Bucket=bucket)
            return True
        except ClientError as error:
            if error.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                return False
            raise

    def delete_buckets(self) -> None:
        """Delete the buckets made by make_bucket(), with their objects and uploads.

        Only an external endpoint needs this: the servers that the suite
        starts keep their data in memory or in a temporary folder.
        """
        if self.kind != "external":
            self.created_buckets.clear()
            return
        client = self.client()
        for bucket in self.created_buckets:
            with contextlib.suppress(Exception):
                for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
                    client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"],
                                                  UploadId=upload["UploadId"])
                for key in self.list_keys(bucket):
                    client.delete_object(Bucket=bucket, Key=key)
                client.delete_bucket(Bucket=bucket)
        self.created_buckets.clear()


@dataclasses.dataclass
class RunningEndpoint:
    endpoint: S3Endpoint
    stop: Callable[[], None]


def start_endpoint(kind: str | None = None) -> RunningEndpoint:
    """Start (or adopt) the test endpoint and wait until it responds."""
    kind = (kind or os.environ.get("TEST_S3_SERVER") or "auto").strip().lower()
    if kind not in KINDS:
        raise EndpointError(f"TEST_S3_SERVER={kind!r} is not one of {', '.join(KINDS)}")

    if kind == "external" or (kind == "auto" and os.environ.get("S3_ENDPOINT_URL")):
        return _adopt_external()
    notes = []
    if kind in ("auto", "minio") and shutil.which("minio"):
        try:
            return _start_minio_binary()
        except EndpointError as error:
            if kind == "minio":
                raise
            notes.append(f"minio binary failed to start ({error})")
    elif kind == "minio":
        raise EndpointError("TEST_S3_SERVER=minio, but there is no minio binary on the PATH")
    compose = _docker_compose_command() if kind in ("auto", "docker") else None
    if compose:
        try:
            return _start_docker_minio(compose)
        except EndpointError as error:
            if kind == "docker":
                raise
            notes.append(f"MinIO in Docker failed to start ({error})")
    elif kind == "docker":
        raise EndpointError("TEST_S3_SERVER=docker, but no Docker engine with compose responds")
    running = _start_moto()
    if notes:
        running.endpoint.description += "; " + "; ".join(notes)
    return running


def _adopt_external() -> RunningEndpoint:
    url = os.environ.get("S3_ENDPOINT_URL", "").strip()
    access_key = os.environ.get("AWS_ACCESS_KEY_ID", "")
    secret_key = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    if not url or not access_key or not secret_key:
        raise EndpointError("an external test endpoint needs S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID "
                            "and AWS_SECRET_ACCESS_KEY; set all three, or unset S3_ENDPOINT_URL "
                            "to let the suite start its own server")
    endpoint = S3Endpoint("external", url.rstrip("/"), access_key, secret_key,
                          f"external S3 endpoint {url} from S3_ENDPOINT_URL (started nothing)",
                          region=os.environ.get("AWS_DEFAULT_REGION") or TEST_REGION)
    return RunningEndpoint(endpoint, stop=lambda: None)


def _start_minio_binary() -> RunningEndpoint:
    data = tempfile.mkdtemp(prefix="cubicfit-minio-")
    port, console_port = free_port(), free_port()
    env = {**os.environ, "MINIO_ROOT_USER": TEST_ACCESS_KEY, "MINIO_ROOT_PASSWORD": TEST_SECRET_KEY}
    command = [shutil.which("minio"), "server", data, "--address", f"127.0.0.1:{port}",
               "--console-address", f"127.0.0.1:{console_port}"]
    process, log_path = _spawn(command, env, "minio")
    url = f"http://127.0.0.1:{port}"

    def stop() -> None:
        _stop_process(process, log_path)
        shutil.rmtree(data, ignore_errors=True)

    try:
        wait_until_ready(f"{url}/minio/health/live", process, log_path)
    except EndpointError:
        stop()
        raise
    endpoint = S3Endpoint("minio", url, TEST_ACCESS_KEY, TEST_SECRET_KEY,
                          f"MinIO ({command[0]}) at {url}, started by the test suite")
    return RunningEndpoint(endpoint, stop)


def _docker_compose_command() -> list[str] | None:
    """Return the compose command when a Docker engine responds, else None."""
    if not shutil.which("docker"):
        return None
    try:
        if subprocess.run(["docker", "info"], capture_output=True, timeout=15).returncode != 0:
            return None
        if subprocess.run(["docker", "compose", "version"], capture_output=True,
                          timeout=15).returncode == 0:
            return ["docker", "compose"]
    except (OSError, subprocess.TimeoutExpired):
        return None
    return ["docker-compose"] if shutil.which("docker-compose") else None


def _start_docker_minio(compose_command: list[str]) -> RunningEndpoint:
    # The project name lets you remove a container left by a killed test run by hand.
    compose = compose_command + ["-f", str(COMPOSE_FILE), "-p", f"cubicfit-test-{os.getpid()}"]
    port = free_port()
    env = {**os.environ, "MINIO_PORT": str(port), "MINIO_ROOT_USER": TEST_ACCESS_KEY,
           "MINIO_ROOT_PASSWORD": TEST_SECRET_KEY}
    url = f"http://127.0.0.1:{port}"

    def stop() -> None:
        subprocess.run(compose + ["down", "--volumes", "--remove-orphans"], env=env,
                       capture_output=True, timeout=120, check=False)

    try:
        # The first run pulls the image, which takes longer than the health wait.
        started = subprocess.run(compose + ["up", "--detach"], env=env, capture_output=True,
                                 text=True, timeout=600, check=False)
        if started.returncode != 0:
            raise EndpointError(f"docker compose up failed: {started.stderr.strip()[-500:]}")
        wait_until_ready(f"{url}/minio/health/live")
    except (EndpointError, subprocess.TimeoutExpired) as error:
        stop()
        raise EndpointError(str(error)) from None
    endpoint = S3Endpoint("docker", url, TEST_ACCESS_KEY, TEST_SECRET_KEY,
                          f"MinIO in Docker ({COMPOSE_FILE.name}) at {url}, started by the "
                          "test suite")
    return RunningEndpoint(endpoint, stop)


def _start_moto(description: str = "moto_server") -> RunningEndpoint:
    moto_server = Path(sys.executable).with_name("moto_server")
    if not moto_server.exists():
        found = shutil.which("moto_server")
        if not found:
            raise EndpointError("no S3 endpoint: install moto[server] (it provides moto_server) "
                                "or MinIO, or set S3_ENDPOINT_URL")
        moto_server = Path(found)
    port = free_port()
    process, log_path = _spawn([str(moto_server), "-H", "127.0.0.1", "-p", str(port)],
                               dict(os.environ), "moto")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{url}/moto-api/", process, log_path)
    except EndpointError:
        _stop_process(process, log_path)
        raise
    endpoint = S3Endpoint("moto", url, TEST_ACCESS_KEY, TEST_SECRET_KEY,
                          f"{description} at {url} (embedded endpoint, started by the test "
                          "suite)")
    return RunningEndpoint(endpoint, lambda: _stop_process(process, log_path))


@dataclasses.dataclass
class CredentialCheckingEndpoint:
    """An endpoint that checks credentials, with a writer and (on moto) a read-only user."""

    endpoint: S3Endpoint  # its keys belong to a user with full S3 access
    bucket: str
    read_only_keys: tuple[str, str] | None  # (access key, secret key); None when unavailable


def start_credential_checking_moto() -> tuple[CredentialCheckingEndpoint, Callable[[], None]]:
    """Start a moto_server that verifies signatures and IAM policies, as real servers do.

    moto accepts any credentials until its IAM check is switched on through
    /moto-api/reset-auth, so the users and the bucket are created before that.
    """
    running = _start_moto("moto_server with IAM authentication")
    url = running.endpoint.url
    try:
        setup = running.endpoint
        iam = _iam_client(url)
        writer = _make_iam_user(iam, "cubicfit-writer", ["s3:*"])
        # moto checks HEAD bucket against the action s3:HeadBucket, which AWS does not have.
        reader = _make_iam_user(iam, "cubicfit-reader",
                                ["s3:GetObject", "s3:ListBucket", "s3:HeadBucket"])
        bucket = f"cubicfit-auth-{uuid.uuid4().hex[:12]}"
        setup.client().create_bucket(Bucket=bucket)
        request = urllib.request.Request(f"{url}/moto-api/reset-auth", data=b"0", method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - local URL
            response.read()
    except Exception:
        running.stop()
        raise
    endpoint = S3Endpoint("moto-iam", url, writer[0], writer[1], running.endpoint.description)
    return CredentialCheckingEndpoint(endpoint, bucket, reader), running.stop


def _iam_client(url: str):
    import boto3

    return boto3.client("iam", endpoint_url=url, aws_access_key_id=TEST_ACCESS_KEY,
                        aws_secret_access_key=TEST_SECRET_KEY, region_name=TEST_REGION)


def _make_iam_user(iam, name: str, actions: list[str]) -> tuple[str, str]:
    iam.create_user(UserName=name)
    policy = {"Version": "2012-10-17",
              "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
    iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def rejects_unknown_keys(endpoint: S3Endpoint, bucket: str) -> bool:
    """Tell whether `endpoint` rejects a request signed with an unknown access key."""
    from botocore.exceptions import ClientError

    client = endpoint.client(access_key="CUBICFITUNKNOWNKEY01", secret_key="not-the-secret-123")
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as error:
        return error.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    return False


# Processes and ports

def free_port() -> int:
    """Return a TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _spawn(command: list[str], env: dict[str, str], name: str):
    log_file = tempfile.NamedTemporaryFile(prefix=f"cubicfit-{name}-", suffix=".log",
                                           delete=False)
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                               stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    log_file.close()
    return process, log_file.name


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Resolved in the parent, because the child between fork and exec must not import anything.
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to the server when the test process dies, even by SIGKILL."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop_process(process: subprocess.Popen, log_path: str) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    with contextlib.suppress(OSError):
        os.remove(log_path)


def wait_until_ready(url: str, process: subprocess.Popen | None = None,
                     log_path: str | None = None, timeout: float = READY_TIMEOUT) -> None:
    """Poll `url` until it responds with HTTP 200, or raise EndpointError on timeout or exit."""
    deadline = time.monotonic() + timeout
    last_error = "no response"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise EndpointError(f"the server exited with code {process.returncode} before "
                                f"responding; its log: {_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - local URL
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as error:
            last_error = str(error)
        time.sleep(0.1)
    raise EndpointError(f"{url} did not respond within {timeout:.0f}s ({last_error}); "
                        f"log: {_tail(log_path)}")


def _tail(path: str | None, length: int = 800) -> str:
    if not path:
        return "(none)"
    try:
        return Path(path).read_text(errors="replace")[-length:]
    except OSError:
        return "(unreadable)"
