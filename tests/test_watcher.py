"""The watcher: real files, real inotify and polling observers, decisions driven by a clock."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from watchdog.events import (
    DirCreatedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
)

from helpers import wait_until
from hotfolder import watcher as watcher_module
from hotfolder.config import WatchConfig
from hotfolder.watcher import (
    CONFIRM_SECONDS,
    OFFER_BATCH,
    OFFER_CALLS,
    Action,
    Coverage,
    Mount,
    Recent,
    Settler,
    Signature,
    Watcher,
    attribute_cache_seconds,
    ignored,
    is_network_fs,
    mount_of,
    polling_wanted,
    read_report,
    rested_seconds,
    route,
    watched_inodes,
)
from sshfs_share import share, share_problem

DEADLINE = 5.0
POLL_DEADLINE = 30.0


class Calls:
    """Records the files given to on_files (name relative to the inbox, size at the time of the
    call)."""

    def __init__(self, inbox: Path) -> None:
        self.inbox = inbox
        self.seen: list[tuple[str, int]] = []
        self.fail_next = False
        self._changed = threading.Condition()

    def __call__(self, paths: list[Path]) -> None:
        with self._changed:
            self.seen.extend((path.relative_to(self.inbox).as_posix(), path.stat().st_size)
                             for path in paths)
            self._changed.notify_all()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("intake broke")

    @property
    def names(self) -> list[str]:
        with self._changed:
            return [name for name, _ in self.seen]

    def wait(self, count: int, timeout: float = DEADLINE) -> bool:
        """True once at least `count` calls were made, False when the deadline passes first."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.seen) >= count, timeout)


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = threading.active_count()
    yield
    assert threading.active_count() == before, [t.name for t in threading.enumerate()]


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def watch(inbox: Path) -> Iterator[Callable[..., tuple[Watcher, Calls]]]:
    started: list[Watcher] = []

    def start(exclude: tuple[Path, ...] = (), **settings: Any) -> tuple[Watcher, Calls]:
        calls = Calls(inbox)
        settings.setdefault("mode", "events")
        w = Watcher(inbox, WatchConfig(**settings), calls, exclude=exclude)
        w.start()
        started.append(w)
        # inotify watches once what rested before the start is offered (`_claim_backlog`).
        wait_until(lambda: w.healthy, DEADLINE, "the watch to start")
        return w, calls

    yield start
    for w in started:
        w.stop()


def write(path: Path, data: bytes = b"picture") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        out.write(data)
    return path


def write_rested(inbox: Path, names: list[str]) -> None:
    """Write the files, then wait until the last is more than 0.5 s old (a backlog)."""
    for name in names:
        write(inbox / name)
    last = inbox / names[-1]
    wait_until(lambda: time.time() - last.stat().st_mtime > 0.5, DEADLINE, "rested files")


# -- with real files ------------------------------------------------------------------------


def test_a_file_written_and_closed_gives_one_call(watch, inbox):
    w, calls = watch(settle_seconds=0.1)
    write(inbox / "photo.jpg", b"x" * 5000)
    assert calls.wait(1)
    write(inbox / "marker.jpg")  # events arrive in order: a second call for photo would come first
    assert calls.wait(2)
    assert calls.seen == [("photo.jpg", 5000), ("marker.jpg", 7)]
    assert w.healthy


def test_a_file_closed_again_unchanged_gives_no_second_call(watch, inbox):
    _, calls = watch(settle_seconds=0.1)
    photo = write(inbox / "photo.jpg", b"x" * 5000)
    for _ in range(3):  # opened for writing and closed without a change: same size and mtime
        photo.open("ab").close()
    write(inbox / "marker.jpg")
    assert calls.wait(2)
    assert not calls.wait(3, timeout=0.3)
    assert calls.names == ["photo.jpg", "marker.jpg"]


def test_the_same_bytes_dropped_again_after_a_claim_are_offered_again(watch, inbox, tmp_path):
    claimed = tmp_path / "work"
    claimed.mkdir()
    _, calls = watch(settle_seconds=0.1)
    for copy in range(2):  # same name, size and mtime (cp -p): only the inode differs
        outside = write(tmp_path / "photo.jpg", b"x" * 5000)
        os.utime(outside, ns=(1_700_000_000_000_000_000,) * 2)
        photo = outside.rename(inbox / "photo.jpg")
        assert calls.wait(copy + 1)
        photo.rename(claimed / f"photo{copy}.jpg")  # what intake's claim does
    assert calls.names == ["photo.jpg", "photo.jpg"]


def test_the_same_file_moved_back_at_once_after_a_claim_is_offered_again(watch, inbox, tmp_path):
    """`hotfolder retry` moves the very file back: same size, mtime and inode."""
    failed = tmp_path / "failed"
    failed.mkdir()
    _, calls = watch(settle_seconds=0.1, rescan_seconds=3600)
    photo = write(inbox / "photo.jpg", b"x" * 5000)
    assert calls.wait(1)
    claimed = photo.rename(failed / "photo.jpg")  # claimed, failed...
    claimed.rename(inbox / "photo.jpg")  # ...and retried, within the de-duplication window
    assert calls.wait(2, timeout=2.0)
    assert calls.names == ["photo.jpg", "photo.jpg"]


def test_a_path_that_left_the_tree_is_forgotten():
    recent = Recent(10.0, Clock())
    assert recent.first("/i/a", Signature(100, 5, 1))
    recent.forget("/i/a")
    assert recent.first("/i/a", Signature(100, 5, 1))


