"""Delivery to S3 and S3-compatible stores (MinIO, Ceph, ...) through boto3 (SPEC 5 `output.s3`).

An object becomes visible only once complete: small results are one PUT, large ones
a multipart upload that is completed at the end or aborted on failure. Names are
claimed with conditional writes (`If-None-Match: *`), so two workers never overwrite
each other's result. Credentials come only from the standard AWS chain.
Object metadata is shortened to fit S3's 2 KB (long non-ASCII folder paths grow by a third
once encoded). A refusal that retrying cannot cure (a 4xx such as MetadataTooLarge or
InvalidArgument) fails the job with S3's reason; the store being down, throttled, denied
or missing its bucket makes the job wait.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Iterator, Mapping
from pathlib import PurePosixPath
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from hotfolder.config import S3Config
from hotfolder.errors import ConfigError, InputError, Unavailable
from hotfolder.names import shown
from hotfolder.sinks import KeyedSink, Sink, key_parts

MIB = 1024 * 1024
MAX_KEY_BYTES = 1024
PROBE_NAME = ".hotfolder-check"
DIGEST = "content-sha256"  # metadata: the object's own SHA-256, for idempotent delivery
THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
             "TooManyRequests", "RequestTimeout", "ServiceUnavailable", "InternalError"}
TAKEN = {"PreconditionFailed", "ConditionalRequestConflict"}
DENIED = {"AccessDenied", "AllAccessDisabled", "AccountProblem"}
BAD_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                   "InvalidToken", "TokenRefreshRequired"}
# 4xx codes that an operator, the store or time can cure: the job waits for them.
CURABLE = THROTTLED | TAKEN | DENIED | BAD_CREDENTIALS | {
    "NoSuchBucket", "NoSuchUpload", "RequestTimeTooSkewed", "AuthorizationHeaderMalformed",
    "PermanentRedirect", "TemporaryRedirect", "OperationAborted", "InvalidBucketState"}
CURABLE_STATUS = {403, 404, 408, 409, 429}
METADATA_BYTES = 2000  # S3 takes 2 KB of user metadata (keys and values); a margin below it
TRUNCATED = "..."


def prefix_parts(prefix: str) -> list[str]:
    """The configured prefix as components (surrounding slashes allowed); ConfigError if unsafe."""
    stripped = prefix.strip("/")
    if not stripped:
        return []
    try:
        return key_parts(stripped)
    except InputError as exc:
        raise ConfigError(
            f"output.s3.prefix {stripped!r} is not a plain path such as results/engraving",
            detail=exc.message,
        ) from None


def header_value(value: str, limit: int) -> str:
    """A metadata value of at most `limit` bytes: ASCII as is, else RFC 2047; cut with `...`."""
    if all(32 <= ord(c) < 127 for c in value):
        return value if len(value) <= limit else value[: max(limit - len(TRUNCATED), 0)] + TRUNCATED
    raw = value.encode()
    room = max((limit - len("=?UTF-8?B??=")) // 4 * 3, 0)  # base64: 4 characters per 3 bytes
    if len(raw) > room:
        raw = raw[: max(room - len(TRUNCATED), 0)].decode(errors="ignore").encode() + b"..."
    return f"=?UTF-8?B?{base64.b64encode(raw).decode()}?="


def fit_metadata(metadata: Mapping[str, str], budget: int = METADATA_BYTES) -> dict[str, str]:
    """Metadata as S3 takes it: keys and values within `budget` bytes, the longest cut."""
    left = budget - sum(len(key.encode()) for key in metadata)
    fitted = {}
    by_length = sorted(metadata.items(), key=lambda item: len(header_value(item[1], budget)))
    for index, (key, value) in enumerate(by_length):
        fitted[key.lower()] = header_value(value, max(left // (len(by_length) - index), 0))
        left -= len(fitted[key.lower()])
    return {key.lower(): fitted[key.lower()] for key in metadata}


def curable(exc: ClientError) -> bool:
    """False for a 4xx that no retry can cure (MetadataTooLarge, InvalidArgument, ...)."""
    code, status = _status(exc)
    if not 400 <= status < 500:
        return True
    return code in CURABLE or code.startswith("KMS") or status in CURABLE_STATUS


def _status(exc: ClientError) -> tuple[str, int]:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def explain(exc: Exception, cfg: S3Config) -> str:
    """One sentence for an operator on why the bucket can't be used."""
    bucket = cfg.bucket
    where = cfg.endpoint_url or "AWS"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ("no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE or an instance role")
    if isinstance(exc, ClientError):
        code, status = _status(exc)
        if code in ("NoSuchBucket", "404") or (status == 404 and code != "NoSuchKey"):
            return f"S3 bucket {bucket!r} does not exist at {where}"
        if code in BAD_CREDENTIALS:
            return f"S3 at {where} rejected the AWS credentials ({code})"
        if code in DENIED or status == 403:
            return (f"access denied to S3 bucket {bucket!r}: check the bucket policy and the "
                    "permissions of the AWS credentials")
        if code.startswith("KMS") or "KMS" in str(exc):
            return f"S3 could not encrypt with KMS key {cfg.kms_key_id!r}: {code}"
        if code in THROTTLED or status >= 500:
            return f"S3 at {where} is overloaded or failing ({code or status})"
        return f"S3 refused the request on bucket {bucket!r}: {code or status}"
    if isinstance(exc, BotoConnectionError):
        return f"S3 endpoint {where} cannot be reached"
    if isinstance(exc, HTTPClientError):
        return f"S3 endpoint {where} stopped answering ({type(exc).__name__})"
    return f"S3 at {where} did not answer properly ({type(exc).__name__})"


