"""Shared fixtures: one S3 endpoint for the whole test session, buckets and a fault proxy.

Fixtures for any test file:

- `s3_endpoint` (session): the running endpoint, an `s3_endpoint.S3Endpoint`
  with `url`, `access_key`, `secret_key`, `region` and `kind`. It is started
  on first use, as described in tests/s3_endpoint.py: an external
  S3_ENDPOINT_URL, else a `minio` binary, else MinIO in Docker, else
  moto_server on 127.0.0.1 (TEST_S3_SERVER=moto and the like force one). The
  suite prints which one it uses, and stops what it started when the session
  ends, also after failures or Ctrl-C. Useful methods:
  `s3_endpoint.env(**overrides)` returns the environment for a `cubicfit`
  subprocess that writes to the endpoint; `s3_endpoint.client()` returns a
  boto3 client; `s3_endpoint.list_keys(bucket, prefix)` lists objects.
- `s3_bucket`: the name of a fresh, empty bucket on that endpoint; every
  bucket made this way is deleted at the end of the session.
- `fault_proxy`: a `faultproxy.FaultProxy` listening on 127.0.0.1 in front of
  the endpoint. Point S3_ENDPOINT_URL at `fault_proxy.url`, then inject 503
  responses, connection resets or a stopped server.
- `credential_endpoint` (session): an endpoint that checks credentials, with
  its own bucket; see `s3_endpoint.CredentialCheckingEndpoint`.

Example:

    def test_sweep_to_s3(s3_endpoint, s3_bucket, tmp_path):
        env = s3_endpoint.env()
        subprocess.run([sys.executable, "-m", "cubicfit", "run", "--output",
                        f"s3://{s3_bucket}/prefix"], env=env, cwd=tmp_path, check=True)
"""

import pytest

from faultproxy import FaultProxy
from s3_endpoint import (
    CredentialCheckingEndpoint,
    EndpointError,
    S3Endpoint,
    rejects_unknown_keys,
    start_credential_checking_moto,
    start_endpoint,
)

_ENDPOINT_DESCRIPTIONS = pytest.StashKey[list[str]]()


def _announce(config: pytest.Config, line: str) -> None:
    config.stash.setdefault(_ENDPOINT_DESCRIPTIONS, []).append(line)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    # Output capture is on while fixtures run, so it is paused for this line.
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line(f"S3 endpoint for the tests: {line}")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    for line in config.stash.get(_ENDPOINT_DESCRIPTIONS, []):
        terminalreporter.write_line(f"S3 endpoint used: {line}")


@pytest.fixture(scope="session")
def s3_endpoint(request) -> S3Endpoint:
    try:
        running = start_endpoint()
    except EndpointError as error:
        pytest.fail(f"cannot start the S3 endpoint for the tests: {error}", pytrace=False)
    request.addfinalizer(running.stop)
    request.addfinalizer(running.endpoint.delete_buckets)  # finalizers run last-in, first-out
    _announce(request.config, running.endpoint.description)
    return running.endpoint


@pytest.fixture
def s3_bucket(s3_endpoint) -> str:
    return s3_endpoint.make_bucket()


@pytest.fixture
def fault_proxy(s3_endpoint):
    proxy = FaultProxy(s3_endpoint.url)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def credential_endpoint(request, s3_endpoint):
    """Return the session endpoint when it checks credentials, else a moto_server with IAM."""

    if s3_endpoint.kind != "moto":
        bucket = s3_endpoint.make_bucket()
        if rejects_unknown_keys(s3_endpoint, bucket):
            return CredentialCheckingEndpoint(s3_endpoint, bucket, read_only_keys=None)
    checking, stop = start_credential_checking_moto()
    request.addfinalizer(stop)
    _announce(request.config, checking.endpoint.description)
    return checking