def test_the_tree_is_rescanned_every_rescan_seconds(inbox):
    clock = Clock()
    w = Watcher(inbox, WatchConfig(mode="events", rescan_seconds=60), Calls(inbox), clock=clock)
    w.start()
    try:
        first = wait_until(lambda: w.last_scan, DEADLINE, "the first scan")
        clock.now += 59
        with pytest.raises(AssertionError, match="timed out"):  # no rescan before it is due
            wait_until(lambda: w.last_scan != first, 0.3, "an early rescan")
        clock.now += 1
        wait_until(lambda: w.last_scan != first, DEADLINE, "the rescan when due")
    finally:
        w.stop()


def test_a_file_written_slowly_is_taken_only_after_its_writer_closes_it(watch, inbox):
    w, calls = watch(settle_seconds=0.3)
    with (inbox / "slow.jpg").open("wb") as out:
        out.write(b"a" * 1000)
        out.flush()
        assert not calls.wait(1, timeout=0.8)  # a stall longer than settle_seconds
        assert w.rescan() == 1  # a rescan sees it too, and must not take it while it is open
        assert not calls.wait(1, timeout=0.8)
        out.write(b"b" * 1000)
    assert calls.wait(1)
    assert calls.seen == [("slow.jpg", 2000)]


def test_a_file_renamed_into_the_inbox_is_taken_at_once(watch, inbox, tmp_path):
    _, calls = watch(settle_seconds=30)  # only the rename can explain a call within the deadline
    outside = write(tmp_path / "elsewhere" / "logo.png", b"png" * 10)
    outside.rename(inbox / "logo.png")
    write(inbox / ".logo2.png.Xy12Ab", b"rsync")  # rsync writes a hidden name, then renames it
    (inbox / ".logo2.png.Xy12Ab").rename(inbox / "logo2.png")
    assert calls.wait(2)
    assert sorted(calls.seen) == [("logo.png", 30), ("logo2.png", 5)]


def test_a_folder_renamed_into_the_inbox_gives_each_of_its_files(watch, inbox, tmp_path):
    _, calls = watch(settle_seconds=30)
    write(tmp_path / "job" / "a.jpg")
    write(tmp_path / "job" / "deeper" / "b.jpg")
    (tmp_path / "job").rename(inbox / "job")
    assert calls.wait(2)
    assert sorted(calls.names) == ["job/a.jpg", "job/deeper/b.jpg"]


def test_a_hard_link_has_no_close_event_and_is_taken_once_settled(watch, inbox, tmp_path):
    _, calls = watch(settle_seconds=0.2)
    source = write(tmp_path / "source.jpg")
    started = time.monotonic()
    os.link(source, inbox / "linked.jpg")
    assert calls.wait(1)
    assert time.monotonic() - started >= 0.2
    assert calls.names == ["linked.jpg"]


def test_ignored_and_excluded_names_are_never_offered(watch, inbox):
    work = inbox / "work"
    _, calls = watch(settle_seconds=0.05, exclude=(work,), ignore=["*.raw"])
    for name in [
        ".DS_Store", "._photo.jpg", "photo.jpg.part", "photo.jpg.crdownload", "~$order.docx",
        "Thumbs.db", "desktop.ini", "scan.TMP", "photo.jpg.filepart", ".syncthing.a.jpg.tmp",
        "camera.raw", ".hotfolder/job1/photo.jpg", "work/photo.jpg", "@eaDir/photo.jpg",
    ]:  # fmt: skip
        write(inbox / name)
    (inbox / "photo.jpg.part").rename(inbox / ".photo.jpg.sb-1234")
    write(inbox / "ok.jpg")
    assert calls.wait(1)
    assert not calls.wait(2, timeout=0.3)  # settled files would have come by now
    assert calls.names == ["ok.jpg"]


def test_recipe_files_are_never_offered(watch, inbox):
    write(inbox / "Wood" / "recipe.yaml", b"steps: [grayscale]\n")  # before the first rescan
    w, calls = watch(settle_seconds=0.05)
    write(inbox / "Glass" / "recipe.yaml", b"steps: [invert]\n")  # an event
    write(inbox / "Glass" / "photo.jpg")
    assert calls.wait(1)
    w.rescan()
    assert not calls.wait(2, timeout=0.3)
    assert calls.names == ["Glass/photo.jpg"]


def test_files_in_nested_folders_are_offered(watch, inbox):
    _, calls = watch(settle_seconds=0.1)
    write(inbox / "Engrave Wood" / "resize=800x600,fill" / "deep" / "photo.jpg")
    (inbox / "A").mkdir()
    write(inbox / "A" / "logo.png")
    assert calls.wait(2)
    assert sorted(calls.names) == [
        "A/logo.png",
        "Engrave Wood/resize=800x600,fill/deep/photo.jpg",
    ]


def test_the_first_rescan_finds_files_present_before_start(watch, inbox):
    for name in ["a.jpg", "A/b.jpg", "A/B/c.jpg", "A/.hidden/d.jpg", "A/e.tmp"]:
        write(inbox / name)
    before = time.time()
    w, calls = watch(settle_seconds=0.1)
    assert calls.wait(3)
    assert sorted(calls.names) == ["A/B/c.jpg", "A/b.jpg", "a.jpg"]
    assert w.last_scan >= before


