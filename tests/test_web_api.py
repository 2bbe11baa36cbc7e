"""The console's HTTP API through real HTTP against `hotfolder run`, with the real clamd."""

from __future__ import annotations

import http.client
import io
import select
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image

from clamd_server import EICAR, EICAR_SIGNATURE, Clamd
from helpers import image_bytes, wait_until
from hotfolder.journal.memory import MemoryJournal
from hotfolder.web.events import Hub
from moto_server import S3Endpoint
from redis_server import RedisServer
from server_process import free_port
from service_helpers import Daemon, files_under, make_root, start
from test_scaleout import worker_config
from web_helpers import Api, multipart

FOLDER = "grayscale+png"
TOKEN = "a-long-enough-test-token-0123456789"
MB = 1024 * 1024


def console_root(tmp_path: Path, clamd: Clamd, **overrides: object) -> Path:
    """A root with the folder FOLDER and a console on a free port; returns the config."""
    config = make_root(tmp_path / "root", clamd.address, **overrides)
    (config.parent / "inbox" / FOLDER).mkdir()
    return config


def done(api: Api, job_id: str, state: str = "done") -> dict[str, object]:
    """Wait until the job has ended in `state`; its info."""
    return wait_until(lambda: (info := api.job(job_id))["state"] == state and info, 30,
                      f"job {job_id} to be {state}")


def test_a_photo_and_eicar_uploaded_together_end_done_and_quarantined(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon]) -> None:
    config = console_root(tmp_path, clamd)
    root = config.parent
    daemon = start(daemons, config)
    api = Api(config)
    assert [f["path"] for f in api.get("/api/v1/folders").json()] == [FOLDER]

    with api.events() as events:
        reply = api.upload(FOLDER, [("photo.jpg", image_bytes("JPEG", (300, 200))),
                                    ("eicar.jpg", EICAR)])
        assert reply.status == 202, reply
        photo, eicar = reply.json()
        assert (photo["name"], photo["folder"], photo["state"]) == ("photo.jpg", FOLDER,
                                                                      "queued")
        assert eicar["name"] == "eicar.jpg"
        wait_until(lambda: {(e["id"], e["state"]) for e in events} >= {
            (photo["id"], "done"), (eicar["id"], "quarantined")}, 30, "the two ending events")

    output = root / "outbox" / FOLDER / "photo.png"
    with Image.open(output) as image:
        assert (image.mode, image.size) == ("L", (300, 200))
    assert [p.name for p in files_under(root / "quarantine")] == ["eicar.jpg",
                                                                  "eicar.jpg.scan.json"]
    info = done(api, eicar["id"], "quarantined")
    assert str(info["scan"]["signature"]).startswith(EICAR_SIGNATURE)  # type: ignore[index]
    assert EICAR_SIGNATURE in str(info["reason"])
    for side in ("before", "after"):
        refused = api.get(f"/api/v1/jobs/{eicar['id']}/preview?side={side}")
        assert refused.status == 404 and "quarantined" in refused.json()["error"]
    assert api.get(f"/api/v1/jobs/{eicar['id']}/download").status == 409

    info = done(api, photo["id"])
    assert info["steps"] == ["grayscale", "format(format=png)"]
    download = api.get(f"/api/v1/jobs/{photo['id']}/download")
    assert download.status == 200
    assert download.body == output.read_bytes()
    assert "attachment" in download.headers["content-disposition"]
    for side, mode in (("before", "RGB"), ("after", "L")):
        preview = api.get(f"/api/v1/jobs/{photo['id']}/preview?side={side}")
        assert preview.status == 200 and preview.headers["content-type"] == "image/jpeg"
        with Image.open(io.BytesIO(preview.body)) as image:
            assert image.mode == mode and max(image.size) <= 360

    listed = api.get(f"/api/v1/jobs?folder={quote(FOLDER)}&state=done").json()
    assert [job["id"] for job in listed] == [photo["id"]]
    assert [job["id"] for job in api.get("/api/v1/jobs?q=EICAR").json()] == [eicar["id"]]
    assert daemon.metric("hotfolder_web_requests_total", route="/api/v1/uploads",
                         status="202") == 1
    assert daemon.metric("hotfolder_web_upload_bytes_total") == len(EICAR) + len(
        image_bytes("JPEG", (300, 200)))
    assert api.get("/api/v1/openapi.json").json()["openapi"].startswith("3.")
    assert daemon.stop() == 0