def make_client(cfg: S3Config) -> Any:
    """A boto3 S3 client for the configuration; credentials from the standard AWS chain."""
    options: dict[str, Any] = {
        "connect_timeout": 5,
        "read_timeout": 60,
        "retries": {"max_attempts": 2, "mode": "standard"},
    }
    if cfg.endpoint_url:
        options["s3"] = {"addressing_style": "path"}
    return boto3.session.Session().client(
        "s3", endpoint_url=cfg.endpoint_url, region_name=cfg.region,
        config=BotoConfig(**options),
    )


class S3Sink(KeyedSink):
    """Stores results as objects under `bucket/prefix/` (Sink protocol, shared conflict rules)."""

    name = "s3"

    def __init__(self, cfg: S3Config, client: Any = None) -> None:
        self.prefix = prefix_parts(cfg.prefix)
        self.cfg = cfg
        self.client = client if client is not None else make_client(cfg)
        self.part_size = max(int(cfg.multipart_threshold_mb * MIB), 5 * MIB)

    def object_key(self, key: PurePosixPath) -> str:
        """The object key of a result path: always inside the prefix."""
        full = "/".join([*self.prefix, *key_parts(key)])
        try:
            size = len(full.encode())
        except UnicodeEncodeError:  # bytes from the share that are not UTF-8
            raise InputError(f"the output name {shown(key)} is not valid UTF-8, which S3 keys"
                             " must be", stage="deliver") from None
        if size > MAX_KEY_BYTES:
            raise InputError(f"the output name {str(key)!r} is too long for an S3 key",
                             stage="deliver")
        return full

    def location(self, key: PurePosixPath) -> str:
        """`s3://bucket/prefix/A/photo.png`."""
        return f"s3://{self.cfg.bucket}/{self.object_key(key)}"

    @contextlib.contextmanager
    def _errors(self, key: PurePosixPath) -> Iterator[None]:
        """botocore's errors in plain words: Unavailable (the job waits), or InputError."""
        try:
            yield
        except ClientError as exc:
            if curable(exc):
                raise Unavailable(f"cannot store {self.object_key(key)} in S3:"
                                  f" {explain(exc, self.cfg)}", detail=str(exc)) from None
            code, status = _status(exc)
            message = exc.response.get("Error", {}).get("Message", "")
            raise InputError(
                f"S3 refused to store {self.object_key(key)}: {code or status}"
                + (f" ({message})" if message else "") + "; retrying would not change that",
                detail=str(exc), stage="deliver",
            ) from None
        except BotoCoreError as exc:
            raise Unavailable(
                f"cannot store {self.object_key(key)} in S3: {explain(exc, self.cfg)}",
                detail=str(exc),
            ) from None

    def _digest(self, key: PurePosixPath) -> str | None:
        with self._errors(key):
            try:
                head = self.client.head_object(Bucket=self.cfg.bucket, Key=self.object_key(key))
            except ClientError as exc:
                # 403 is what S3 answers for a missing key without s3:ListBucket; then the
                # conditional write of _create finds out whether the name is taken.
                if _status(exc)[1] in (403, 404):
                    return None
                raise
        return str(head.get("Metadata", {}).get(DIGEST, ""))

    def _create(self, key: PurePosixPath, data: bytes, media_type: str,
                metadata: Mapping[str, str]) -> bool:
        return self._put(key, data, media_type, metadata, exclusive=True)

    def _replace(self, key: PurePosixPath, data: bytes, media_type: str,
                 metadata: Mapping[str, str]) -> None:
        self._put(key, data, media_type, metadata, exclusive=False)

    def _put(self, key: PurePosixPath, data: bytes, media_type: str,
             metadata: Mapping[str, str], *, exclusive: bool) -> bool:
        """Write the object; False when `exclusive` and the name is taken (If-None-Match)."""
        target = self.object_key(key)
        extra = self._extra_args(media_type,
                                 {**metadata, DIGEST: hashlib.sha256(data).hexdigest()})
        condition = {"IfNoneMatch": "*"} if exclusive else {}
        with self._errors(key):
            try:
                if len(data) <= self.part_size:
                    self.client.put_object(
                        Bucket=self.cfg.bucket, Key=target, Body=data, **extra, **condition
                    )
                else:
                    self._multipart(target, data, extra, condition)
            except ClientError as exc:
                if exclusive and _status(exc)[0] in TAKEN:
                    return False
                raise
        return True

    def _extra_args(self, media_type: str, metadata: Mapping[str, str]) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "ContentType": media_type,
            "Metadata": fit_metadata(metadata),
        }
        if self.cfg.sse:
            extra["ServerSideEncryption"] = self.cfg.sse
        if self.cfg.sse == "aws:kms" and self.cfg.kms_key_id:
            extra["SSEKMSKeyId"] = self.cfg.kms_key_id
        return extra

    def _multipart(self, key: str, data: bytes, extra: dict[str, Any],
                   condition: dict[str, str]) -> None:
        """A multipart upload: invisible until completed, aborted when any step fails."""
        bucket = self.cfg.bucket
        upload_id = self.client.create_multipart_upload(Bucket=bucket, Key=key, **extra)[
            "UploadId"
        ]
        try:
            parts = []
            for number, start in enumerate(range(0, len(data), self.part_size), start=1):
                reply = self.client.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number,
                    Body=data[start : start + self.part_size],
                )
                parts.append({"ETag": reply["ETag"], "PartNumber": number})
            self.client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id,
                MultipartUpload={"Parts": parts}, **condition,
            )
        except BaseException:
            # When the store is unreachable the parts stay; a lifecycle rule removes them (README).
            with contextlib.suppress(BotoCoreError, ClientError):
                self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise

    def probe(self) -> None:
        """Check that the bucket exists and takes writes: put and remove an empty object."""
        probe = PurePosixPath(PROBE_NAME)
        self.client.head_bucket(Bucket=self.cfg.bucket)
        self.client.put_object(Bucket=self.cfg.bucket, Key=self.object_key(probe), Body=b"",
                               **self._extra_args("text/plain", {}))
        # Writing works; a policy that forbids deleting leaves the empty probe object.
        with contextlib.suppress(ClientError):
            self.client.delete_object(Bucket=self.cfg.bucket, Key=self.object_key(probe))


class S3WithLocalCopy:
    """An S3 sink that also keeps a copy in the outbox, under the name S3 gave (`keep_local`)."""

    name = "s3"

    def __init__(self, s3: S3Sink, outbox: Sink) -> None:
        self.s3 = s3
        self.outbox = outbox

    def deliver(self, key: PurePosixPath, data: bytes, *, media_type: str,
                metadata: Mapping[str, str], on_conflict: str) -> str | None:
        """Store in both; the outbox copy follows the object's name (photo-1.png after a rename)."""
        where = self.s3.deliver(key, data, media_type=media_type, metadata=metadata,
                                on_conflict=on_conflict)
        local = key.with_name(PurePosixPath(where).name) if where is not None else key
        self.outbox.deliver(local, data, media_type=media_type, metadata=metadata,
                            on_conflict=on_conflict)
        return where


def check_bucket(cfg: S3Config, client: Any = None) -> str | None:
    """None when the bucket can be written, else one line on what is wrong."""
    try:
        S3Sink(cfg, client).probe()
    except ConfigError as exc:
        return exc.message
    except (BotoCoreError, ClientError) as exc:
        return explain(exc, cfg)
    return None