class OverlappingCalls(Calls):
    """Calls whose first waits (up to DEADLINE) for a second to begin, counting how many run
    at once."""

    def __init__(self, inbox: Path) -> None:
        super().__init__(inbox)
        self.running = self.most = 0

    def __call__(self, paths: list[Path]) -> None:
        with self._changed:
            self.running += 1
            self.most = max(self.most, self.running)
            self._changed.notify_all()
            if len(self.seen) == 0:
                self._changed.wait_for(lambda: self.most > 1, DEADLINE)
        super().__call__(paths)
        with self._changed:
            self.running -= 1


def test_a_big_backlog_is_offered_two_batches_at_once_each_file_once(inbox):
    names = [f"d{n % 7}/f{n:04d}.jpg" for n in range(4 * OFFER_BATCH + 3)]  # five batches
    write_rested(inbox, names)
    calls = OverlappingCalls(inbox)
    # The watcher's clock stands still: the files, rested, are all offered at the first
    # rescan's end, in one go of five batches.
    w = Watcher(inbox, WatchConfig(mode="events", settle_seconds=0.5), calls, clock=Clock())
    w.start()
    try:
        assert calls.wait(len(names), POLL_DEADLINE)
    finally:
        w.stop()
    assert sorted(calls.names) == sorted(names)  # each once, the odd fifth batch too
    assert calls.most == OFFER_CALLS == 2


def test_a_big_backlog_is_offered_while_the_walk_goes_on_not_held_until_its_end(
        inbox, monkeypatch):
    monkeypatch.setattr(watcher_module, "WALK_OFFER_FILES", 100)
    names = [f"d{n % 5}/f{n:04d}.jpg" for n in range(450)]
    write_rested(inbox, names)
    calls = Calls(inbox)
    # The watcher's clock stands still: only the number of files found makes it offer them
    # before the walk ends.
    w = Watcher(inbox, WatchConfig(mode="events", settle_seconds=0.5), calls, clock=Clock())
    held: list[int] = []  # files waiting in memory, after each the walk found
    wait = w._settler.wait

    def noted(*args: Any) -> None:
        wait(*args)
        held.append(len(w._settler))

    monkeypatch.setattr(w._settler, "wait", noted)
    w.start()
    try:
        assert calls.wait(len(names), POLL_DEADLINE)
    finally:
        w.stop()
    assert sorted(calls.names) == sorted(names)  # each once
    assert max(held[:len(names)]) == 100  # the start's walk, not the rescan after it


def test_a_backlog_is_offered_before_inotify_watches_and_a_file_dropped_meanwhile_too(inbox):
    names = [f"Wood/old{n}.jpg" for n in range(3)]
    write_rested(inbox, names)
    calls = Calls(inbox)
    watching: list[bool] = []  # whether inotify watched the tree, at each call

    def on_files(paths: list[Path]) -> None:
        watching.append(w.healthy)
        if len(watching) == 1:  # while the backlog is claimed, a file comes
            write(inbox / "Wood" / "new.jpg")
        calls(paths)

    w = Watcher(inbox, WatchConfig(mode="events", settle_seconds=0.5), on_files)
    w.start()
    try:
        assert calls.wait(len(names) + 1)
    finally:
        w.stop()
    assert sorted(calls.names) == sorted([*names, "Wood/new.jpg"])
    # The backlog's claims (each opens, closes and moves a file) raised no event to read.
    assert watching[0] is False and watching[-1] is True


def test_a_backlog_file_moved_back_at_once_after_its_claim_is_offered_again(inbox, tmp_path):
    """The backlog is claimed while inotify does not watch: no event says its files left."""
    failed = tmp_path / "failed"
    failed.mkdir()
    photo = write(inbox / "Wood" / "photo.jpg", b"x" * 5000)
    wait_until(lambda: time.time() - photo.stat().st_ctime > 0.5, DEADLINE, "a rested file")
    calls = Calls(inbox)

    def claim(paths: list[Path]) -> None:
        calls(paths)
        for path in paths:
            path.rename(failed / path.name)  # claimed, failed...

    w = Watcher(inbox, WatchConfig(mode="events", settle_seconds=0.5, rescan_seconds=3600),
                claim)
    w.start()
    try:
        assert calls.wait(1)
        wait_until(lambda: w.healthy, DEADLINE, "the watch to start")
        (failed / "photo.jpg").rename(photo)  # ...and retried, within the de-duplication window
        assert calls.wait(2, timeout=2.0)
    finally:
        w.stop()
    assert calls.names == ["Wood/photo.jpg", "Wood/photo.jpg"]


def test_at_start_a_file_unchanged_for_settle_seconds_is_taken_without_a_settle_wait(inbox):
    rested = write(inbox / "A" / "rested.jpg")
    wait_until(lambda: time.time() - rested.stat().st_ctime > 2.0, DEADLINE, "a rested file")
    stop_writing = threading.Event()
    with (inbox / "A" / "busy.jpg").open("wb") as busy:  # still being written at the start

        def keep_writing() -> None:
            while not stop_writing.wait(0.01):
                busy.write(b"x")
                busy.flush()

        writer = threading.Thread(target=keep_writing)
        writer.start()
        calls = Calls(inbox)
        # The watcher's clock stands still: nothing can be taken by waiting settle_seconds out.
        w = Watcher(inbox, WatchConfig(mode="events", settle_seconds=2.0), calls, clock=Clock())
        w.start()
        try:
            assert calls.wait(1)
            wait_until(lambda: w.last_scan, DEADLINE, "the first rescan")
            w.rescan()  # a later rescan looks again and still does not take the busy file
            assert calls.names == ["A/rested.jpg"]
        finally:
            w.stop()
            stop_writing.set()
            writer.join()


