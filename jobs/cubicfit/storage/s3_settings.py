"""S3 connection settings from the environment, and the botocore client configuration.

Variables: `S3_ENDPOINT_URL`, then `AWS_ENDPOINT_URL_S3` and
`AWS_ENDPOINT_URL` (botocore would apply these two without our checks), and
AWS S3 when none is set. `AWS_DEFAULT_REGION`, then `AWS_REGION`, then
`us-east-1`. `CUBICFIT_S3_MAX_ATTEMPTS` for the retries. Credentials come from botocore's
standard chain: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
`AWS_SESSION_TOKEN`, a profile, or a pod or instance identity.

This module imports no boto3 at import time.
"""

import dataclasses
from collections.abc import Mapping
from urllib.parse import urlsplit

from cubicfit.errors import ConfigError, StorageError

ENDPOINT_VARIABLES = ("S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
MAX_ATTEMPTS_VARIABLE = "CUBICFIT_S3_MAX_ATTEMPTS"
DEFAULT_REGION = "us-east-1"
DEFAULT_MAX_ATTEMPTS = 5
MAX_ATTEMPTS_LIMIT = 20

# Timeouts in seconds. The connect timeout keeps an unreachable endpoint from stalling the check.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 60


@dataclasses.dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None  # None means AWS S3
    endpoint_variable: str | None  # the environment variable the endpoint came from
    region: str
    max_attempts: int

    @property
    def endpoint_label(self) -> str:
        if self.endpoint_url is None:
            return f"AWS S3 (region {self.region})"
        return self.endpoint_url


def settings_from_env(environ: Mapping[str, str]) -> S3Settings:
    """Read and validate the S3 settings. A bad endpoint raises StorageError (exit code 4)."""
    endpoint_url = None
    endpoint_variable = None
    for name in ENDPOINT_VARIABLES:
        value = environ.get(name, "").strip()
        if value:
            endpoint_url = parse_endpoint(value, name)
            endpoint_variable = name
            break

    region = (environ.get("AWS_DEFAULT_REGION") or environ.get("AWS_REGION") or "").strip()
    if not region:
        region = DEFAULT_REGION
    elif any(char.isspace() for char in region):
        raise StorageError(
            f"AWS_DEFAULT_REGION {region!r} contains whitespace; set it to a region name such as "
            f"{DEFAULT_REGION} (MinIO uses {DEFAULT_REGION} unless MINIO_REGION says otherwise)"
        )

    return S3Settings(endpoint_url, endpoint_variable, region, parse_max_attempts(environ))


def parse_endpoint(value: str, variable: str) -> str:
    """Return the endpoint URL without a trailing slash, or raise StorageError if it is unusable."""
    if "://" not in value:
        raise StorageError(
            f"{variable} {value!r} has no scheme; set it to a full URL such as http://{value} "
            f"(plain HTTP, typical for a local MinIO) or https://{value}"
        )
    try:
        parts = urlsplit(value)
    except ValueError as error:
        raise StorageError(
            f"{variable} {value!r} is not a valid URL ({error}); set it to http://HOST:PORT"
        ) from None
    if parts.username is not None or parts.password is not None:
        # The value itself is never echoed, because it contains a secret.
        raise StorageError(
            f"{variable} contains credentials before the host name; remove them from the URL "
            "and set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead"
        )
    if parts.scheme not in ("http", "https"):
        raise StorageError(
            f"{variable} {value!r} has the scheme {parts.scheme!r}; use http:// or https://"
        )
    if not parts.hostname:
        raise StorageError(f"{variable} {value!r} has no host name; set it to http://HOST:PORT")
    try:
        parts.port  # noqa: B018 - urlsplit validates the port only when it is read
    except ValueError:
        raise StorageError(
            f"{variable} {value!r} has an invalid port; use a number from 1 to 65535"
        ) from None
    if parts.query or parts.fragment:
        raise StorageError(
            f"{variable} {value!r} has a query or fragment; set only scheme, host, port and path"
        )
    return value.rstrip("/")


def parse_max_attempts(environ: Mapping[str, str]) -> int:
    text = environ.get(MAX_ATTEMPTS_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MAX_ATTEMPTS
    if not text.isdigit() or not 1 <= int(text) <= MAX_ATTEMPTS_LIMIT:
        raise ConfigError(
            f"{MAX_ATTEMPTS_VARIABLE}: {text!r} is not an integer from 1 to {MAX_ATTEMPTS_LIMIT}; "
            f"set the number of attempts per S3 request (default {DEFAULT_MAX_ATTEMPTS})"
        )
    return int(text)


def client_config(settings: S3Settings):
    """Return the botocore Config that every S3-compatible server accepts.

    - Path-style addressing on a custom endpoint, because MinIO and most
      self-hosted servers have no wildcard DNS for bucket subdomains.
    - Request checksums only where an operation requires one: botocore 1.36
      and later otherwise add `x-amz-checksum-crc32` and aws-chunked trailers,
      which many third-party servers reject. The store sends Content-MD5
      itself, which every S3 implementation verifies.
    - An explicit region, since SigV4 signs it.
    - No botocore retries: the store retries itself, to log every retry.
    """
    from botocore.config import Config

    import cubicfit

    return Config(
        region_name=settings.region,
        signature_version="s3v4",
        s3={"addressing_style": "path" if settings.endpoint_url else "auto"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        user_agent_extra=f"cubicfit/{cubicfit.__version__}",
    )
