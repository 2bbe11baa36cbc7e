"""The console's decisions without a server: settings, names, folders, the job list, Host."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from hotfolder.config import Config, WebConfig
from hotfolder.journal.memory import MemoryJournal
from hotfolder.metrics import Metrics
from hotfolder.recipes import RecipeBook
from hotfolder.web.app import host_name
from hotfolder.web.console import (
    Backend,
    Refused,
    list_jobs,
    moment,
    summary,
    upload_folder,
    upload_name,
)


@pytest.fixture
def backend(tmp_path: Path) -> Backend:
    cfg = Config(root=tmp_path)
    layout = cfg.layout
    for folder in ("grayscale+png", "grayscale+png/dpi=300", ".hidden", "not a step"):
        (layout.inbox / folder).mkdir(parents=True)
    layout.work.mkdir()
    return Backend(cfg, MemoryJournal(), RecipeBook(layout.recipes), lambda path, rel: None,
                   Metrics())


@pytest.mark.parametrize("listen", ["127.0.0.1:8080", "[::1]:8080", "localhost:1", "off"])
def test_a_loopback_address_needs_no_token(listen: str) -> None:
    web = WebConfig(listen=listen)
    assert web.listen == (None if listen == "off" else listen)


def test_another_address_needs_a_token() -> None:
    with pytest.raises(ValidationError, match=r"web\.token must be set"):
        WebConfig(listen="0.0.0.0:8080")
    assert WebConfig(listen="0.0.0.0:8080", token="x" * 16).token == "x" * 16
    with pytest.raises(ValidationError, match="at least 16"):
        WebConfig(listen="0.0.0.0:8080", token="short")


@pytest.mark.parametrize(("given", "name"), [
    ("photo.jpg", "photo.jpg"), ("../../etc/passwd.jpg", "passwd.jpg"),
    ("C:\\Users\\ann\\scan 1.png", "scan 1.png"), ("<b>bold</b>.jpg", "b>.jpg"),
])
def test_a_file_name_is_reduced_to_its_last_component(backend: Backend, given: str,
                                                      name: str) -> None:
    assert upload_name(given, backend) == name


@pytest.mark.parametrize("given", ["", "a/..", "dir/", ".hidden.jpg", "x.tmp", "recipe.yaml",
                                   "nul\0.jpg"])
def test_a_name_the_inbox_never_takes_is_refused(backend: Backend, given: str) -> None:
    with pytest.raises(Refused) as refused:
        upload_name(given, backend)
    assert refused.value.status == 400


def test_only_folders_that_give_a_recipe_take_uploads(backend: Backend) -> None:
    assert str(upload_folder(backend, "grayscale+png/dpi=300/")) == "grayscale+png/dpi=300"
    for path in ("not a step", ".hidden", "../outbox", "/etc", "missing", "", ".hotfolder",
                 "grayscale+png/../.hidden"):
        with pytest.raises(Refused) as refused:
            upload_folder(backend, path)
        assert refused.value.status == 400, path


def test_the_list_is_newest_first_and_filtered() -> None:
    journal = MemoryJournal()
    for n, rel in enumerate(["a/one.jpg", "a/two.jpg", "b/Three.jpg", "b/four.jpg"]):
        journal.add(f"job{n}", rel, kind="jpeg", size=1)
        time.sleep(0.002)  # distinct creation times, which order the list
    journal.finish("job1", "done")
    journal.finish("job3", "failed", "bad")

    def ids(**filters: object) -> list[str]:
        return [job.id for job in list_jobs(journal, **filters)]  # type: ignore[arg-type]

    assert ids() == ["job3", "job2", "job1", "job0"]
    assert ids(state="done") == ["job1"]
    assert ids(folder="b") == ["job3", "job2"]
    assert ids(q="three") == ["job2"]
    assert ids(limit=2) == ["job3", "job2"]
    before = journal.get("job2")
    assert before is not None
    assert ids(before=before.created) == ["job1", "job0"]
    assert moment(str(before.created)) == before.created
    assert moment(str(summary(before)["created"])) == pytest.approx(before.created, abs=0.001)
    for bad in ({"state": "lost"}, {"limit": 0}):
        with pytest.raises(Refused):
            ids(**bad)


@pytest.mark.parametrize(("host", "name"), [("127.0.0.1:8080", "127.0.0.1"),
                                            ("[::1]:8080", "::1"), ("localhost", "localhost"),
                                            ("evil.example:80", "evil.example")])
def test_the_name_in_a_host_header(host: str, name: str) -> None:
    assert host_name(host) == name