def test_a_failing_intake_does_not_stop_the_watcher(watch, inbox, caplog):
    _, calls = watch(settle_seconds=0.1)
    calls.fail_next = True
    write(inbox / "first.jpg")
    assert calls.wait(1)
    write(inbox / "second.jpg")
    assert calls.wait(2)
    assert calls.names == ["first.jpg", "second.jpg"]
    assert "intake of" in caplog.text and "first.jpg failed" in caplog.text


def test_a_dead_observer_is_restarted(watch, inbox, caplog):
    caplog.set_level(logging.WARNING)
    w, calls = watch(settle_seconds=0.05)
    dead = w._observer
    assert dead is not None
    dead.stop()
    dead.join()
    wait_until(lambda: w.healthy and w._observer is not dead, DEADLINE, "a new observer")
    write(inbox / "after.jpg")
    assert calls.wait(1)
    assert calls.names == ["after.jpg"]
    assert "restarting" in caplog.text


@pytest.mark.parametrize("mode", ["events", "polling"])
def test_an_inbox_that_goes_away_and_comes_back_is_watched_again(
        watch, inbox, caplog, monkeypatch, mode):
    monkeypatch.setattr(watcher_module, "poll_interval", lambda settle: 0.1)
    w, calls = watch(mode=mode, settle_seconds=0.05)
    shutil.rmtree(inbox)
    wait_until(lambda: not w.healthy, DEADLINE, "the watcher to see the inbox gone")
    scanned = w.last_scan
    write(inbox / "back.jpg")  # made while nothing watches: the rescan after the restart finds it
    assert calls.wait(1)
    assert calls.names == ["back.jpg"]
    assert w.healthy and w.last_scan > scanned


def test_out_of_inotify_watches_it_polls_instead(watch, inbox, monkeypatch, caplog):
    class Exhausted(watcher_module.InotifyObserver):
        def schedule(self, *args: Any, **kwargs: Any) -> Any:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(watcher_module, "InotifyObserver", Exhausted)
    monkeypatch.setattr(watcher_module, "poll_interval", lambda settle: 0.1)
    w, calls = watch(settle_seconds=0.1)
    assert w.polling and w.healthy
    assert "polling it instead" in caplog.text
    write(inbox / "photo.jpg")
    assert calls.wait(1)
    assert calls.names == ["photo.jpg"]


def test_polling_takes_a_file_only_after_it_stops_growing(watch, inbox, monkeypatch):
    monkeypatch.setattr(watcher_module, "poll_interval", lambda settle: 0.1)
    w, calls = watch(mode="polling", settle_seconds=1.0)
    assert w.polling
    with (inbox / "growing.jpg").open("wb") as out:
        for _ in range(15):  # grows every 0.1 s for 1.5 s: never unchanged for 1 s
            out.write(b"x" * 100)
            out.flush()
            assert not calls.wait(1, timeout=0.1)
    started = time.monotonic()
    assert calls.wait(1)
    assert time.monotonic() - started >= 0.8  # settle_seconds after the last write
    assert calls.seen == [("growing.jpg", 1500)]


def make_orders(inbox: Path, customers: int, orders: int) -> list[Path]:
    """Plain customer and order folders below a recipe folder, one photo in each order."""
    folders = []
    for customer in range(customers):
        for order in range(orders):
            folder = inbox / "engrave-wood" / f"customer-{customer}" / f"order-{order}"
            write(folder / "photo.jpg")
            folders.append(folder)
    return folders


def polls(w: Watcher, more: int) -> None:
    """Wait until the poller has made `more` further complete passes."""
    stats = w.poll_stats
    assert stats is not None
    target = stats.polls + more
    wait_until(lambda: stats.polls >= target, POLL_DEADLINE, f"{more} more polls")


def test_a_new_file_deep_in_a_big_polled_tree_is_taken(watch, inbox, monkeypatch):
    monkeypatch.setattr(watcher_module, "poll_interval", lambda settle: 0.1)
    orders = make_orders(inbox, customers=30, orders=10)
    w, calls = watch(mode="polling", settle_seconds=0.1, rescan_seconds=3600)
    assert calls.wait(len(orders), POLL_DEADLINE)  # the start-up rescan
    polls(w, 1)
    write(orders[-17] / "new order" / "dog.jpg", b"x" * 3000)  # only a poll can see it now
    assert calls.wait(len(orders) + 1, POLL_DEADLINE)
    assert calls.seen[-1] == ("engrave-wood/customer-28/order-3/new order/dog.jpg", 3000)
    polls(w, 1)  # the file is offered while the pass that found it goes on: let it end
    assert w.poll_stats is not None and w.poll_stats.folders == 1 + 30 * 11 + 1 + 1


