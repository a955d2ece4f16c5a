"""Reliability cases that the other test files leave open, and the check of docs/reliability.md.

docs/reliability.md lists every failure case with the test that proves it.
Most of those tests live in other files. This file adds:

- slow S3 responses, HTTP 429 throttling, and SIGTERM with S3 output
- a dotted bucket and a key prefix with unusual but legal characters, end to end
- '.' and '..' in a key prefix, rejected before any request
- configuration attacks through the real command line, including an alias bomb
- a second signal, which ends the process at once
- a scan for credentials in every log line, stored object and shipped file
- `test_matrix_names_existing_tests`, which keeps the matrix true to the suite

Commands run in this process through `cubicfit.cli.main`, with real signals,
over real HTTP to the session's S3 endpoint, through tests/faultproxy.py
where a fault is needed. Nothing patches boto3. The read-timeout tests lower
the job's own READ_TIMEOUT setting (60 s), so that a timeout takes a second.
"""

import ast
import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import cubicfit.storage.s3_settings
from cubicfit.cli import main
from cubicfit.exitcodes import ExitCode
from faultproxy import FaultProxy
from s3_endpoint import TEST_ACCESS_KEY, TEST_SECRET_KEY, free_port

ROOT = Path(__file__).resolve().parents[1]
MATRIX = ROOT / "docs" / "reliability.md"
FIT = ["--iterations", "200", "--log-every", "100"]
RUN_FILES = ("config.json", "fit.png", "losses.csv", "result.json")
SWEEP_FILES = ("report.md", "report.png", "summary.csv", "sweep.json")
# The fit of tests/test_checkpoints.py: 100 chunks of 200 steps.
LONG_FIT = ["--iterations", "20000", "--log-every", "200", "--learning-rate", "3e-6"]


@dataclasses.dataclass
class Finished:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(monkeypatch, capsys):
    """Return a function that runs `cubicfit ARGV` in this process, with `env` as os.environ."""

    def invoke(argv: list[str], env: dict[str, str] | None = None, cwd=None) -> Finished:
        handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
        with monkeypatch.context() as patch:
            if env is not None:
                for name in list(os.environ):
                    if name not in env:
                        patch.delenv(name)
                for name, value in env.items():
                    patch.setenv(name, value)
            if cwd is not None:
                patch.chdir(cwd)
            capsys.readouterr()
            try:
                code = main(argv)
            except SystemExit as error:  # argparse usage errors
                code = error.code
            finally:
                for number, handler in handlers.items():
                    signal.signal(number, handler)
            captured = capsys.readouterr()
        return Finished(int(code), captured.out, captured.err)

    return invoke


class _SigtermAfterProgress(logging.Handler):
    def __init__(self, lines: int):
        super().__init__()
        self.remaining = lines

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("step "):
            self.remaining -= 1
            if self.remaining == 0:
                os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def sigterm_after(lines: int):
    """Send a real SIGTERM to this process when the runner logs its `lines`-th progress line.

    The handler sits on the runner's own logger, which `setup_logging` leaves alone.
    """
    handler = _SigtermAfterProgress(lines)
    logger = logging.getLogger("cubicfit.runner")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def bucket_keys(endpoint, bucket: str) -> set[str]:
    return set(endpoint.list_keys(bucket))


def read_object(endpoint, bucket: str, key: str) -> bytes:
    return endpoint.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def run_id_of(cli, env, *args) -> str:
    dry = cli(["run", *args, "--dry-run"], env)
    assert dry.code == 0, dry.err
    return json.loads(dry.out)["run_id"]


def retry_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if re.search(r"retry \d+ of \d+", line)]


# Slow responses and throttling


@pytest.fixture
def short_read_timeout(monkeypatch):
    """Lower the job's S3 read timeout from 60 s to 1 s for this test."""
    monkeypatch.setattr(cubicfit.storage.s3_settings, "READ_TIMEOUT", 1)
    return 1.0


