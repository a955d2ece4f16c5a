"""Error messages for failed S3 requests: what went wrong, and which setting fixes it.

No message contains a secret key or session token. Access key IDs appear only
as their last four characters, as the AWS console shows them.
"""

import dataclasses

from cubicfit.storage.s3_retry import RequestFailed, error_code, http_status
from cubicfit.storage.s3_settings import MAX_ATTEMPTS_VARIABLE, S3Settings

# Error codes for a request signed for the wrong region, on AWS and on MinIO.
_REGION_CODES = frozenset({
    "AuthorizationHeaderMalformed",
    "PermanentRedirect",
    "IllegalLocationConstraintException",
    "InvalidRegion",
    "301",
})
_TOKEN_CODES = frozenset({"InvalidToken", "ExpiredToken", "TokenRefreshRequired"})


@dataclasses.dataclass(frozen=True)
class StoreContext:
    settings: S3Settings
    bucket: str
    prefix: str
    key_hint: str  # the access key ID's last four characters, for example '...WXYZ'
    credential_source: str  # for example 'AWS_ACCESS_KEY_ID'


def describe_credential_source(method: str | None) -> str:
    """Name where botocore found the credentials, from its `Credentials.method`."""
    if method == "env":
        return "AWS_ACCESS_KEY_ID"
    if method in ("shared-credentials-file", "config-file"):
        return "the AWS profile files"
    if method == "assume-role-with-web-identity":
        return "the web identity token (pod service account)"
    if method in ("iam-role", "container-role"):
        return "the instance or container role"
    return method or "an unknown source"


def explain_failure(failure: RequestFailed, context: StoreContext) -> str:
    """Return the message for a request that failed for good."""
    from botocore.exceptions import (
        ClientError,
        NoCredentialsError,
        PartialCredentialsError,
        SSLError,
    )

    error = failure.cause
    settings = context.settings
    request = f"{failure.operation} {failure.target}"

    if isinstance(error, NoCredentialsError):
        return missing_credentials_message()
    if isinstance(error, PartialCredentialsError):
        return (f"incomplete S3 credentials ({error}); set both AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY")
    if isinstance(error, SSLError):
        return (f"TLS connection to the S3 endpoint {settings.endpoint_label} failed ({error}); "
                "if the server uses a private certificate authority, set AWS_CA_BUNDLE to its "
                "certificate file")
    if not isinstance(error, ClientError):
        return _unreachable_message(failure, context)
    if failure.transient:
        return (f"S3 {request} failed on all {failure.attempts} attempts, last with HTTP "
                f"{http_status(error)} {_code_and_message(error)}; the endpoint "
                f"{settings.endpoint_label} is overloaded or failing. Retry later, or raise "
                f"{MAX_ATTEMPTS_VARIABLE} (now {settings.max_attempts})")
    return _client_error_message(failure, context)


def missing_credentials_message() -> str:
    return ("no S3 credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE, or give the pod or instance an IAM identity)")


def _unreachable_message(failure: RequestFailed, context: StoreContext) -> str:
    settings = context.settings
    if settings.endpoint_variable:
        fix = f"check {settings.endpoint_variable} and that the server is running and reachable"
    else:
        fix = ("check the network route to AWS S3, or set S3_ENDPOINT_URL for MinIO or another "
               "S3-compatible server")
    return (f"cannot reach the S3 endpoint {settings.endpoint_label}: {failure.operation} "
            f"{failure.target} failed on all {failure.attempts} attempts ({failure.cause}); "
            f"{fix}")


def _client_error_message(failure: RequestFailed, context: StoreContext) -> str:
    error = failure.cause
    code = error_code(error)
    status = http_status(error)
    settings = context.settings
    endpoint = settings.endpoint_label
    request = f"{failure.operation} {failure.target}"

    if code == "NoSuchBucket" or (code == "404" and failure.operation == "HeadBucket"):
        return (f"bucket {context.bucket!r} does not exist at {endpoint}; create it, or run "
                "with --create-bucket")
    if code == "InvalidAccessKeyId":
        return (f"{endpoint} does not know the access key ID {context.key_hint} (from "
                f"{context.credential_source}); set AWS_ACCESS_KEY_ID to a key that exists on "
                "this server")
    if code == "SignatureDoesNotMatch":
        return (f"{endpoint} rejected the request signature for access key "
                f"{context.key_hint}: the secret key does not belong to it; set "
                "AWS_SECRET_ACCESS_KEY to the secret of AWS_ACCESS_KEY_ID (a proxy that rewrites "
                "the Host header causes the same error)")
    if code in _TOKEN_CODES:
        return (f"{endpoint} rejected the session token ({code}); renew the credentials, or "
                "unset AWS_SESSION_TOKEN when you use static keys")
    if code == "RequestTimeTooSkewed":
        return (f"the clock of this machine differs from the clock of {endpoint} by more than 15 "
                "minutes; synchronise it (NTP)")
    if code in _REGION_CODES:
        actual = _bucket_region(error)
        found = f"is in region {actual}" if actual else "is in another region"
        fix = f"AWS_DEFAULT_REGION={actual}" if actual else "AWS_DEFAULT_REGION to its region"
        return (f"bucket {context.bucket!r} {found}, but requests are signed for "
                f"{settings.region}; set {fix}")
    if code in ("AccessDenied", "AllAccessDisabled", "403") or status == 403:
        resource = f"{context.prefix}/*" if context.prefix else "*"
        return (f"access denied: {request} with access key {context.key_hint} from "
                f"{context.credential_source}; grant it s3:ListBucket on bucket "
                f"{context.bucket!r} and s3:GetObject, s3:PutObject and s3:DeleteObject on "
                f"{resource}")
    if code == "BucketAlreadyExists":
        return (f"bucket name {context.bucket!r} is taken by another account; choose another "
                "bucket in the output setting")
    return f"S3 {request} failed with HTTP {status} {_code_and_message(error)}"


def _code_and_message(error) -> str:
    detail = error.response.get("Error", {})
    code = str(detail.get("Code", ""))
    message = str(detail.get("Message", "")).strip()
    if message:
        return f"{code}: {message}"
    return code


def _bucket_region(error) -> str | None:
    headers = error.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return headers.get("x-amz-bucket-region") or error.response.get("Error", {}).get("Region")
