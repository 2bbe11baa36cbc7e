"""The S3 sink against a real moto server over HTTP: objects, metadata, encryption, failures."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from botocore.exceptions import EndpointConnectionError
from PIL import Image

from helpers import drop, image_bytes, wait_until
from hotfolder.cli import main
from hotfolder.config import OutputConfig, S3Config
from hotfolder.errors import ConfigError, InputError, Unavailable
from hotfolder.sinks import make_sink
from hotfolder.sinks.local import OutboxSink
from hotfolder.sinks.s3 import S3Sink, check_bucket
from moto_server import S3Endpoint
from service_helpers import Daemon, files_under, make_root, start

MIB = 1024 * 1024


def config(s3: S3Endpoint, bucket: str, **settings: Any) -> S3Config:
    return S3Config(bucket=bucket, endpoint_url=s3.url, region="us-east-1", **settings)


def deliver(sink: S3Sink, key: str, data: bytes, on_conflict: str = "rename",
            **metadata: str) -> str | None:
    return sink.deliver(PurePosixPath(key), data, media_type="image/png",
                        metadata=metadata, on_conflict=on_conflict)


def keys(s3: S3Endpoint, bucket: str) -> list[str]:
    listing = s3.client().list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def body(s3: S3Endpoint, bucket: str, key: str) -> bytes:
    return bytes(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())


def test_upload_under_prefix_with_type_metadata_and_encryption(s3: S3Endpoint) -> None:
    bucket = s3.bucket()
    sink = S3Sink(config(s3, bucket, prefix="/shop/results/", sse="AES256"))
    data = b"\x89PNG result"

    location = deliver(sink, "Engrave Wood/photo.png", data, recipe="Gravure bois été",
                       source="A/photo.jpg", sha256="ab" * 32)

    key = "shop/results/Engrave Wood/photo.png"
    assert location == f"s3://{bucket}/{key}"
    assert keys(s3, bucket) == [key]
    head = s3.client().head_object(Bucket=bucket, Key=key)
    assert body(s3, bucket, key) == data
    assert head["ContentType"] == "image/png"
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"]["content-sha256"] == hashlib.sha256(data).hexdigest()
    assert head["Metadata"]["sha256"] == "ab" * 32  # the input's, as the service passes it
    assert head["Metadata"]["source"] == "A/photo.jpg"
    assert head["Metadata"]["recipe"] == "=?UTF-8?B?R3JhdnVyZSBib2lzIMOpdMOp?="


def test_kms_encryption_names_the_key(s3: S3Endpoint) -> None:
    bucket = s3.bucket()
    sink = S3Sink(config(s3, bucket, sse="aws:kms", kms_key_id="alias/hotfolder"))

    deliver(sink, "photo.png", b"data")

    head = s3.client().head_object(Bucket=bucket, Key="photo.png")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == "alias/hotfolder"


def test_large_result_goes_up_in_parts(s3: S3Endpoint) -> None:
    bucket = s3.bucket()
    sink = S3Sink(config(s3, bucket, multipart_threshold_mb=5, sse="AES256"))
    data = os.urandom(11 * MIB)

    location = deliver(sink, "big/scan.tiff", data, recipe="archive")

    assert location == f"s3://{bucket}/big/scan.tiff"
    head = s3.client().head_object(Bucket=bucket, Key="big/scan.tiff")
    assert head["ETag"].strip('"').endswith("-3")  # three parts of 5, 5 and 1 MiB
    assert head["Metadata"] == {"recipe": "archive",
                                "content-sha256": hashlib.sha256(data).hexdigest()}
    assert head["ServerSideEncryption"] == "AES256"
    assert body(s3, bucket, "big/scan.tiff") == data
    assert "Uploads" not in s3.client().list_multipart_uploads(Bucket=bucket)


def test_connection_lost_mid_multipart_leaves_nothing_visible(s3: S3Endpoint) -> None:
    bucket = s3.bucket()
    sink = S3Sink(config(s3, bucket, multipart_threshold_mb=5))
    sent: list[int] = []

    def drop_second_part(params: dict[str, Any], **_: Any) -> None:
        sent.append(params["PartNumber"])
        if params["PartNumber"] == 2:
            raise EndpointConnectionError(endpoint_url=s3.url)

    sink.client.meta.events.register("provide-client-params.s3.UploadPart", drop_second_part)

    with pytest.raises(Unavailable, match="cannot be reached"):
        deliver(sink, "big.tiff", os.urandom(11 * MIB))

    assert sent == [1, 2]
    assert keys(s3, bucket) == []
    assert "Uploads" not in s3.client().list_multipart_uploads(Bucket=bucket)


def test_conflicts_rename_skip_overwrite_and_same_content(s3: S3Endpoint) -> None:
    bucket = s3.bucket()
    sink = S3Sink(config(s3, bucket))

    first = deliver(sink, "A/photo.png", b"one")
    again = deliver(sink, "A/photo.png", b"one")
    second = deliver(sink, "A/photo.png", b"two")
    skipped = deliver(sink, "A/photo.png", b"three", on_conflict="skip")
    skipped_same = deliver(sink, "A/photo.png", b"one", on_conflict="skip")

    assert first == again == skipped_same == f"s3://{bucket}/A/photo.png"
    assert second == f"s3://{bucket}/A/photo-1.png"
    assert skipped is None
    assert keys(s3, bucket) == ["A/photo-1.png", "A/photo.png"]
    assert body(s3, bucket, "A/photo.png") == b"one"

    assert deliver(sink, "A/photo.png", b"four", on_conflict="overwrite") == first
    assert body(s3, bucket, "A/photo.png") == b"four"
    assert deliver(sink, "A/photo.png", b"two") == second  # found again under its renamed key


HOSTILE_NAMES = [
    "../outside.png", "A/../../outside.png", "/etc/passwd", "A\\..\\..\\outside.png",
    "..", "A/./../b.png", "new\nline.png", "nul\x00.png", "x" * 1100 + ".png",
    "caf\udce9.png",  # a name an old SMB client wrote in Latin-1: no UTF-8 key
]


def test_hostile_names_never_leave_the_prefix(s3: S3Endpoint) -> None:
    bucket = s3.bucket()
    sink = S3Sink(config(s3, bucket, prefix="results"))

    for name in HOSTILE_NAMES:
        with pytest.raises(InputError, match="the output name"):
            sink.deliver(PurePosixPath(name), b"x", media_type="image/png", metadata={},
                         on_conflict="overwrite")

    assert keys(s3, bucket) == []


def test_odd_but_harmless_names_stay_inside_the_prefix(s3: S3Endpoint) -> None:
    bucket = s3.bucket()
    sink = S3Sink(config(s3, bucket, prefix="results"))

    location = deliver(sink, "Engrave Wood/..photo ~ 1 (été).png", b"x")

    assert location == f"s3://{bucket}/results/Engrave Wood/..photo ~ 1 (été).png"
    assert keys(s3, bucket) == ["results/Engrave Wood/..photo ~ 1 (été).png"]


@pytest.mark.parametrize("prefix", ["../up", "a/../../b", "a\\b"])
def test_unsafe_prefix_is_a_configuration_error(s3: S3Endpoint, prefix: str) -> None:
    with pytest.raises(ConfigError, match=r"output\.s3\.prefix"):
        S3Sink(config(s3, "hotfolder-results", prefix=prefix))


def test_endpoint_down_is_unavailable_then_delivery_works_when_back(s3: S3Endpoint) -> None:
    cfg = config(s3, s3.bucket())
    sink = S3Sink(cfg)

    with s3.stopped():
        with pytest.raises(Unavailable) as down:
            deliver(sink, "A/photo.png", b"result")
        assert down.value.message == (
            f"cannot store A/photo.png in S3: S3 endpoint {s3.url} cannot be reached")
        assert check_bucket(cfg) == f"S3 endpoint {s3.url} cannot be reached"

    s3.bucket()  # a restarted moto server is empty
    assert deliver(sink, "A/photo.png", b"result") == "s3://hotfolder-results/A/photo.png"
    assert body(s3, "hotfolder-results", "A/photo.png") == b"result"


def test_bucket_that_refuses_writes(s3: S3Endpoint) -> None:
    bucket = s3.bucket()
    deny = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{bucket}/*"}]}
    s3.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(deny))
    cfg = config(s3, bucket)

    with pytest.raises(Unavailable, match=f"access denied to S3 bucket '{bucket}'"):
        deliver(S3Sink(cfg), "photo.png", b"result")

    assert check_bucket(cfg) == (
        f"access denied to S3 bucket '{bucket}': check the bucket policy and the "
        "permissions of the AWS credentials")
    assert keys(s3, bucket) == []


def test_missing_bucket(s3: S3Endpoint) -> None:
    cfg = config(s3, "no-such-bucket")

    with pytest.raises(Unavailable, match="bucket 'no-such-bucket' does not exist"):
        deliver(S3Sink(cfg), "photo.png", b"result")
    assert check_bucket(cfg) == f"S3 bucket 'no-such-bucket' does not exist at {s3.url}"


def test_check_bucket(s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3.bucket()
    cfg = config(s3, bucket, prefix="results")

    assert check_bucket(cfg) is None
    assert keys(s3, bucket) == []  # the probe object is removed again

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert check_bucket(cfg) == (
        "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
        "AWS_PROFILE or an instance role")
    assert check_bucket(config(s3, bucket, prefix="../x")) is not None


def s3_root(tmp_path: Path, s3: S3Endpoint, bucket: str) -> Path:
    root = tmp_path / "root"
    assert main(["init", str(root)]) == 0
    config = root / "hotfolder.yaml"
    config.write_text(yaml.safe_dump({
        "scanner": {"clamd": "off"},
        "output": {"s3": {"bucket": bucket, "prefix": "results/", "endpoint_url": s3.url,
                          "region": "us-east-1"}},
    }))
    return config


def test_hotfolder_check_tries_the_bucket(s3: S3Endpoint, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = s3_root(tmp_path, s3, s3.bucket())
    capsys.readouterr()

    assert main(["check", "-c", str(config)]) == 0
    assert "ok    s3://hotfolder-results/results: reachable and takes writes\n" in (
        capsys.readouterr().out)

    config.write_text(config.read_text().replace("hotfolder-results", "missing-bucket"))
    assert main(["check", "-c", str(config)]) == 2
    assert (f"FAIL  s3://missing-bucket/results: S3 bucket 'missing-bucket' does not exist at "
            f"{s3.url}\n") in capsys.readouterr().out


def test_keep_local_writes_the_outbox_under_the_name_s3_gave(s3: S3Endpoint,
                                                             tmp_path: Path) -> None:
    bucket = s3.bucket()
    outbox = tmp_path / "outbox"
    output = OutputConfig(s3=config(s3, bucket, prefix="results", keep_local=True))
    sink = make_sink(output, outbox)
    s3.client().put_object(Bucket=bucket, Key="results/A/photo.png", Body=b"someone else's")

    where = deliver(sink, "A/photo.png", b"result")

    assert where == f"s3://{bucket}/results/A/photo-1.png"
    assert body(s3, bucket, "results/A/photo-1.png") == b"result"
    assert [p.relative_to(outbox).as_posix() for p in outbox.rglob("*.png")] == ["A/photo-1.png"]
    assert (outbox / "A" / "photo-1.png").read_bytes() == b"result"
    assert isinstance(make_sink(OutputConfig(), outbox), OutboxSink)
    assert isinstance(make_sink(OutputConfig(s3=config(s3, bucket)), outbox), S3Sink)


def test_the_service_uploads_once_and_waits_while_the_endpoint_is_down(
        s3: S3Endpoint, tmp_path: Path, daemons: list[Daemon]) -> None:
    bucket = s3.bucket()
    config = make_root(tmp_path / "root", output={"s3": {
        "bucket": bucket, "prefix": "shop", "endpoint_url": s3.url, "region": "us-east-1",
        "sse": "AES256"}})
    root = config.parent
    start(daemons, config)

    data = image_bytes("JPEG", (120, 90), seed=1)
    drop(root, "grayscale+png/photo.jpg", data)
    wait_until(lambda: keys(s3, bucket) == ["shop/grayscale+png/photo.png"], 20,
               "the result in the bucket")
    head = s3.client().head_object(Bucket=bucket, Key="shop/grayscale+png/photo.png")
    assert head["ContentType"] == "image/png"
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert head["Metadata"]["recipe"] == "grayscale+png"
    with Image.open(io.BytesIO(body(s3, bucket, "shop/grayscale+png/photo.png"))) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "L", (120, 90))
    assert files_under(root / "outbox") == []  # no keep_local

    with s3.stopped():
        drop(root, "grayscale+png/second.jpg", image_bytes("JPEG", (120, 90), seed=2))
        wait_until(lambda: Daemon(config).status()["waiting"] == {"s3": 1}, 20,
                   "the job to wait for S3")
        assert (root / "archive" / "grayscale+png" / "second.jpg").exists() is False
    s3.bucket()  # a restarted moto server is empty

    wait_until(lambda: keys(s3, bucket) == ["shop/grayscale+png/second.png"], 30,
               "the waiting result in the bucket once S3 is back")
    wait_until((root / "archive" / "grayscale+png" / "second.jpg").exists, 10,
               "the original in archive/")
    assert Daemon(config).status()["jobs"] == {"done": 2}
    assert keys(s3, bucket) == ["shop/grayscale+png/second.png"]


def metadata_size(head: dict[str, Any]) -> int:
    """The bytes S3 counts for an object's user metadata: each key and value."""
    return sum(len(key.encode()) + len(value.encode()) for key, value in head["Metadata"].items())