def test_slow_within_timeout(s3_endpoint, s3_bucket, fault_proxy, short_read_timeout, tmp_path,
                             cli):
    env = s3_endpoint.env(S3_ENDPOINT_URL=fault_proxy.url)
    for name in ("/losses.csv", "/result.json"):
        fault_proxy.delay(0.3 * short_read_timeout, method="PUT", path_contains=name)

    result = cli(["run", *FIT, "--output", f"s3://{s3_bucket}/slow"], env, tmp_path)

    assert result.code == ExitCode.OK, result.err
    assert retry_lines(result.err) == []
    assert len(fault_proxy.requests_matching("PUT", "/losses.csv")) == 1
    assert len(fault_proxy.requests_matching("PUT", "/result.json")) == 1
    (run_id,) = {key.split("/")[2] for key in bucket_keys(s3_endpoint, s3_bucket)}
    assert bucket_keys(s3_endpoint, s3_bucket) == {f"slow/runs/{run_id}/{name}"
                                                   for name in RUN_FILES}


def test_slow_once_beyond_timeout(s3_endpoint, s3_bucket, fault_proxy, short_read_timeout,
                                  tmp_path, cli):
    env = s3_endpoint.env(S3_ENDPOINT_URL=fault_proxy.url)
    fault_proxy.delay(2 * short_read_timeout, times=1, method="PUT", path_contains="/losses.csv")

    result = cli(["run", *FIT, "--output", f"s3://{s3_bucket}/late"], env, tmp_path)

    assert result.code == ExitCode.OK, result.err
    (retry,) = retry_lines(result.err)
    assert "PutObject" in retry
    assert "timeout" in retry.lower()
    assert len(fault_proxy.requests_matching("PUT", "/losses.csv")) == 2
    names = {key.rsplit("/", 1)[1] for key in bucket_keys(s3_endpoint, s3_bucket)}
    assert names == set(RUN_FILES)


def test_slow_at_check_exits_4(s3_endpoint, s3_bucket, fault_proxy, short_read_timeout, tmp_path,
                               cli):
    env = s3_endpoint.env(S3_ENDPOINT_URL=fault_proxy.url, CUBICFIT_S3_MAX_ATTEMPTS="2")
    fault_proxy.delay(2 * short_read_timeout)

    started = time.monotonic()
    result = cli(["run", *FIT, "--output", f"s3://{s3_bucket}/stalled"], env, tmp_path)

    assert result.code == ExitCode.STORAGE_ERROR, result.err
    assert time.monotonic() - started < 10
    assert len(retry_lines(result.err)) == 1
    assert f"cannot reach the S3 endpoint {fault_proxy.url}" in result.err
    assert "failed on all 2 attempts" in result.err
    assert "fitting" not in result.err
    assert [request.method for request in fault_proxy.requests] == ["HEAD", "HEAD"]
    assert bucket_keys(s3_endpoint, s3_bucket) == set()


def test_slow_mid_run_exits_4(s3_endpoint, s3_bucket, fault_proxy, short_read_timeout, tmp_path,
                              cli):
    env = s3_endpoint.env(S3_ENDPOINT_URL=fault_proxy.url, CUBICFIT_S3_MAX_ATTEMPTS="2")
    fault_proxy.delay(2 * short_read_timeout, method="PUT", path_contains="/fit.png")
    output = f"s3://{s3_bucket}/stuck"

    result = cli(["run", *FIT, "--output", output], env, tmp_path)

    assert result.code == ExitCode.STORAGE_ERROR, result.err
    assert "fitting" in result.err
    assert "failed on all 2 attempts" in result.err
    names = {key.rsplit("/", 1)[1] for key in bucket_keys(s3_endpoint, s3_bucket)}
    assert "result.json" not in names

    fault_proxy.clear_rules()
    rerun = cli(["run", *FIT, "--output", output], env, tmp_path)

    assert rerun.code == ExitCode.OK, rerun.err
    assert "succeeded" in rerun.err


def test_throttled_429_retried(s3_endpoint, s3_bucket, fault_proxy, tmp_path, cli):
    env = s3_endpoint.env(S3_ENDPOINT_URL=fault_proxy.url)
    fault_proxy.fail(status=429, code="TooManyRequests", times=2, method="PUT",
                     path_contains="/result.json")

    result = cli(["run", *FIT, "--output", f"s3://{s3_bucket}/throttled"], env, tmp_path)

    assert result.code == ExitCode.OK, result.err
    retries = retry_lines(result.err)
    assert len(retries) == 2
    assert all("HTTP 429 TooManyRequests" in line for line in retries)
    statuses = [request.status for request in fault_proxy.requests_matching("PUT", "/result.json")]
    assert statuses == [429, 429, 200]


