"""Any name and path the file system accepts is served (SPEC 3), through the running service.

Names that are not valid UTF-8, names of 250 and 255 bytes, a path 30 folders deep, a
customer and order path with spaces and umlauts, and names with a newline: each ends
in outbox/ under its sub-folders (or in failed/ with a plain reason), and no log line
is split or holds a traceback; and the service killed while it claims such names
leaves each file in exactly one place, processed once after the restart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml
from PIL import Image

from helpers import image_bytes, wait_until
from service_helpers import Daemon, files_under, make_root, start

GRAY = "steps: [grayscale]\noutput: {format: png}\nsidecar: true\n"
DEEP = "/".join(f"d{n:02d}" for n in range(1, 30))  # below gray/: 30 folders in all


def put(root: Path, rel: str, data: bytes) -> None:
    """Drop a file as a copy does, under a short hidden name first (long names leave no room)."""
    target = root / "inbox" / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(".copying.part")
    temp.write_bytes(data)
    temp.rename(target)


def name(raw: bytes) -> str:
    """A path as Python holds one from the file system (undecodable bytes escaped)."""
    return os.fsdecode(raw)


# (dropped under inbox/, expected under outbox/)
SERVED = [
    (name(b"gray/caf\xe9 latin-1.jpg"), name(b"gray/caf\xe9 latin-1.png")),
    (name(b"gray/Kunde \xe4\xf6/\xff\xfe.jpg"), name(b"gray/Kunde \xe4\xf6/\xff\xfe.png")),
    ("gray/" + "a" * 246 + ".jpg", "gray/" + "a" * 236 + ".png"),  # cut to fit, extension kept
    ("gray/" + "b" * 251 + ".jpg", "gray/" + "b" * 236 + ".png"),
    ("gray/" + "ü" * 125 + ".jpg", "gray/" + "ü" * 118 + ".png"),  # cut between characters
    (f"gray/{DEEP}/deep.jpg", f"gray/{DEEP}/deep.png"),
    ("engrave-wood/Müller GmbH/Order 4711/dog.jpg", "engrave-wood/Müller GmbH/Order 4711/dog.png"),
    ("gray/two\nlines.jpg", "gray/two_lines.png"),
]


def served_root(root: Path) -> Path:
    """The configuration of a test root with the recipes `gray` and `engrave-wood`."""
    config = make_root(root)
    for recipe in ("gray", "engrave-wood"):
        (root / "recipes" / f"{recipe}.yaml").write_text(GRAY)
    return config


def test_every_name_the_file_system_accepts_is_served(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    config = served_root(tmp_path / "root")
    root = config.parent
    daemon = start(daemons, config)
    for n, (rel, _) in enumerate(SERVED):
        assert len(os.fsencode(Path(rel).name)) <= 255
        put(root, rel, image_bytes("JPEG", (40, 30), seed=n))
    line_folder = "gray/line\nbreak/x.jpg"  # a folder name no output path may hold
    put(root, line_folder, image_bytes("JPEG", (40, 30), seed=99))
    not_a_picture = name(b"gray/caf\xe9 notes.jpg")
    put(root, not_a_picture, b"some text, not a picture\n" * 10)

    for n, (rel, expected) in enumerate(SERVED):
        archived = root / "archive" / rel
        wait_until(archived.exists, 30, f"archive/{rel!r}")
        assert archived.read_bytes() == image_bytes("JPEG", (40, 30), seed=n)
        output = root / "outbox" / expected
        with Image.open(output) as image:
            assert (image.mode, image.size) == ("L", (40, 30))
        sidecar = json.loads(output.with_name(output.name + ".json").read_bytes())
        assert sidecar["input"]["name"] == Path(rel).name.encode(
            errors="surrogateescape").decode(errors="backslashreplace")  # `\xff` as text

    report = root / "failed" / f"{line_folder}.error.json"
    wait_until(report.exists, 30, "the folder with a newline in failed/")
    message = json.loads(report.read_text())["message"]
    assert "contains a control character" in message
    assert (root / "failed" / line_folder).exists()

    report = root / "failed" / f"{not_a_picture}.error.json"
    wait_until(report.exists, 30, "the text file in failed/")
    assert json.loads(report.read_bytes())["original"] == "gray/caf\\xe9 notes.jpg"
    wait_until(lambda: daemon.status()["jobs"] == {"done": len(SERVED), "failed": 2}, 10,
               "every job ended")
    listen = yaml.safe_load(config.read_text())["web"]["listen"]
    with urllib.request.urlopen(f"http://{listen}/api/v1/jobs?limit=100", timeout=10) as reply:
        listed = {(job["folder"], job["name"]) for job in json.loads(reply.read())}
    assert ("gray", "caf\\xe9 latin-1.jpg") in listed  # the console's JSON too
    assert ("gray/Kunde \\xe4\\xf6", "\\xff\\xfe.jpg") in listed
    status = hotfolder("status", "-c", str(config))
    assert "gray/caf\\xe9 notes.jpg: the file is" in status.stdout
    assert files_under(root / "inbox") == []  # the work folder is empty: nothing left behind
    assert daemon.stop() == 0
    log = daemon.log.read_text(errors="replace")
    assert "Traceback" not in log
    lines = log.splitlines()
    assert not [line for line in lines if line.startswith(("lines.jpg", "break/"))]
    assert any("gray/two\\nlines.jpg" in line for line in lines)  # escaped, on one line
    assert any("caf\\xe9 latin-1.jpg" in line for line in lines)

    retried = hotfolder("retry", "--all", "-c", str(config))
    assert "gray/caf\\xe9 notes.jpg -> " in retried.stdout
    assert "gray/line\\nbreak/x.jpg -> " in retried.stdout
    assert (root / "inbox" / not_a_picture).exists()
    assert (root / "inbox" / line_folder).exists()


def hotfolder(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line, which must end well and print no traceback."""
    done = subprocess.run([sys.executable, "-m", "hotfolder.cli", *args], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done


def test_kill_9_while_odd_names_are_claimed_loses_and_doubles_nothing(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    config = served_root(tmp_path / "root")
    root = config.parent
    dropped = {}
    for n in range(40):
        folder, _, file_name = SERVED[n % len(SERVED)][0].rpartition("/")
        rel = f"{folder}/{n:02d}{file_name[2:]}"  # as long as the original name, told apart
        put(root, rel, image_bytes("JPEG", (40, 30), seed=n))
        dropped[rel] = image_bytes("JPEG", (40, 30), seed=n)
    daemon = start(daemons, config)  # its start-up scan claims the batch: killed meanwhile
    work = root / "inbox" / ".hotfolder"
    wait_until(lambda: work.is_dir() and any(work.iterdir()), 20, "the first claims")
    daemon.kill()
    daemon.start()
    wait_until(lambda: daemon.status()["jobs"] == {"done": len(dropped)}, 60, "every job done")

    archived = {p.relative_to(root / "archive").as_posix(): p.read_bytes()
                for p in files_under(root / "archive")}
    assert archived == dropped  # every original exactly once, under its own path
    outputs = [p for p in files_under(root / "outbox") if p.suffix == ".png"]
    assert len(outputs) == len(dropped)  # one result each, no photo-1.png
    assert files_under(root / "inbox") == []
    assert files_under(root / "failed") == []
    assert "Traceback" not in daemon.log.read_text(errors="replace")
    assert daemon.stop() == 0