def test_limits_folders_and_names(tmp_path: Path, clamd: Clamd, daemons: list[Daemon]) -> None:
    config = console_root(tmp_path, clamd)
    root = config.parent
    (root / "inbox" / ".hidden").mkdir()
    start(daemons, config)
    api = Api(config)
    small = image_bytes("JPEG", (32, 24))

    eleven = api.upload(FOLDER, [(f"p{n}.jpg", small) for n in range(11)])
    assert eleven.status == 413 and "web.max_files" in eleven.json()["error"]
    for folder in ("nowhere", "../outbox", ".hidden", "/etc", ""):
        unknown = api.upload(folder, [("p.jpg", small)])
        assert unknown.status == 400, (folder, unknown)
        assert "not a folder" in unknown.json()["error"]
    assert api.get("/api/v1/jobs").json() == []

    reply = api.upload(FOLDER, [("../../../escape.jpg", small)])
    assert reply.status == 202, reply
    (job,) = reply.json()
    assert (job["name"], job["folder"]) == ("escape.jpg", FOLDER)
    done(api, job["id"])
    assert (root / "outbox" / FOLDER / "escape.png").is_file()
    assert not (tmp_path / "escape.jpg").exists() and not (root / "escape.jpg").exists()
    assert files_under(root / "inbox") == []

    secret = tmp_path / "secret.txt"
    secret.write_text("not for the console")
    output = root / "outbox" / FOLDER / "escape.png"
    output.unlink()
    output.symlink_to(secret)  # planted by someone with write access to the share
    planted = api.get(f"/api/v1/jobs/{job['id']}/download")
    assert planted.status == 404 and b"not for the console" not in planted.body
    (root / "inbox" / "linked").symlink_to(tmp_path)
    assert [f["path"] for f in api.get("/api/v1/folders").json()] == [FOLDER]
    assert api.upload("linked", [("p.jpg", small)]).status == 400

    for host in ("evil.example", "evil.example:80"):  # a name of another site, rebound to us
        conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
        conn.request("GET", "/api/v1/jobs", headers={"Host": host})
        answer = conn.getresponse()
        assert answer.status == 403 and b"this machine" in answer.read()
        conn.close()