# Unusual but legal names


ODD_PREFIX = "odd prefix/a+b=c/ünïcödé ✓/wow!"


def test_odd_prefix_round_trip(s3_endpoint, tmp_path, cli):
    bucket = f"rel.{uuid.uuid4().hex[:12]}.dots-and-hyphens"
    s3_endpoint.client().create_bucket(Bucket=bucket)
    s3_endpoint.created_buckets.append(bucket)  # deleted at the end of the session
    output = f"s3://{bucket}/{ODD_PREFIX}"
    env = s3_endpoint.env()
    spec = tmp_path / "odd.yaml"
    spec.write_text("name: odd-names\nbase: {iterations: 200, log_every: 100}\n"
                    "grid: {learning_rate: [1e-6, 2e-6]}\n")

    first = cli(["run", *FIT, "--output", output], env, tmp_path)
    assert first.code == ExitCode.OK, first.err
    run_id = run_id_of(cli, env, *FIT)
    run_keys = {f"{ODD_PREFIX}/runs/{run_id}/{name}" for name in RUN_FILES}
    assert bucket_keys(s3_endpoint, bucket) == run_keys
    etag = s3_endpoint.client().head_object(
        Bucket=bucket, Key=f"{ODD_PREFIX}/runs/{run_id}/result.json")["ETag"]

    again = cli(["run", *FIT, "--output", output], env, tmp_path)
    assert again.code == ExitCode.OK, again.err
    assert "already finished" in again.err
    assert again.out.startswith("y = ")
    assert s3_endpoint.client().head_object(
        Bucket=bucket, Key=f"{ODD_PREFIX}/runs/{run_id}/result.json")["ETag"] == etag

    sweep = cli(["sweep", str(spec), "--output", output], env, tmp_path)
    assert sweep.code == ExitCode.OK, sweep.err
    plan = cli(["plan", str(spec), "--output", output, "--format", "json"], env, tmp_path)
    assert plan.code == ExitCode.OK, plan.err
    points = json.loads(plan.out)["points"]
    assert all(point["finished"] for point in points)
    sweep_ids = {point["run_id"] for point in points}
    assert run_id in sweep_ids  # the single fit is the sweep's first point, not rerun
    expected = {f"{ODD_PREFIX}/runs/{rid}/{name}" for rid in sweep_ids for name in RUN_FILES}
    expected |= {f"{ODD_PREFIX}/sweeps/odd-names/{name}" for name in SWEEP_FILES}
    assert bucket_keys(s3_endpoint, bucket) == expected
    summary = read_object(s3_endpoint, bucket, f"{ODD_PREFIX}/sweeps/odd-names/summary.csv")
    assert summary.decode().count("succeeded") == 2
    assert json.loads(sweep.out.splitlines()[-1])["runs"] == 2


@pytest.mark.parametrize("prefix", ["..", "a/../../b", "./x", "a/./b"])
@pytest.mark.parametrize("where", ["run-flag", "run-env", "sweep-spec", "sweep-flag"])
def test_dot_prefix_rejected(s3_endpoint, s3_bucket, fault_proxy, tmp_path, cli, where, prefix):
    output = f"s3://{s3_bucket}/{prefix}"
    env = s3_endpoint.env(S3_ENDPOINT_URL=fault_proxy.url)
    spec = tmp_path / "spec.yaml"
    base = {"iterations": 10, **({"output": output} if where == "sweep-spec" else {})}
    spec.write_text(json.dumps({"name": "dots", "base": base, "grid": {"seed": [0, 1]}}))
    argv = {"run-flag": ["run", "--output", output, "--iterations", "10"],
            "run-env": ["run", "--iterations", "10"],
            "sweep-spec": ["sweep", str(spec)],
            "sweep-flag": ["sweep", str(spec), "--output", output]}[where]
    if where == "run-env":
        env["CUBICFIT_OUTPUT"] = output

    result = cli(argv, env, tmp_path)

    assert result.code == ExitCode.INVALID_CONFIG, result.err
    assert "'.' and '..' path segments are not allowed" in result.err
    assert fault_proxy.requests == []
    assert bucket_keys(s3_endpoint, s3_bucket) == set()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["spec.yaml"]


