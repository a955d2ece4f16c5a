"""Parse and validate `s3://bucket/prefix` output locations."""

import re

from cubicfit.errors import ConfigError

# S3 bucket naming rules: 3-63 characters, lowercase letters, digits, dots and
# hyphens, starting and ending with a letter or digit, not an IP address.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_ADDRESS = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


def parse_s3_url(url: str, field: str = "output") -> tuple[str, str]:
    """Return (bucket, prefix) with no leading or trailing slash on the prefix."""
    rest = url[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket or _IP_ADDRESS.match(bucket):
        raise ConfigError(
            f"{field}: invalid bucket name {bucket!r} in {url!r}; S3 bucket names have 3 to 63 "
            "lowercase letters, digits, dots or hyphens and start and end with a letter or digit"
        )
    prefix = prefix.strip("/")
    segments = prefix.split("/") if prefix else []
    for segment in segments:
        if segment in ("", ".", ".."):
            raise ConfigError(
                f"{field}: invalid key prefix {prefix!r} in {url!r}; empty, '.' and '..' path "
                "segments are not allowed (they would write outside the intended prefix)"
            )
    if any(ord(char) < 32 or char in "\\\x7f" for char in prefix):
        raise ConfigError(
            f"{field}: key prefix {prefix!r} contains a control character or backslash; remove it"
        )
    if len(prefix.encode()) > 512:
        raise ConfigError(f"{field}: key prefix is longer than 512 bytes; shorten it")
    return bucket, prefix
