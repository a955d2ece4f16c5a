"""Results in an S3-compatible bucket (MinIO, AWS S3 and others) through boto3.

Atomicity comes from S3 itself: a PUT or a completed multipart upload makes
the whole object visible at once, so readers see the old object or the new
one. A multipart upload that fails is aborted. `create_bytes` is a
conditional PUT with `If-None-Match: *`, which the server rejects with 412
when the key exists, so two writers cannot both create it.

boto3 is imported only when an S3 store is opened, because local runs do not
need it.
"""

import base64
import dataclasses
import hashlib
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from typing import TypeVar

from cubicfit.errors import StorageError
from cubicfit.storage.base import ResultStore
from cubicfit.storage.location import parse_s3_url
from cubicfit.storage.s3_messages import (
    StoreContext,
    describe_credential_source,
    explain_failure,
    missing_credentials_message,
)
from cubicfit.storage.s3_retry import RequestFailed, Retrier, error_code, http_status
from cubicfit.storage.s3_settings import S3Settings, client_config, settings_from_env

log = logging.getLogger(__name__)

T = TypeVar("T")

# Objects up to this size go up in one PUT, larger ones in parts. S3 requires
# parts of at least 5 MiB except the last, and allows at most 10000 parts.
MULTIPART_THRESHOLD = 32 * 1024 * 1024
PART_SIZE = 16 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10_000

# Secrets shorter than this are not masked in messages, because masking them
# would garble every word that contains the same letters.
MIN_REDACTED_LENGTH = 4

# Name prefix of the probe object that check() writes and deletes again.
WRITE_CHECK_PREFIX = ".write-check-"