# Configuration attacks through the command line


def _alias_bomb() -> str:
    """Return 400 bytes of YAML whose aliases expand to 10^10 list items."""
    layers = ["&l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for level in range(1, 10):
        layers.append(f"&l{level} [" + ", ".join([f"*l{level - 1}"] * 10) + "]")
    return "[" + ", ".join(layers) + "]"


MARKER = "created-by-yaml"
BAD_CONFIGS = {
    "malformed": ("run", "learning_rate: [1e-6\n", {}, "invalid YAML"),
    "python-tag": ("run", f"seed: !!python/object/apply:os.mkdir ['{MARKER}']\n", {},
                   "YAML tag 'tag:yaml.org,2002:python/object/apply:os.mkdir' is not allowed"),
    "alias-bomb": ("run", f"iterations: {_alias_bomb()}\n", {}, "YAML alias '*l0' is not allowed"),
    "huge-float": ("run", "iterations: 1e400\n", {}, "iterations: expected an integer"),
    "huge-env": ("run", None, {"CUBICFIT_SEED": "9" * 40}, "seed: must be between 0"),
    "inf-flag": ("run", None, {"args": ["--learning-rate", "inf"]}, "is not a finite number"),
    "nan-flag": ("run", None, {"args": ["--x-max", "nan"]}, "is not a finite number"),
    "far-x": ("run", None, {"args": ["--x-max", "1e7"]}, "must be at most 1e6"),
    "bad-device": ("run", None, {"args": ["--device", "tpu"]}, "device: invalid device"),
    "sweep-tag": ("sweep", f"name: t\ngrid:\n  seed: !!python/object/apply:os.mkdir ['{MARKER}']\n",
                  {}, "is not allowed"),
    "sweep-alias": ("sweep", "name: t\nbase: &b {iterations: 10}\ngrid: {seed: [0]}\n"
                    "extra: *b\n", {}, "YAML alias '*b' is not allowed"),
    "sweep-nan": ("sweep", "name: t\ngrid: {learning_rate: [1e-6, .nan]}\n", {},
                  "is not a finite number"),
    "index-not-number": ("sweep", "name: t\ngrid: {seed: [0, 1]}\n",
                         {"JOB_COMPLETION_INDEX": "one", "CUBICFIT_SHARD_COUNT": "2"},
                         "JOB_COMPLETION_INDEX: 'one'"),
    "spec-text-tag": ("sweep", None, {"args": ["--spec-text", "grid: !!binary aGVsbG8="]},
                      "is not allowed"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_via_cli(tmp_path, cli, case):
    command, text, extra, message = BAD_CONFIGS[case]
    extra = dict(extra)
    argv = [command, *extra.pop("args", [])]
    if text is not None:
        config = tmp_path / "input.yaml"
        config.write_text(text)
        argv.insert(1, str(config))
    env = {name: value for name, value in os.environ.items() if not name.startswith("CUBICFIT_")}
    env.update(extra)
    output = tmp_path / "out"
    env["CUBICFIT_OUTPUT"] = str(output)

    started = time.monotonic()
    result = cli(argv, env, tmp_path)

    assert result.code == ExitCode.INVALID_CONFIG, result.err
    assert message in result.err
    assert time.monotonic() - started < 5
    assert not output.exists()
    assert not (tmp_path / MARKER).exists()
    assert "Traceback" not in result.err


# Signals


def test_second_signal_exits_at_once(tmp_path):
    # One chunk of 5 million steps takes about 20 s, so only the second signal ends it early.
    output = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "cubicfit", "run", "--iterations", "5000000", "--log-every",
         "5000000", "--output", str(output)], stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        if "fitting" in line:
            break
    time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    for line in process.stderr:
        if "received SIGTERM" in line:
            break
    # NOTE: a second signal that arrives while the first handler is still logging raises
    # inside logging.Handler.emit, which swallows the exception. The pause avoids that race.
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    process.wait(timeout=30)

    assert process.returncode == ExitCode.TERMINATED
    assert time.monotonic() - started < 5
    assert list(output.rglob("result.json")) == []
    assert list(output.rglob(".tmp-*")) == []


@pytest.fixture(scope="module")
def long_fit_reference(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("reference")
    assert main(["run", "--output", str(root), "--quiet", *LONG_FIT]) == ExitCode.OK
    (folder,) = (root / "runs").iterdir()
    return {"result": json.loads((folder / "result.json").read_text()),
            "losses": (folder / "losses.csv").read_bytes()}


def test_sigterm_resumes_on_s3(s3_endpoint, s3_bucket, long_fit_reference, tmp_path, cli):
    env = s3_endpoint.env()
    generator = random.Random(8)
    run_id = long_fit_reference["result"]["run_id"]
    expected = {k: long_fit_reference["result"][k] for k in ("coefficients", "final_loss")}
    for trial in range(3):
        lines = generator.randint(1, 99)
        output = f"s3://{s3_bucket}/trial-{trial}"
        folder = f"trial-{trial}/runs/{run_id}"

        with sigterm_after(lines):
            stopped = cli(["run", *LONG_FIT, "--output", output], env, tmp_path)
        names = {key.rsplit("/", 1)[1] for key in s3_endpoint.list_keys(s3_bucket, folder)}
        assert stopped.code == ExitCode.TERMINATED, f"trial {trial}: {stopped.err}"
        assert "result.json" not in names
        checkpoint = json.loads(read_object(s3_endpoint, s3_bucket, f"{folder}/checkpoint.json"))
        assert checkpoint["step"] == lines * 200 - 1

        resumed = cli(["run", *LONG_FIT, "--output", output], env, tmp_path)
        assert resumed.code == ExitCode.OK, resumed.err
        assert f"resumes from its checkpoint at step {lines * 200 - 1}" in resumed.err
        result = json.loads(read_object(s3_endpoint, s3_bucket, f"{folder}/result.json"))
        assert {k: result[k] for k in expected} == expected, f"trial {trial}"
        losses = read_object(s3_endpoint, s3_bucket, f"{folder}/losses.csv")
        assert losses == long_fit_reference["losses"], f"trial {trial}"
        names = {key.rsplit("/", 1)[1] for key in s3_endpoint.list_keys(s3_bucket, folder)}
        assert names == set(RUN_FILES)


# Secrets


@dataclasses.dataclass
class Transcript:
    """Everything that a series of commands printed, and the objects they stored."""

    runs: dict[str, Finished] = dataclasses.field(default_factory=dict)
    objects: dict[str, bytes] = dataclasses.field(default_factory=dict)

    def record(self, label: str, finished: Finished) -> Finished:
        self.runs[label] = finished
        return finished

    def snapshot(self, endpoint, bucket: str, label: str) -> None:
        for key in endpoint.list_keys(bucket):
            self.objects[f"{label}:{key}"] = read_object(endpoint, bucket, key)


def test_no_secret_in_logs_or_objects(credential_endpoint, tmp_path, cli):
    endpoint = credential_endpoint.endpoint
    bucket = f"scan-{uuid.uuid4().hex[:16]}"
    endpoint.client().create_bucket(Bucket=bucket)
    endpoint.created_buckets.append(bucket)
    output = f"s3://{bucket}/scan"
    wrong_secret = f"wrong-secret-{uuid.uuid4().hex}"
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: scan\nbase: {iterations: 300, log_every: 100}\n"
                    "grid: {learning_rate: [1e-6, 1e-5]}\n")
    json_log = ["--log-format", "json"]
    seen = Transcript()

    def run(label: str, argv: list[str], expected: int, **overrides: str) -> Finished:
        finished = seen.record(label, cli(argv, endpoint.env(**overrides), tmp_path))
        assert finished.code == expected, f"{label}: {finished.err}"
        return finished

    run("fit", ["run", *FIT, "--output", output], ExitCode.OK)
    run("fit again", ["run", *json_log, *FIT, "--output", output], ExitCode.OK)
    run("dry run", ["run", *FIT, "--output", output, "--dry-run"], ExitCode.OK)
    run("diverged", ["run", *json_log, "--learning-rate", "1e-5", "--output", output],
        ExitCode.DIVERGED)
    with sigterm_after(3):
        run("interrupted", ["run", "--iterations", "2000", "--output", output],
            ExitCode.TERMINATED)
    seen.snapshot(endpoint, bucket, "with checkpoint")
    run("resumed", ["run", *json_log, "--iterations", "2000", "--output", output], ExitCode.OK)
    run("sweep", ["sweep", *json_log, str(spec), "--output", output], ExitCode.OK)
    run("plan", ["plan", str(spec), "--output", output], ExitCode.OK)
    run("plan json", ["plan", str(spec), "--output", output, "--format", "json"], ExitCode.OK)
    run("report", ["report", str(spec), "--output", output], ExitCode.OK)
    wrong = run("wrong secret", ["run", *FIT, "--output", output], ExitCode.STORAGE_ERROR,
                AWS_SECRET_ACCESS_KEY=wrong_secret)
    run("wrong secret json", ["sweep", *json_log, str(spec), "--output", output],
        ExitCode.STORAGE_ERROR, AWS_SECRET_ACCESS_KEY=wrong_secret)
    run("endpoint down", ["run", *json_log, *FIT, "--output", output], ExitCode.STORAGE_ERROR,
        S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}", CUBICFIT_S3_MAX_ATTEMPTS="2")
    proxy = FaultProxy(endpoint.url)
    proxy.start()
    try:
        proxy.fail(status=503, code="SlowDown", method="PUT", path_contains="/fit.png")
        run("failing endpoint", ["run", "--iterations", "250", "--output", output],
            ExitCode.STORAGE_ERROR, S3_ENDPOINT_URL=proxy.url, CUBICFIT_S3_MAX_ATTEMPTS="2")
    finally:
        proxy.stop()
    seen.snapshot(endpoint, bucket, "at the end")

    secrets = {"secret key": endpoint.secret_key, "access key id": endpoint.access_key,
               "wrong secret key": wrong_secret}
    assert len(seen.runs) == 14
    assert len(seen.objects) > 20
    for label, finished in seen.runs.items():
        for name, secret in secrets.items():
            assert secret not in finished.out, f"the {name} in the stdout of '{label}'"
            assert secret not in finished.err, f"the {name} in the log of '{label}'"
    for label, data in seen.objects.items():
        for name, secret in secrets.items():
            assert secret.encode() not in data, f"the {name} in {label}"
    for label in ("fit again", "diverged", "resumed", "sweep", "wrong secret json",
                  "endpoint down"):
        lines = seen.runs[label].err.splitlines()
        assert lines, label
        assert all(isinstance(json.loads(line), dict) for line in lines), label
    # The one rule for access key IDs: the last four characters, as '...WXYZ'.
    assert f"'...{endpoint.access_key[-4:]}'" in wrong.err
    assert endpoint.access_key[-5:] not in wrong.err


def test_short_access_key_fully_hidden(credential_endpoint, tmp_path, cli):
    endpoint = credential_endpoint.endpoint
    env = endpoint.env(AWS_ACCESS_KEY_ID="Q7zX", AWS_SECRET_ACCESS_KEY=f"s-{uuid.uuid4().hex}")

    result = cli(["run", *FIT, "--output", f"s3://{credential_endpoint.bucket}/short"], env,
                 tmp_path)

    assert result.code == ExitCode.STORAGE_ERROR, result.err
    assert "'***'" in result.err
    assert "Q7zX" not in result.err
    assert env["AWS_SECRET_ACCESS_KEY"] not in result.err


def shipped_files() -> list[Path]:
    """Return the manifests, the DAG, the image recipe and the sources the image installs."""
    files = [ROOT / "jobs" / "Dockerfile", ROOT / ".dockerignore", ROOT / "pyproject.toml",
             ROOT / "jobs" / "requirements-job.txt"]
    files += sorted(path for path in (ROOT / "k8s").rglob("*") if path.is_file())
    files += sorted((ROOT / "dags").rglob("*.py"))
    files += sorted((ROOT / "jobs" / "cubicfit").rglob("*.py"))
    return files


AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")


def test_shipped_files_hold_no_credentials():
    files = shipped_files()
    assert len(files) > 40
    for path in files:
        text = path.read_text(encoding="utf-8")
        where = str(path.relative_to(ROOT))
        assert TEST_SECRET_KEY not in text, where
        assert TEST_ACCESS_KEY not in text, where
        assert not AWS_KEY_ID.search(text), where


def test_readme_in_image_holds_no_credentials():
    # The image installs README.md as the package description (pyproject.toml: readme).
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert TEST_SECRET_KEY not in text


@pytest.mark.airflow
@pytest.mark.skipif(importlib.util.find_spec("airflow") is None, reason="Airflow not installed")
def test_dag_params_hold_no_secret(tmp_path):
    """Parse the DAG with credentials in every place Airflow could read them from."""
    secret = f"dag-secret-{uuid.uuid4().hex}"
    access_key = f"AKIA{uuid.uuid4().hex[:16].upper()}"
    connection = {"conn_type": "aws", "login": access_key, "password": secret,
                  "extra": {"endpoint_url": "http://127.0.0.1:9", "region_name": "us-east-1"}}
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("AIRFLOW", "AWS_", "S3_", "CUBICFIT_"))}
    env.update({"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret,
                "AIRFLOW_CONN_CUBICFIT_S3": json.dumps(connection)})
    # tests/test_dag.py parses the DAG in a fresh interpreter and prints RESULT-JSON {...}.
    child = subprocess.run([sys.executable, str(ROOT / "tests" / "test_dag.py"), "parse", "null"],
                           env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
                           check=False)
    assert child.returncode == 0, child.stderr[-3000:]
    (line,) = [line for line in child.stdout.splitlines() if line.startswith("RESULT-JSON ")]
    info = json.loads(line[len("RESULT-JSON "):])
    params = json.dumps(info["params"])

    assert info["import_errors"] == {}
    assert len(info["params"]) > 10
    assert secret not in params
    assert access_key not in params
    assert secret not in child.stdout + child.stderr
    assert access_key not in child.stdout + child.stderr