def test_a_51_mb_file_is_refused_before_the_body_is_read(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon]) -> None:
    config = console_root(tmp_path, clamd)
    root = config.parent
    start(daemons, config)
    api = Api(config)
    body, kind = multipart({"folder": FOLDER}, [("big.jpg", b"\xff" * (51 * MB))])
    held_back = MB // 2  # never sent unless the server waits for it

    with socket.create_connection((api.host, api.port), timeout=30) as sock:
        sock.sendall(f"POST /api/v1/uploads HTTP/1.1\r\nHost: {api.host}:{api.port}\r\n"
                     f"Content-Type: {kind}\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        sock.sendall(body[:-held_back])
        readable, _, _ = select.select([sock], [], [], 30)
        assert readable, "no answer before the whole body was sent"
        answer = sock.recv(65536).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer
    assert "limits.max_file_mb" in answer
    wait_until(lambda: files_under(root / "inbox") == [], 10, "no upload left in the work folder")
    assert api.get("/api/v1/jobs").json() == []


def test_the_token_is_needed_and_other_origins_are_refused(
        tmp_path: Path, clamd: Clamd, daemons: list[Daemon]) -> None:
    config = console_root(tmp_path, clamd, web={"listen": f"127.0.0.1:{free_port()}",
                                                "token": TOKEN})
    start(daemons, config)
    anonymous = Api(config)
    bearer = Api(config, {"Authorization": f"Bearer {TOKEN}"})
    small = [("p.jpg", image_bytes("JPEG", (32, 24)))]

    for path in ("/api/v1/folders", "/api/v1/jobs", "/api/v1/events"):
        refused = anonymous.get(path)
        assert refused.status == 401 and "token" in refused.json()["error"]
    assert anonymous.upload(FOLDER, small).status == 401
    assert Api(config, {"Authorization": "Bearer wrong"}).get("/api/v1/jobs").status == 401
    assert bearer.get("/api/v1/jobs").status == 200
    assert anonymous.get("/").status == 200  # the page itself holds nothing; it asks

    assert anonymous.post_json("/api/v1/session", {"token": "wrong"}).status == 401
    session = anonymous.post_json("/api/v1/session", {"token": TOKEN})
    assert session.status == 204
    cookie = session.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert TOKEN not in cookie
    with_cookie = Api(config, {"Cookie": cookie.split(";", 1)[0]})
    assert with_cookie.get("/api/v1/folders").status == 200

    own = f"http://{bearer.host}:{bearer.port}"
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": "null"}):
        crossed = bearer.upload(FOLDER, small, **headers)
        assert crossed.status == 403 and "another site" in crossed.json()["error"], headers
        assert with_cookie.upload(FOLDER, small, **headers).status == 403
    assert bearer.get("/api/v1/jobs").json() == []
    assert bearer.upload(FOLDER, small, Origin=own, **{"Sec-Fetch-Site": "same-origin"}
                         ).status == 202


def test_off_loopback_without_a_token_the_service_refuses_to_start(tmp_path: Path) -> None:
    config = make_root(tmp_path / "root", web={"listen": f"0.0.0.0:{free_port()}"})
    result = subprocess.run(
        [sys.executable, "-m", "hotfolder.cli", "run", "-c", str(config)],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "web.token must be set" in result.stderr
    assert "Traceback" not in result.stderr


def test_retry_process_again_and_delete(tmp_path: Path, clamd: Clamd,
                                        daemons: list[Daemon]) -> None:
    config = console_root(tmp_path, clamd)
    root = config.parent
    start(daemons, config)
    api = Api(config)
    photo = image_bytes("JPEG", (120, 80), seed=2)
    reply = api.upload(FOLDER, [("photo.jpg", photo), ("cut.jpg", photo[:200]),
                                ("eicar.jpg", EICAR)])
    good, cut, eicar = reply.json()
    done(api, good["id"])
    failed = done(api, cut["id"], "failed")
    assert "damaged" in str(failed["reason"]) and failed["error"] is not None
    done(api, eicar["id"], "quarantined")

    again = api.request("POST", f"/api/v1/jobs/{cut['id']}/retry")
    assert again.status == 202, again
    retried = again.json()
    assert retried["id"] != cut["id"] and retried["name"] == "cut.jpg"
    done(api, retried["id"], "failed")
    assert api.request("POST", f"/api/v1/jobs/{good['id']}/retry").status == 409

    inverted = api.post_json(f"/api/v1/jobs/{good['id']}/process", {"steps": "invert+png"})
    assert inverted.status == 202, inverted
    done(api, inverted.json()["id"])
    assert (root / "outbox" / "invert+png" / "photo.png").is_file()
    bad = api.post_json(f"/api/v1/jobs/{good['id']}/process", {"steps": "explode=9"})
    assert bad.status == 400 and "explode" in bad.json()["error"]
    assert api.post_json(f"/api/v1/jobs/{good['id']}/process",
                         {"folder": "nowhere"}).status == 400

    assert api.request("DELETE", f"/api/v1/jobs/{good['id']}").status == 204
    assert not (root / "outbox" / FOLDER / "photo.png").exists()
    assert not (root / "archive" / FOLDER / "photo.jpg").exists()
    assert api.get(f"/api/v1/jobs/{good['id']}").status == 404
    assert api.request("DELETE", f"/api/v1/jobs/{eicar['id']}").status == 409
    assert (root / "quarantine" / FOLDER / "eicar.jpg").exists()
    assert api.request("DELETE", f"/api/v1/jobs/{eicar['id']}?quarantine=yes").status == 204
    assert files_under(root / "quarantine") == []
    missing = api.get("/api/v1/jobs/000000000000")
    assert missing.status == 404 and missing.json() == {"error": "no job '000000000000'"}
    assert api.get("/api/v1/nothing").json()["error"].startswith("no such page")


def test_with_a_redis_queue_the_console_shows_the_jobs_of_another_machine(
        tmp_path: Path, clamd: Clamd, redis_server: RedisServer, daemons: list[Daemon]) -> None:
    config = console_root(tmp_path, clamd, queue={"url": redis_server.url, "workers": 0})
    start(daemons, config)  # watches and serves the console, runs no job itself
    worker = Daemon(worker_config(config, tmp_path / "worker-machine"), "worker")
    daemons.append(worker)
    worker.start()
    api = Api(config)

    reply = api.upload(FOLDER, [("photo.jpg", image_bytes("JPEG", (64, 48)))])
    assert reply.status == 202, reply
    (job,) = reply.json()
    info = done(api, job["id"])
    assert [(o["name"], o["here"]) for o in info["outputs"]] == [  # type: ignore[attr-defined]
        ("photo.png", True)]
    assert api.get(f"/api/v1/jobs/{job['id']}/download").status == 200
    assert worker.stop() == 0


@pytest.mark.parametrize("keep_local", [True, False])
def test_results_in_s3_download_from_the_outbox_copy_only(
        tmp_path: Path, clamd: Clamd, s3: S3Endpoint, daemons: list[Daemon],
        keep_local: bool) -> None:
    config = console_root(tmp_path, clamd, output={"s3": {
        "bucket": s3.bucket(), "endpoint_url": s3.url, "region": "us-east-1",
        "keep_local": keep_local}})
    start(daemons, config)
    api = Api(config)
    (job,) = api.upload(FOLDER, [("photo.jpg", image_bytes("JPEG", (64, 48)))]).json()
    info = done(api, job["id"])
    (output,) = info["outputs"]  # type: ignore[misc]
    assert output["location"].startswith("s3://") and output["here"] is keep_local
    download = api.get(f"/api/v1/jobs/{job['id']}/download")
    preview = api.get(f"/api/v1/jobs/{job['id']}/preview?side=after")
    if keep_local:
        local = config.parent / "outbox" / FOLDER / "photo.png"
        assert download.status == 200 and download.body == local.read_bytes()
        assert preview.status == 200
    else:
        assert download.status == 404 and "keep_local" in download.json()["error"]
        assert preview.status == 404


def test_the_event_stream_looks_at_a_big_backlog_less_often() -> None:
    journal = MemoryJournal()
    for n in range(3):
        journal.add(f"job-{n}", f"{FOLDER}/photo-{n}.jpg", kind="jpeg", size=10)
    spent = iter([0.0, 0.002, 10.0, 10.5])  # CPU seconds: a quick look, then a slow one
    hub = Hub(journal, poll_seconds=0.1, clock=lambda: next(spent))
    jobs, pause = hub.look()
    assert sorted(jobs) == ["job-0", "job-1", "job-2"] and pause == 0.1
    _, pause = hub.look(unfinished_before=3)
    assert pause == pytest.approx(4.5)  # half a second of looking, then 4.5 s idle: 10%