def test_a_poll_of_an_idle_tree_stats_no_file_and_lists_only_what_changed(
        watch, inbox, monkeypatch):
    monkeypatch.setattr(watcher_module, "poll_interval", lambda settle: 0.1)
    orders = make_orders(inbox, customers=20, orders=10)
    w, calls = watch(mode="polling", settle_seconds=0.1, rescan_seconds=3600)
    assert calls.wait(len(orders), POLL_DEADLINE)
    stats = w.poll_stats
    assert stats is not None
    polls(w, 2)  # each folder listed a second time, to trust its modification time
    listings, looks = stats.listings, stats.file_looks
    polls(w, 3)
    assert (stats.listings, stats.file_looks) == (listings, looks)
    assert stats.folders == 1 + 20 * 11 + 1  # every folder looked at, none listed, no file stat'ed

    write(orders[5] / "late.jpg")
    assert calls.wait(len(orders) + 1, POLL_DEADLINE)
    polls(w, 3)
    assert stats.listings - listings == 2  # the changed folder, listed twice
    assert stats.file_looks - looks == 2  # its photo and the new file, once each
    assert calls.names[-1] == "engrave-wood/customer-0/order-5/late.jpg"


def test_folders_unchanged_for_long_are_listed_once(watch, inbox, monkeypatch):
    monkeypatch.setattr(watcher_module, "poll_interval", lambda settle: 0.1)
    orders = make_orders(inbox, customers=10, orders=10)
    hour_ago = time.time() - 3600
    folders = [inbox, *(path for path in inbox.rglob("*") if path.is_dir())]
    for folder in folders:
        os.utime(folder, (hour_ago, hour_ago))
    w, calls = watch(mode="polling", settle_seconds=0.1, rescan_seconds=3600)
    assert calls.wait(len(orders), POLL_DEADLINE)
    polls(w, 2)
    assert w.poll_stats is not None and w.poll_stats.listings == len(folders)


def test_a_polled_file_that_leaves_and_comes_back_is_offered_again(
        watch, inbox, tmp_path, monkeypatch):
    monkeypatch.setattr(watcher_module, "poll_interval", lambda settle: 0.1)
    failed = tmp_path / "failed"
    failed.mkdir()
    w, calls = watch(mode="polling", settle_seconds=0.1, rescan_seconds=3600)
    photo = write(inbox / "A" / "B" / "photo.jpg", b"x" * 5000)
    assert calls.wait(1, POLL_DEADLINE)
    claimed = photo.rename(failed / "photo.jpg")  # claimed, failed...
    polls(w, 2)
    claimed.rename(photo)  # ...and moved back, the same file, within the de-duplication window
    assert calls.wait(2, POLL_DEADLINE)
    assert calls.names == ["A/B/photo.jpg", "A/B/photo.jpg"]


def test_polling_follows_no_link_into_a_folder(watch, inbox, tmp_path, monkeypatch):
    monkeypatch.setattr(watcher_module, "poll_interval", lambda settle: 0.1)
    outside = tmp_path / "outside"
    write(outside / "secret.jpg")
    w, calls = watch(mode="polling", settle_seconds=0.1, rescan_seconds=3600)
    polls(w, 1)
    (inbox / "A").mkdir()
    (inbox / "A" / "loop").symlink_to("..")
    (inbox / "A" / "away").symlink_to(outside)
    write(inbox / "A" / "marker.jpg")
    assert calls.wait(3, POLL_DEADLINE)
    polls(w, 3)
    assert sorted(calls.names) == ["A/away", "A/loop", "A/marker.jpg"]  # links offered as files


def test_a_long_rescan_offers_what_settled_on_the_way(inbox):
    """On a slow share a walk takes seconds: files that settle meanwhile do not wait for its end."""
    for n in range(20):
        write(inbox / f"A{n}" / "photo.jpg")
    batches: list[int] = []
    clock = Ticking()  # each look at the clock is a second later: a slow walk
    w = Watcher(inbox, WatchConfig(mode="events", settle_seconds=2),
                lambda paths: batches.append(len(paths)), clock=clock)
    assert w.rescan() == 20
    assert sum(batches) == 20
    assert len(batches) > 1  # some were offered before the walk had found them all


@pytest.mark.skipif(share_problem() is not None, reason=str(share_problem()))
def test_a_new_file_deep_in_a_network_share_is_taken(tmp_path):
    with share(tmp_path) as (server, mount):
        orders = make_orders(server / "inbox", customers=10, orders=10)  # another client's files
        inbox = mount / "inbox"
        calls = Calls(inbox)
        w = Watcher(inbox, WatchConfig(mode="auto", settle_seconds=0.1, rescan_seconds=3600),
                    calls)
        assert w.polling  # inotify sees nothing of what other clients write
        w.start()
        try:
            assert calls.wait(len(orders), POLL_DEADLINE)
            polls(w, 1)
            write(server / "inbox" / "engrave-wood" / "customer-7" / "order-3" / "dog.jpg",
                  b"x" * 3000)
            assert calls.wait(len(orders) + 1, POLL_DEADLINE)
            assert calls.seen[-1] == ("engrave-wood/customer-7/order-3/dog.jpg", 3000)
        finally:
            w.stop()


# -- decisions, without files ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        ".DS_Store", "._photo.jpg", ".photo.jpg.a8Zk3q", ".~lock.order.odt#", ".dropbox.cache",
        "~$order.docx", "photo.jpg.part", "PHOTO.JPG.PART", "photo.partial", "photo.crdownload",
        "photo.download", "scan.tmp", "photo.jpg.filepart", "notes.txt.swp", "notes.kate-swp",
        "photo.jpg.!sync", "Thumbs.db", "thumbs.db", "desktop.ini", "$RECYCLE.BIN", "@eaDir",
        "#recycle", "photo.jpg~", ".hotfolder",
    ],
)  # fmt: skip
def test_temporary_and_hidden_names_are_ignored(name):
    assert ignored(name, [])