def _shell_calls(tree: ast.AST) -> list[str]:
    """Return the calls in `tree` that start a shell or pass a command as one string."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        if name in ("os.system", "os.popen", "subprocess.getoutput",
                    "subprocess.getstatusoutput"):
            found.append(name)
        for keyword in node.keywords:
            if keyword.arg == "shell" and not (isinstance(keyword.value, ast.Constant)
                                               and keyword.value.value is False):
                found.append(f"{name}(shell=...)")
        if name.startswith("subprocess.") and node.args and isinstance(
                node.args[0], ast.Constant | ast.JoinedStr | ast.BinOp):
            found.append(f"{name} with a command string")
    return found


def test_no_shell_in_dag_or_job():
    files = sorted((ROOT / "dags").rglob("*.py")) + sorted((ROOT / "jobs").rglob("*.py"))
    assert any(path.name == "command.py" for path in files)  # it starts a child process
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert _shell_calls(tree) == [], path.relative_to(ROOT)


# The failure matrix


def matrix_rows() -> list[list[str]]:
    """Return the cells of the failure matrix table in docs/reliability.md."""
    text = MATRIX.read_text(encoding="utf-8")
    section = text.split("## Failure matrix", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("|") or set(line) <= set("|- "):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] != "case":
            rows.append(cells)
    return rows


def collected_ids(files: set[str]) -> set[str]:
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         *sorted(files)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    return {line.strip() for line in collected.stdout.splitlines() if "::" in line}


def test_matrix_names_existing_tests():
    rows = matrix_rows()
    named = {test for row in rows for test in re.findall(r"`(tests/[^`]+::[^`]+)`", row[3])}
    ids = collected_ids({test.split("::")[0] for test in named})
    codes = {str(int(code)) for code in ExitCode}

    assert len(rows) >= 40
    for row in rows:
        assert len(row) == 4, row
        assert re.findall(r"`tests/[^`]+::[^`]+`", row[3]), row[0]
        assert set(re.findall(r"\d+", row[2])) <= codes, row[0]
    for test in sorted(named):
        assert test in ids or any(found.startswith(test + "[") for found in ids), test
