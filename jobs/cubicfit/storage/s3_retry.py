"""Bounded retries of S3 requests, with exponential backoff and one log line per retry.

Transient failures are throttling and server errors (HTTP 429, 500, 502, 503,
504 and their S3 error codes such as SlowDown), a conditional write that
collided with another one (409 ConditionalRequestConflict), and connection
failures: refused, reset, closed early or timed out. Everything else, such as
access denied or a missing bucket, fails at once.
"""

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

BASE_DELAY = 0.25  # seconds before the first retry; doubled for each later one
MAX_DELAY = 8.0  # seconds; also caps a server's Retry-After

TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
TRANSIENT_CODES = frozenset({
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "RequestTimeout",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "TooManyRequests",
    "RequestLimitExceeded",
    "ConditionalRequestConflict",
    "OperationAborted",
    "XMinioServerNotInitialized",
})


class RequestFailed(Exception):
    """Final failure of an S3 request: a permanent error, or a transient error on every attempt."""

    def __init__(self, operation: str, target: str, cause: Exception, attempts: int,
                 transient: bool):
        super().__init__(f"{operation} {target}: {cause}")
        self.operation = operation
        self.target = target
        self.cause = cause
        self.attempts = attempts
        self.transient = transient


def http_status(error: Exception) -> int | None:
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return None
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def error_code(error: Exception) -> str:
    """Return the S3 error code, or the HTTP status as text for bodiless (HEAD) responses."""
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def transient_reason(error: Exception) -> str | None:
    """Return a short description when `error` is worth retrying, else None."""
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        HTTPClientError,
        IncompleteReadError,
        SSLError,
    )

    if isinstance(error, ClientError):
        status = http_status(error)
        code = error_code(error)
        if status not in TRANSIENT_STATUS and code not in TRANSIENT_CODES:
            return None
        if code and code != str(status):
            return f"HTTP {status} {code}"
        return f"HTTP {status}"
    if isinstance(error, SSLError):
        return None  # a certificate problem does not go away by retrying
    if isinstance(error, ConnectionError | HTTPClientError | IncompleteReadError):
        return f"{type(error).__name__}: {error}"
    return None


def retry_after_seconds(error: Exception) -> float | None:
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return None
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    try:
        return float(headers["retry-after"])
    except (KeyError, TypeError, ValueError):
        return None


class Retrier:
    """Retry policy that runs a request up to `max_attempts` times.

    `redact` removes secrets from the log lines.
    """

    def __init__(self, max_attempts: int, redact: Callable[[str], str],
                 sleep: Callable[[float], None] = time.sleep):
        self.max_attempts = max_attempts
        self.redact = redact
        self.sleep = sleep

    def delay_before(self, retry_number: int, error: Exception) -> float:
        """Return the pause before retry `retry_number` (1 for the first retry), with jitter."""
        delay = min(MAX_DELAY, BASE_DELAY * 2 ** (retry_number - 1))
        delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography
        requested = retry_after_seconds(error)
        if requested is not None:
            delay = max(delay, min(requested, MAX_DELAY))
        return delay

    def call(self, operation: str, target: str, request: Callable[[], T]) -> T:
        """Return `request()`, retrying transient failures, or raise RequestFailed."""
        from botocore.exceptions import BotoCoreError, ClientError

        attempt = 1
        while True:
            try:
                return request()
            except (BotoCoreError, ClientError) as error:
                reason = transient_reason(error)
                if reason is None or attempt >= self.max_attempts:
                    raise RequestFailed(operation, target, error, attempt,
                                        transient=reason is not None) from error
                delay = self.delay_before(attempt, error)
                log.warning("S3 %s %s failed (%s); retry %d of %d in %.2fs", operation, target,
                            self.redact(reason), attempt, self.max_attempts - 1, delay)
                self.sleep(delay)
                attempt += 1