@pytest.mark.parametrize(
    "name",
    ["photo.jpg", "resize=800x600,fill+grayscale+png", "Engrave Wood", "tmp.jpg", "part.png"],
)
def test_ordinary_names_are_not_ignored(name):
    assert not ignored(name, [])


def test_configured_patterns_are_ignored_whatever_the_case():
    assert ignored("camera.RAW", ["*.raw"])
    assert not ignored("camera.jpg", ["*.raw"])


MOUNTS = """\
sysfs /sys sysfs rw,nosuid 0 0
/dev/sda1 / ext4 rw,relatime 0 0
server:/export /mnt/nfs nfs4 rw,vers=4.2 0 0
/dev/sdb1 /mnt/nfs/local ext4 rw 0 0
tmpfs /mnt/nfsdata tmpfs rw 0 0
//nas/shop /srv/shop\\040share cifs rw,vers=3.0 0 0
u@host: /mnt/ssh fuse.sshfs rw 0 0
/dev/sdc1 /media/usb fuseblk rw 0 0
/dev/sda1 /srv/plain ext4 rw 0 0
server:/other /srv/plain nfs rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "network"),
    [
        ("/home/shop/inbox", False),
        ("/mnt/nfs", True),
        ("/mnt/nfs/inbox/A", True),
        ("/mnt/nfs/local/inbox", False),  # a local disk mounted inside the share
        ("/mnt/nfsdata/inbox", False),  # a prefix of the text, not of the path
        ("/srv/shop share/inbox", True),  # spaces are escaped in the mount table
        ("/mnt/ssh/inbox", True),
        ("/media/usb/inbox", False),
        ("/srv/plain/inbox", True),  # the later mount hides the earlier one
    ],
)
def test_network_filesystems_are_found_in_the_mount_table(path, network):
    assert is_network_fs(Path(path), mounts=MOUNTS) is network


def test_the_mount_of_a_path_is_the_longest_mount_point_holding_it():
    assert mount_of("/mnt/nfs/local/x", MOUNTS) == Mount("/mnt/nfs/local", "ext4", ("rw",))
    assert mount_of("/srv/shop share/x", MOUNTS) == Mount(
        "/srv/shop share", "cifs", ("rw", "vers=3.0")
    )
    assert mount_of("/x", "") == Mount("/", "", ())


@pytest.mark.parametrize(
    ("fstype", "options", "seconds"),
    [
        ("ext4", "rw", 0.0),
        ("nfs4", "rw,vers=4.2", 3.0),  # nfs(5): acregmin defaults to 3 s
        ("nfs", "rw,acregmin=10,acregmax=60", 10.0),
        ("nfs4", "rw,actimeo=7", 7.0),
        ("nfs4", "rw,noac", 0.0),
        ("cifs", "rw,vers=3.0", 1.0),  # mount.cifs: actimeo defaults to 1 s
        ("cifs", "rw,actimeo=5", 5.0),
        ("fuse.sshfs", "rw", 1.0),
    ],
)
def test_a_network_clients_attribute_cache_is_read_from_its_options(fstype, options, seconds):
    assert (
        attribute_cache_seconds(Mount("/mnt/share", fstype, tuple(options.split(",")))) == seconds
    )


def test_on_a_network_mount_settling_waits_out_the_attribute_cache(inbox, monkeypatch):
    table = f"/dev/sda1 / ext4 rw 0 0\nnas:/x {inbox} nfs4 rw,acregmin=5 0 0\n"
    monkeypatch.setattr(watcher_module, "MOUNTS", Path(inbox.parent / "mounts"))
    (inbox.parent / "mounts").write_text(table)
    w = Watcher(inbox, WatchConfig(settle_seconds=2), Calls(inbox))
    assert w.polling
    assert w.settle_seconds == 7.0


def test_this_machines_temporary_folder_is_local(tmp_path):
    assert not is_network_fs(tmp_path)


@pytest.mark.parametrize(
    ("mode", "network", "polls"),
    [
        ("auto", False, False),
        ("auto", True, True),
        ("events", True, False),
        ("polling", False, True),
    ],
)
def test_the_mode_decides_or_the_filesystem_does(mode, network, polls):
    assert polling_wanted(mode, network) is polls


@pytest.mark.parametrize(
    ("event", "actions"),
    [
        (FileClosedEvent("/i/a"), [(Action.CLOSED, "/i/a"), (Action.TAKE, "/i/a")]),
        (FileClosedNoWriteEvent("/i/a"), [(Action.CLOSED, "/i/a")]),
        (FileOpenedEvent("/i/a"), [(Action.OPENED, "/i/a")]),
        (FileCreatedEvent("/i/a"), [(Action.SETTLE, "/i/a")]),
        (FileCreatedEvent("/i/a", is_synthetic=True), [(Action.TAKE, "/i/a")]),
        (
            FileMovedEvent("/i/.a.tmp", "/i/a"),
            [(Action.FORGET, "/i/.a.tmp"), (Action.TAKE, "/i/a")],
        ),
        (FileMovedEvent("", "/i/a"), [(Action.TAKE, "/i/a")]),
        (FileMovedEvent("/i/a", ""), [(Action.FORGET, "/i/a")]),
        (FileDeletedEvent("/i/a"), [(Action.FORGET, "/i/a")]),
        (FileModifiedEvent("/i/a"), []),
        (DirCreatedEvent("/i/A"), []),
    ],
)
def test_each_event_asks_for_actions(event, actions):
    assert route(event) == actions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Ticking(Clock):
    """A clock that is a second later at each look."""

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


class Files:
    """A fake filesystem for the settler: path -> signature."""

    def __init__(self) -> None:
        self.state: dict[str, Signature] = {}
        self.looks = 0

    def __call__(self, path: str) -> Signature | None:
        self.looks += 1
        return self.state.get(path)


def test_a_file_that_keeps_growing_never_settles():
    clock, files = Clock(), Files()
    settler = Settler(2.0, clock)
    settler.wait("/i/a")
    for size in range(1, 20):
        files.state["/i/a"] = Signature(size * 100, size, 1)
        assert settler.due(files) == []
        clock.now += 1.0
    assert len(settler) == 1


def test_a_file_settles_when_unchanged_for_settle_seconds():
    clock, files = Clock(), Files()
    settler = Settler(2.0, clock)
    files.state["/i/a"] = Signature(100, 5, 1)
    settler.wait("/i/a")
    assert settler.due(files) == []  # first look
    clock.now += 1.9
    assert settler.due(files) == []
    clock.now += 0.1
    assert settler.due(files) == [("/i/a", Signature(100, 5, 1))]
    assert len(settler) == 0


def test_a_file_is_taken_settle_seconds_after_its_last_change_was_seen():
    clock, files = Clock(), Files()
    settler = Settler(2.0, clock)
    settler.wait("/i/a")
    for step in range(6):  # changes every 0.5 s, the settler looks every 0.5 s
        files.state["/i/a"] = Signature(100 * step, step, 1)
        assert settler.due(files) == []
        clock.now += 0.5
    last_change = clock.now - 0.5
    while not settler.due(files):
        clock.now += 0.5
    assert clock.now - last_change == 2.0


def test_files_that_look_settled_are_looked_at_only_when_due():
    clock, files = Clock(), Files()
    settler = Settler(2.0, clock)
    for n in range(100):  # what a rescan found
        files.state[f"/i/{n}"] = Signature(100, 5, n)
        settler.wait(f"/i/{n}", files.state[f"/i/{n}"])
    for _ in range(7):
        clock.now += 0.25
        assert settler.due(files) == []
    assert files.looks == 0
    clock.now += 0.25
    assert len(settler.due(files)) == 100
    assert files.looks == 100


def test_a_file_seen_by_a_scan_starts_settling_from_that_look():
    clock, files = Clock(), Files()
    settler = Settler(2.0, clock)
    files.state["/i/a"] = Signature(100, 5, 1)
    settler.wait("/i/a", Signature(100, 5, 1))
    clock.now += 2.0
    assert settler.due(files) == [("/i/a", Signature(100, 5, 1))]


def stat_result(mtime: float, ctime: float) -> os.stat_result:
    return os.stat_result((0o100644, 1, 1, 1, 0, 0, 100, mtime, mtime, ctime))


def test_a_files_rest_counts_from_its_last_change_of_content_or_times():
    assert rested_seconds(stat_result(mtime=990.0, ctime=995.0), now=1000.0) == 5.0
    # An SMB client sets the source's mtime while it still writes; the writes move the ctime.
    assert rested_seconds(stat_result(mtime=100.0, ctime=999.5), now=1000.0) == 0.5
    assert rested_seconds(stat_result(mtime=1010.0, ctime=1010.0), now=1000.0) == 0.0


def test_a_file_that_had_rested_before_the_first_look_is_due_at_the_next_look_if_unchanged():
    clock, files = Clock(), Files()
    settler = Settler(2.0, clock)
    for name in ("old", "grown", "young"):
        files.state[f"/i/{name}"] = Signature(100, 5, 1)
    settler.wait("/i/old", Signature(100, 5, 1), rested=2.0)
    settler.wait("/i/grown", Signature(50, 4, 1), rested=60.0)  # written to since that look
    settler.wait("/i/young", Signature(100, 5, 1), rested=1.5)
    assert settler.due(files) == [("/i/old", Signature(100, 5, 1))]
    clock.now += 0.5
    assert settler.due(files) == [("/i/young", Signature(100, 5, 1))]
    clock.now += 2.0
    assert settler.due(files) == [("/i/grown", Signature(100, 5, 1))]


def test_an_open_writer_holds_a_settled_file_until_it_closes():
    clock, files = Clock(), Files()
    settler = Settler(2.0, clock)
    files.state["/i/a"] = Signature(100, 5, 1)
    settler.closed("/i/a")  # the close of an open made before watching started counts for nothing
    settler.wait("/i/a", Signature(100, 5, 1))
    settler.opened("/i/a")
    settler.opened("/i/a")
    clock.now += 10
    settler.closed("/i/a")
    assert settler.due(files) == []
    settler.closed("/i/a")
    assert settler.due(files) == [("/i/a", Signature(100, 5, 1))]


def test_a_writer_unheard_of_for_long_is_presumed_gone():
    clock, files = Clock(), Files()
    settler = Settler(2.0, clock)
    files.state["/i/a"] = Signature(100, 5, 1)
    settler.wait("/i/a", Signature(100, 5, 1))
    settler.opened("/i/a")  # its close event was lost
    clock.now += watcher_module.STALE_OPEN_SECONDS - 1
    assert settler.due(files) == []
    clock.now += 1
    assert settler.due(files) == [("/i/a", Signature(100, 5, 1))]


def test_a_file_that_disappears_stops_waiting():
    clock, files = Clock(), Files()
    settler = Settler(0.0, clock)
    settler.wait("/i/a")
    settler.wait("/i/b")
    settler.forget("/i/b")
    assert settler.due(files) == []
    assert len(settler) == 0


def test_one_version_of_a_file_is_offered_once_within_the_window():
    clock = Clock()
    recent = Recent(10.0, clock)
    assert recent.first("/i/a", Signature(100, 5, 1))
    assert not recent.first("/i/a", Signature(100, 5, 1))
    assert recent.first("/i/a", Signature(200, 6, 1))  # a new version
    assert recent.first("/i/a", Signature(200, 6, 2))  # another copy of the same bytes
    assert recent.first("/i/b", Signature(200, 6, 1))
    clock.now += 10.0
    assert recent.first("/i/a", Signature(200, 6, 1))


def test_the_folders_an_inotify_observer_watches_are_read_from_the_kernel(watch, inbox):
    (inbox / "A" / "B").mkdir(parents=True)
    w, _ = watch()
    made_after = inbox / "C"
    made_after.mkdir()
    folders = [inbox, inbox / "A", inbox / "A" / "B", made_after]
    wait_until(lambda: {f.stat().st_ino for f in folders} <= watched_inodes(), DEADLINE,
               "every folder in the observer's watches")
    w.stop()
    assert not {f.stat().st_ino for f in folders} & watched_inodes()


def test_nothing_in_the_work_folder_or_an_ignored_folder_is_watched(watch, inbox):
    for folder in ("Wood/deep", ".hotfolder/job", "copy.tmp", "work"):
        (inbox / folder).mkdir(parents=True)
    _, calls = watch(settle_seconds=0.05, exclude=(inbox / "work",))
    (inbox / "Glass").mkdir()
    watched = [inbox, inbox / "Wood", inbox / "Wood" / "deep", inbox / "Glass"]
    wait_until(lambda: {f.stat().st_ino for f in watched} <= watched_inodes(), DEADLINE,
               "every folder that can hold inputs in the observer's watches")
    unwatched = [".hotfolder", ".hotfolder/job", "copy.tmp", "work"]
    assert not {(inbox / f).stat().st_ino for f in unwatched} & watched_inodes()
    for folder in unwatched:  # what claims and jobs do there raises no event
        write(inbox / folder / "photo.jpg")
    write(inbox / "Glass" / "photo.jpg")
    assert calls.wait(1)
    assert calls.names == ["Glass/photo.jpg"]


def test_a_folder_renamed_in_the_inbox_is_watched_under_its_new_name(watch, inbox):
    write(inbox / "Wood" / "old.jpg")
    _, calls = watch(settle_seconds=0.05, rescan_seconds=3600)
    assert calls.wait(1)
    (inbox / "Wood").rename(inbox / "Oak")
    (inbox / "Oak" / "old.jpg").unlink()
    write(inbox / "Oak" / "new.jpg")  # the old watch would name it Wood/new.jpg
    assert calls.wait(2)
    assert calls.names == ["Wood/old.jpg", "Oak/new.jpg"]


def test_a_folder_removed_and_made_again_is_watched_again(watch, inbox, caplog):
    caplog.set_level(logging.WARNING)
    write(inbox / "Wood" / "first.jpg")
    w, calls = watch(settle_seconds=0.05, rescan_seconds=3600)
    assert calls.wait(1)
    shutil.rmtree(inbox / "Wood")
    write(inbox / "Wood" / "second.jpg")
    assert calls.wait(2)
    assert calls.names == ["Wood/first.jpg", "Wood/second.jpg"]
    assert w.healthy
    assert "restarting" not in caplog.text


def test_folders_still_unwatched_a_moment_after_a_rescan_are_counted_and_said_once(
        tmp_path, caplog):
    folders = {}
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        folders[(tmp_path / name).stat().st_ino] = str(tmp_path / name)
    a, b, _ = folders
    watched = {a}
    clock, report = Clock(), tmp_path / "watcher.json"
    coverage = Coverage(tmp_path, 60.0, clock, report=report, watched=lambda: set(watched))
    caplog.set_level(logging.INFO, logger="hotfolder.watcher")

    coverage.suspect(folders)
    watched.add(b)  # watchdog got to it after the rescan
    coverage.confirm()
    assert coverage.unwatched == 0  # too early to tell
    clock.now += CONFIRM_SECONDS
    coverage.confirm()
    assert coverage.unwatched == 1
    assert read_report(report)["unwatched_folders"] == 1
    (tmp_path / "d").mkdir()
    folders[(tmp_path / "d").stat().st_ino] = str(tmp_path / "d")
    coverage.suspect(folders)
    clock.now += CONFIRM_SECONDS
    coverage.confirm()
    assert coverage.unwatched == 2
    assert read_report(report)["unwatched_folders"] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"1 folder(s) under {tmp_path} are not watched, most likely"
                                  " because the user's inotify watches ran out")

    watched.update(folders)
    coverage.suspect(folders)
    clock.now += CONFIRM_SECONDS
    coverage.confirm()
    assert coverage.unwatched == 0
    assert read_report(report) == {"unwatched_folders": 0}
    assert caplog.records[-1].getMessage() == f"every folder under {tmp_path} is watched again"