def decoded(value: str) -> str:
    """A metadata value as written: RFC 2047 (`=?UTF-8?B?...?=`) decoded."""
    if value.startswith("=?UTF-8?B?") and value.endswith("?="):
        return base64.b64decode(value[len("=?UTF-8?B?"):-2]).decode()
    return value


def test_long_metadata_is_cut_to_fit_what_s3_takes(s3_limits: S3Endpoint) -> None:
    bucket = s3_limits.bucket()
    sink = S3Sink(config(s3_limits, bucket))
    source = "Kundenaufträge für Müller & Söhne/" * 40  # 1.4 KB of UTF-8, 1.9 KB encoded
    deliver(sink, "photo.png", b"png", source=source, recipe="Größen/" * 100, job="a1b2c3")
    head = s3_limits.client().head_object(Bucket=bucket, Key="photo.png")
    assert metadata_size(head) <= 2048
    assert head["Metadata"]["job"] == "a1b2c3"
    cut = decoded(head["Metadata"]["source"])
    assert cut.endswith("...") and source.startswith(cut.removesuffix("..."))


def test_a_refusal_that_retrying_cannot_cure_fails_with_the_reason(
        s3_limits: S3Endpoint) -> None:
    bucket = s3_limits.bucket()
    sink = S3Sink(config(s3_limits, bucket))
    too_many = {f"a-long-metadata-key-of-sixty-characters-{n:03d}-{'x' * 15}": "x"
                for n in range(40)}  # the keys alone are over 2 KB: nothing can be cut
    with pytest.raises(InputError, match=r"refused to store photo\.png: MetadataTooLarge") as info:
        deliver(sink, "photo.png", b"png", **too_many)
    assert "retrying would not change that" in info.value.message
    assert keys(s3_limits, bucket) == []


def test_the_service_fails_a_job_the_store_refuses_for_good(
        tmp_path: Path, s3: S3Endpoint, daemons: list[Daemon]) -> None:  # s3: the credentials
    store = S3Endpoint(tmp_path, metadata_limit=128)  # takes less than hotfolder's metadata
    store.start()
    try:
        bucket = store.bucket()
        config = make_root(tmp_path / "root", output={"s3": {
            "bucket": bucket, "endpoint_url": store.url, "region": "us-east-1"}})
        root = config.parent
        start(daemons, config)
        drop(root, "grayscale+png/photo.jpg", image_bytes("JPEG", seed=3))
        report = root / "failed" / "grayscale+png" / "photo.jpg.error.json"
        wait_until(report.exists, 30, "the refused job in failed/")
        message = json.loads(report.read_text())["message"]
        assert "S3 refused to store grayscale+png/photo.png: MetadataTooLarge" in message
        assert "retrying would not change that" in message
        assert keys(store, bucket) == []
        assert Daemon(config).status()["jobs"] == {"failed": 1}
    finally:
        store.stop()