class S3Store(ResultStore):
    def __init__(self, bucket: str, prefix: str, settings: S3Settings, *,
                 environ: Mapping[str, str] | None = None,
                 multipart_threshold: int = MULTIPART_THRESHOLD, part_size: int = PART_SIZE):
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size {part_size} is below the S3 minimum of {MIN_PART_SIZE}")
        self.bucket = bucket
        self.prefix = prefix
        self.settings = settings
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.list_page_size = 1000  # MaxKeys of ListObjectsV2, at most 1000 on S3
        # False once the server turned out to lack conditional writes (If-None-Match).
        self.conditional_writes = True

        self._client, credentials = _make_client(settings, os.environ if environ is None
                                                 else environ)
        self._credentials_missing = credentials is None
        self._secrets: list[str] = []
        self._masks: dict[str, str] = {}
        key_hint = "(none)"
        source = "no source"
        if credentials is not None:
            key_hint = _key_hint(credentials.access_key)
            source = describe_credential_source(credentials.method)
            self._secrets = [secret for secret in (credentials.secret_key, credentials.token)
                             if secret and len(secret) >= MIN_REDACTED_LENGTH]
            if len(credentials.access_key) >= MIN_REDACTED_LENGTH:
                self._masks[credentials.access_key] = key_hint
        self._context = StoreContext(settings, bucket, prefix, key_hint, source)
        self._retrier = Retrier(settings.max_attempts, self.redact)

    @classmethod
    def from_url(cls, url: str, environ: Mapping[str, str] | None = None) -> "S3Store":
        """Open `s3://bucket/prefix` with the settings of `environ` (default: os.environ)."""
        environ = os.environ if environ is None else environ
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, settings_from_env(environ), environ=environ)

    # Keys and messages

    def _full_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def describe(self, key: str = "") -> str:
        path = "/".join(part for part in (self.prefix, key) if part)
        return f"s3://{self.bucket}/{path}" if path else f"s3://{self.bucket}"

    def redact(self, text: str) -> str:
        """Replace secret keys and tokens by '***' and access key IDs by their last characters."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        for access_key, hint in self._masks.items():
            text = text.replace(access_key, hint)
        return text

    def _request(self, operation: str, key: str | None, request: Callable[[], T]) -> T:
        """Run one S3 request with retries, and raise StorageError when it fails for good."""
        target = self.describe(key) if key is not None else f"s3://{self.bucket}"
        try:
            return self._retrier.call(operation, target, request)
        except RequestFailed as failure:
            raise StorageError(self.redact(explain_failure(failure, self._context))) from None

    # ResultStore

    def check(self, create: bool = False, read_only: bool = False) -> None:
        """Verify endpoint, credentials and bucket, and that listing (and writing) works.

        The write check creates a small probe object under the prefix, twice,
        to learn whether the server enforces If-None-Match, and deletes it.
        With `read_only` a missing bucket is an error too, and `create` is ignored.
        """
        if self._credentials_missing:
            raise StorageError(missing_credentials_message())
        log.info("S3 output %s at %s (region %s, %s addressing)", self.describe(),
                 self.settings.endpoint_label, self.settings.region,
                 "path-style" if self.settings.endpoint_url else "automatic")

        bucket_exists = self._request("HeadBucket", None, self._head_bucket)
        if not bucket_exists:
            if read_only or not create:
                raise StorageError(
                    f"bucket {self.bucket!r} does not exist at {self.settings.endpoint_label}; "
                    "create it, or run with --create-bucket"
                )
            self._create_bucket()

        # Runs and sweeps list their keys, so s3:ListBucket is needed in either mode.
        self._request("ListObjectsV2", "", lambda: self._client.list_objects_v2(
            Bucket=self.bucket, Prefix=self._full_key(""), MaxKeys=1))
        if read_only:
            return
        # A server that accepts the second create of the probe ignores If-None-Match.
        # The two contents differ, so that a retried request cannot mistake the
        # first probe for its own earlier success.
        probe = f"{WRITE_CHECK_PREFIX}{uuid.uuid4().hex}"
        self.create_bytes(probe, b"", "text/plain")
        if self.conditional_writes and self.create_bytes(probe, b"again", "text/plain"):
            self._disable_conditional_writes("it accepted a second create of the same key")
        self.delete(probe)

    def _head_bucket(self) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
            return True
        except ClientError as error:
            status = http_status(error)
            if status == 404:
                return False
            if status in (400, 403):
                # HEAD responses have no body, so the status alone cannot tell a
                # wrong key from a wrong secret or a missing permission. A LIST
                # response carries the error code, so its ClientError replaces this one.
                self._client.list_objects_v2(Bucket=self.bucket, Prefix=self._full_key(""),
                                             MaxKeys=1)
            raise

    def _create_bucket(self) -> None:
        from botocore.exceptions import ClientError

        def create() -> None:
            params = {"Bucket": self.bucket}
            if self.settings.region != "us-east-1":
                # us-east-1 is the one region that rejects an explicit location constraint.
                params["CreateBucketConfiguration"] = {"LocationConstraint": self.settings.region}
            try:
                self._client.create_bucket(**params)
            except ClientError as error:
                if error_code(error) != "BucketAlreadyOwnedByYou":
                    raise

        self._request("CreateBucket", None, create)
        log.info("created bucket %s at %s", self.bucket, self.settings.endpoint_label)

    def read_bytes(self, key: str) -> bytes | None:
        return self._request("GetObject", key, lambda: self._get(key))

    def _get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._full_key(key))
        except ClientError as error:
            if error_code(error) == "NoSuchKey":
                return None
            raise
        with response["Body"] as body:
            return body.read()

    def write_bytes(self, key: str, data: bytes, content_type: str) -> None:
        self._put(key, data, content_type, only_if_absent=False)

    def create_bytes(self, key: str, data: bytes, content_type: str) -> bool:
        return self._put(key, data, content_type, only_if_absent=True)

    def delete(self, key: str) -> None:
        from botocore.exceptions import ClientError

        def delete() -> None:
            try:
                self._client.delete_object(Bucket=self.bucket, Key=self._full_key(key))
            except ClientError as error:
                if error_code(error) != "NoSuchKey":
                    raise

        self._request("DeleteObject", key, delete)

    def list_keys(self, prefix: str) -> list[str]:
        # A prefix names a folder, as in the local store: `runs/ab` does not match `runs/abc/x`.
        folder = prefix.strip("/")
        list_prefix = self._full_key(folder + "/" if folder else "")
        root_length = len(self.prefix) + 1 if self.prefix else 0
        keys = []
        token = None
        while True:
            params = {"Bucket": self.bucket, "Prefix": list_prefix,
                      "MaxKeys": self.list_page_size}
            if token:
                params["ContinuationToken"] = token
            page = self._request("ListObjectsV2", folder,
                                 lambda params=params: self._client.list_objects_v2(**params))
            for entry in page.get("Contents", []):
                key = entry["Key"][root_length:]
                name = key.rsplit("/", 1)[-1]
                # Skip folder markers made by consoles, and the probe of check().
                if key and not key.endswith("/") and not name.startswith(WRITE_CHECK_PREFIX):
                    keys.append(key)
            if not page.get("IsTruncated"):
                break
            token = page["NextContinuationToken"]
        return sorted(keys)

    # Uploads

    def _put(self, key: str, data: bytes, content_type: str, *, only_if_absent: bool) -> bool:
        """Upload `data`, and return False when `only_if_absent` and the key already existed."""
        if only_if_absent and not self.conditional_writes:
            return self._create_unconditionally(key, data, content_type)
        if len(data) > self.multipart_threshold:
            return self._put_multipart(key, data, content_type, only_if_absent=only_if_absent)

        from botocore.exceptions import ClientError

        attempts = 0

        def put() -> bool | None:
            nonlocal attempts
            attempts += 1
            params = {"Bucket": self.bucket, "Key": self._full_key(key), "Body": data,
                      "ContentType": content_type, "ContentMD5": _content_md5(data)}
            if only_if_absent:
                params["IfNoneMatch"] = "*"
            try:
                self._client.put_object(**params)
                return True
            except ClientError as error:
                if only_if_absent and http_status(error) == 412:
                    return False
                if only_if_absent and _not_implemented(error):
                    return None
                raise

        created = self._request("PutObject", key, put)
        if created is None:
            self._disable_conditional_writes("it responded with 501 Not Implemented")
            return self._create_unconditionally(key, data, content_type)
        if not created and attempts > 1:
            return self._written_by_earlier_attempt(key, data)
        return created

    def _disable_conditional_writes(self, reason: str) -> None:
        self.conditional_writes = False
        log.warning("the S3 endpoint %s does not support conditional writes (If-None-Match) "
                    "on PutObject: %s. Two processes that run the same configuration at once "
                    "may now both record a result; upgrade the server to one with conditional "
                    "writes to rule that out", self.settings.endpoint_label, reason)

    def _create_unconditionally(self, key: str, data: bytes, content_type: str) -> bool:
        # NOTE: not atomic. Another writer can create the key between the read and the PUT.
        if self.read_bytes(key) is not None:
            return False
        self._put(key, data, content_type, only_if_absent=False)
        return True

    def _written_by_earlier_attempt(self, key: str, data: bytes) -> bool:
        """Tell whether a retried conditional write met its own earlier, lost success.

        When a response is lost after the server stored the object, the retry
        gets 412. Equal content means the earlier attempt of this process
        created the object.
        """
        if self.read_bytes(key) != data:
            return False
        log.info("%s: an earlier attempt had stored it before its response was lost",
                 self.describe(key))
        return True

    def _put_multipart(self, key: str, data: bytes, content_type: str, *,
                       only_if_absent: bool) -> bool:
        from botocore.exceptions import ClientError

        full_key = self._full_key(key)
        # Grow the part size for very large objects so that the part count stays within the limit.
        part_size = max(self.part_size, -(-len(data) // MAX_PARTS))
        upload_id = self._request(
            "CreateMultipartUpload", key,
            lambda: self._client.create_multipart_upload(
                Bucket=self.bucket, Key=full_key, ContentType=content_type)["UploadId"])
        completed = False
        try:
            parts = []
            for number, start in enumerate(range(0, len(data), part_size), start=1):
                chunk = data[start:start + part_size]

                def upload(number=number, chunk=chunk) -> str:
                    return self._client.upload_part(
                        Bucket=self.bucket, Key=full_key, UploadId=upload_id, PartNumber=number,
                        Body=chunk, ContentMD5=_content_md5(chunk))["ETag"]

                parts.append({"PartNumber": number,
                              "ETag": self._request(f"UploadPart {number}", key, upload)})

            attempts = 0

            def complete() -> bool:
                nonlocal attempts
                attempts += 1
                params = {"Bucket": self.bucket, "Key": full_key, "UploadId": upload_id,
                          "MultipartUpload": {"Parts": parts}}
                if only_if_absent:
                    params["IfNoneMatch"] = "*"
                try:
                    self._client.complete_multipart_upload(**params)
                    return True
                except ClientError as error:
                    if only_if_absent and http_status(error) == 412:
                        return False
                    # NoSuchUpload on a retry means that the first attempt completed it.
                    if attempts > 1 and error_code(error) == "NoSuchUpload":
                        return False
                    raise

            created = self._request("CompleteMultipartUpload", key, complete)
            completed = created
            if not created and attempts > 1:
                completed = self._written_by_earlier_attempt(key, data)
                if not completed and not only_if_absent:
                    raise StorageError(
                        f"multipart upload of {self.describe(key)} failed: after a retry the "
                        "server no longer knew the upload, and the stored object is not ours; "
                        "run the job again"
                    )
            return completed
        finally:
            if not completed:
                self._abort_multipart(key, upload_id)

    def _abort_multipart(self, key: str, upload_id: str) -> None:
        """Abort an unfinished upload so its parts do not stay stored; log when that fails."""
        from botocore.exceptions import ClientError

        def abort() -> None:
            try:
                self._client.abort_multipart_upload(Bucket=self.bucket,
                                                    Key=self._full_key(key), UploadId=upload_id)
            except ClientError as error:
                if error_code(error) != "NoSuchUpload":
                    raise

        try:
            self._request("AbortMultipartUpload", key, abort)
        except StorageError as error:
            log.warning("could not abort the multipart upload %s of %s (%s); its parts stay "
                        "stored until a lifecycle rule (AbortIncompleteMultipartUpload) or "
                        "`aws s3api abort-multipart-upload` removes them", upload_id,
                        self.describe(key), error)


def _make_client(settings: S3Settings, environ: Mapping[str, str]):
    """Return the boto3 S3 client and the resolved credentials (None when there are none).

    Keys in `environ` are passed to boto3 explicitly. Without them, boto3
    searches its standard chain (profile files, web identity, instance role).
    """
    import boto3
    from botocore.exceptions import BotoCoreError

    access_key = environ.get("AWS_ACCESS_KEY_ID") or None
    secret_key = environ.get("AWS_SECRET_ACCESS_KEY") or None
    if (access_key is None) != (secret_key is None):
        present, missing = (("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if access_key
                            else ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"))
        raise StorageError(f"{present} is set but {missing} is not; set both, or neither to use "
                           "an AWS profile or the pod's identity")
    if access_key is not None:
        options = {"aws_access_key_id": access_key, "aws_secret_access_key": secret_key,
                   "aws_session_token": environ.get("AWS_SESSION_TOKEN") or None}
    else:
        options = {"profile_name": environ.get("AWS_PROFILE") or None}
    try:
        session = boto3.session.Session(region_name=settings.region, **options)
        credentials = session.get_credentials()
        frozen = credentials.get_frozen_credentials() if credentials is not None else None
    except BotoCoreError as error:
        # For example AWS_PROFILE names a profile that does not exist.
        raise StorageError(
            f"cannot load S3 credentials ({error}); set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE to an existing profile"
        ) from None
    client = session.client("s3", endpoint_url=settings.endpoint_url,
                            config=client_config(settings))
    if frozen is None:
        return client, None
    method = "env" if access_key else getattr(credentials, "method", None)
    return client, _Credentials(frozen.access_key, frozen.secret_key, frozen.token, method)


@dataclasses.dataclass(frozen=True)
class _Credentials:
    access_key: str
    secret_key: str
    token: str | None
    method: str | None  # botocore's name of the credential source, such as 'env'


def _not_implemented(error) -> bool:
    return http_status(error) == 501 or error_code(error) == "NotImplemented"


def _key_hint(access_key: str | None) -> str:
    if not access_key:
        return "(none)"
    if len(access_key) <= 4:
        return "'***'"
    return f"'...{access_key[-4:]}'"


def _content_md5(data: bytes) -> str:
    # MD5 here is the integrity check that S3 defines for uploads, not a security measure.
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


__all__ = ["S3Store"]
