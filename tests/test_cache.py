"""Duplicate detection: results found by content and recipe, reused under new names, bounded."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from helpers import drop, image_bytes, wait_until
from hotfolder.cache import INLINE_BYTES, ResultCache, cache_key, open_cache, render_cached
from hotfolder.cli import main
from hotfolder.config import CacheConfig, LimitsConfig
from hotfolder.engine import Output, Rendered, render
from hotfolder.recipes import Plan, combine, parse_chain
from service_helpers import Daemon, make_root, start


def plan(chain: str, name: str = "thumbs") -> Plan:
    return combine([(name, "inline", parse_chain(chain))])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def result(size: int, name: str = "photo.png") -> Rendered:
    return Rendered([Output(name, bytes(size), "image/png")],
                    {"input": {"name": "photo.jpg", "sha256": "ab" * 32},
                     "output": {"name": name, "width": 4, "height": 3}})


@pytest.fixture
def clock() -> itertools.count[float]:
    return itertools.count(1000.0)


@pytest.fixture
def cache(tmp_path: Path, clock: itertools.count[float]) -> ResultCache:
    """A small cache that keeps every result in files."""
    return ResultCache(tmp_path / "state", max_bytes=250, clock=lambda: next(clock),
                       inline_bytes=0)


def stored_files(cache: ResultCache) -> list[str]:
    return sorted(p.name for p in cache.folder.rglob("*") if p.is_file())


def test_key_follows_content_steps_and_output_settings() -> None:
    base = cache_key("a" * 64, plan("resize=64x64+png"))

    assert cache_key("a" * 64, plan("resize=64x64+png")) == base
    assert cache_key("a" * 64, plan("resize=64x64+png", name="Other Folder")) == base
    assert cache_key("b" * 64, plan("resize=64x64+png")) != base
    assert cache_key("a" * 64, plan("resize=64x65+png")) != base
    assert cache_key("a" * 64, plan("resize=64x64+grayscale+png")) != base
    assert cache_key("a" * 64, plan("resize=64x64+jpeg")) != base


def test_duplicate_reuses_the_result_under_the_new_name(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "state", max_bytes=10**6)
    thumbs = plan("resize=64x64+grayscale+thumbnail=16+png")
    data = image_bytes("JPEG", (120, 90))
    first = render(data, "photo.jpg", thumbs, LimitsConfig())
    key = cache_key(sha(data), thumbs)
    assert cache.get(key) is None

    cache.put(key, first, origin="Engrave/photo.jpg")
    hit = cache.get(key)
    assert hit is not None
    again = hit.for_input("Engrave/copy of photo.JPG",
                          plan("resize=64x64+grayscale+thumbnail=16+png", name="wood"))

    assert [o.name for o in again.outputs] == ["copy of photo.png", "copy of photo_thumb.jpg"]
    assert [o.data for o in again.outputs] == [o.data for o in first.outputs]
    assert [o.media_type for o in again.outputs] == ["image/png", "image/jpeg"]
    assert again.sidecar["duplicate_of"] == "Engrave/photo.jpg"
    assert again.sidecar["input"] == {**first.sidecar["input"], "name": "copy of photo.JPG"}
    assert again.sidecar["output"] == {**first.sidecar["output"], "name": "copy of photo.png"}
    assert again.sidecar["extras"][0]["name"] == "copy of photo_thumb.jpg"
    assert again.sidecar["recipe"] == "wood"
    assert again.sidecar["steps"] == first.sidecar["steps"]
    assert "timings" not in again.sidecar
    assert first.sidecar["input"]["name"] == "photo.jpg"  # the stored result is untouched


def test_least_recently_used_results_are_evicted_by_bytes(cache: ResultCache) -> None:
    cache.put("k1", result(100), origin="one.jpg")
    cache.put("k2", result(100), origin="two.jpg")
    assert cache.get("k1") is not None  # k1 is now more recent than k2

    cache.put("k3", result(100), origin="three.jpg")

    assert cache.get("k2") is None
    assert cache.get("k1") is not None
    assert cache.get("k3") is not None
    assert cache.usage() == (2, 200)
    assert stored_files(cache) == ["k1.0", "k3.0"]


def test_the_bytes_held_follow_every_store_replacement_removal_and_eviction(
        cache: ResultCache) -> None:
    cache.put("k1", result(100), origin="one.jpg")
    cache.put("k1", result(60), origin="one.jpg")  # stored again: counted once, new size
    cache.put("k2", result(50), origin="two.jpg")
    assert cache.usage() == (2, 110)
    cache.discard("k2")
    assert cache.usage() == (1, 60)
    cache.put("k3", result(120), origin="three.jpg")
    cache.put("k4", result(120), origin="four.jpg")  # k1 evicted: 240 of 250
    assert cache.usage() == (2, 240)
    assert stored_files(cache) == ["k3.0", "k4.0"]
    cache.clear()
    assert cache.usage() == (0, 0)


def test_result_larger_than_the_cache_is_not_kept(cache: ResultCache) -> None:
    cache.put("big", result(251), origin="big.jpg")

    assert cache.get("big") is None
    assert cache.usage() == (0, 0)
    assert stored_files(cache) == []


def test_damaged_result_is_a_miss_and_forgotten(cache: ResultCache) -> None:
    cache.put("k1", result(100), origin="one.jpg")
    (cache.folder / "k1"[:2] / "k1.0").write_bytes(b"\x01" * 100)

    assert cache.get("k1") is None
    assert cache.usage() == (0, 0)
    assert stored_files(cache) == []


def two_outputs(main: bytes, extra: bytes) -> Rendered:
    return Rendered([Output("photo.png", main, "image/png"),
                     Output("photo_thumb.jpg", extra, "image/jpeg")], {"output": {}})


def test_small_results_are_kept_in_the_index_and_large_ones_in_files(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "state", max_bytes=10**6)
    small = two_outputs(b"a" * 100, b"b" * 30)
    large = two_outputs(bytes(INLINE_BYTES), b"c")
    cache.put("k1", small, origin="one.jpg")
    cache.put("k2", large, origin="two.jpg")

    assert stored_files(cache) == ["k2.0", "k2.1"]
    for key, stored in (("k1", small), ("k2", large)):
        hit = ResultCache(tmp_path / "state", max_bytes=10**6).get(key)
        assert hit is not None
        assert hit.rendered.outputs == stored.outputs
    assert cache.usage() == (2, 130 + INLINE_BYTES + 1)
    cache.discard("k1")
    cache.discard("k2")
    assert cache.usage() == (0, 0)
    assert stored_files(cache) == []


def test_a_damaged_result_in_the_index_is_a_miss_and_forgotten(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "state", max_bytes=10**6)
    cache.put("k1", two_outputs(b"a" * 100, b"b" * 30), origin="one.jpg")
    with sqlite3.connect(cache.db) as db:
        db.execute("UPDATE results SET data = ? WHERE key = 'k1'", (b"a" * 99 + b"x" * 31,))

    assert cache.get("k1") is None
    assert cache.usage() == (0, 0)


def test_an_index_made_before_small_results_were_kept_in_it_still_serves(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "cache" / "k1"[:2]).mkdir(parents=True)
    (state / "cache" / "k1"[:2] / "k1.0").write_bytes(b"old")
    with sqlite3.connect(state / "cache.db") as db:  # the table as it was, one result in files
        db.execute("CREATE TABLE results (key TEXT PRIMARY KEY, origin TEXT NOT NULL,"
                   " sidecar TEXT NOT NULL, outputs TEXT NOT NULL, bytes INTEGER NOT NULL,"
                   " last_used REAL NOT NULL)")
        listing = [{"name": "old.png", "media_type": "image/png", "sha256": sha(b"old")}]
        db.execute("INSERT INTO results VALUES ('k1', 'old.jpg', '{}', ?, 3, 1.0)",
                   (json.dumps(listing),))

    cache = ResultCache(state, max_bytes=10**6)
    cache.put("k2", result(10), origin="new.jpg")

    old = cache.get("k1")
    assert old is not None and old.rendered.outputs == [Output("old.png", b"old", "image/png")]
    new = cache.get("k2")
    assert new is not None and new.rendered.outputs == result(10).outputs
    assert cache.usage() == (2, 13)
    assert stored_files(cache) == ["k1.0"]


def test_clear_removes_everything_also_crash_leftovers(cache: ResultCache) -> None:
    cache.put("k1", result(100), origin="one.jpg")
    cache.put("k2", result(50), origin="two.jpg")
    leftover = cache.folder / "ff" / ".ff00.0.123.tmp"
    leftover.parent.mkdir()
    leftover.write_bytes(b"partial")

    assert cache.clear() == (2, 150)

    assert cache.get("k1") is None
    assert cache.usage() == (0, 0)
    assert stored_files(cache) == []


def test_results_survive_a_new_cache_object(tmp_path: Path) -> None:
    ResultCache(tmp_path, max_bytes=1000).put("k1", result(10), origin="one.jpg")

    hit = ResultCache(tmp_path, max_bytes=1000).get("k1")

    assert hit is not None
    assert hit.origin == "one.jpg"
    assert hit.rendered.outputs == [Output("photo.png", bytes(10), "image/png")]


def test_open_cache_follows_the_configuration(tmp_path: Path) -> None:
    assert open_cache(CacheConfig(enabled=False), tmp_path) is None
    assert open_cache(CacheConfig(max_mb=0), tmp_path) is None
    cache = open_cache(CacheConfig(max_mb=2), tmp_path)
    assert cache is not None
    assert cache.max_bytes == 2 * 1024 * 1024
    assert (tmp_path / "cache.db").is_file()


def test_cache_command_shows_and_clears(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    assert main(["init", str(root)]) == 0
    config = str(root / "hotfolder.yaml")
    cache = ResultCache(root / "state", max_bytes=10**6)
    cache.put("k1", result(3 * 1024 * 1024 // 10), origin="one.jpg")
    capsys.readouterr()

    assert main(["cache", "-c", config]) == 0
    assert capsys.readouterr().out == (
        "1 cached results, 0.3 MB of 500 MB (duplicate detection on)\n")
    assert main(["cache", "clear", "-c", config]) == 0
    assert capsys.readouterr().out == (
        f"removed 1 cached results (0.3 MB) from {root / 'state' / 'cache'}\n")
    assert cache.usage() == (0, 0)
    assert stored_files(cache) == []


def test_render_cached_processes_once_and_survives_a_broken_cache(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = ResultCache(tmp_path / "state", max_bytes=10**6, inline_bytes=0)  # in files
    recipe = plan("resize=32x32+png")
    data = image_bytes("JPEG", (80, 60), seed=3)

    first = render_cached(cache, data, "a.jpg", recipe, origin="A/a.jpg", limits=LimitsConfig())
    second = render_cached(cache, data, "b.jpg", recipe, origin="A/b.jpg", limits=LimitsConfig())
    assert "duplicate_of" not in first.sidecar
    assert second.sidecar["duplicate_of"] == "A/a.jpg"
    assert second.main.name == "b.png" and second.main.data == first.main.data

    shutil.rmtree(cache.folder)
    cache.folder.write_bytes(b"not a folder")  # the cache can no longer store anything
    other = image_bytes("JPEG", (80, 60), seed=4)
    third = render_cached(cache, other, "c.jpg", recipe, origin="A/c.jpg", limits=LimitsConfig())
    assert third.main.name == "c.png" and "duplicate_of" not in third.sidecar
    assert "the result cache cannot keep the result of A/c.jpg" in caplog.text
    assert render_cached(None, other, "d.jpg", recipe, origin="A/d.jpg",
                         limits=LimitsConfig()).main.data == third.main.data


def test_the_service_reuses_the_result_of_a_duplicate(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root")
    root = config.parent
    (root / "recipes" / "gray.yaml").write_text("steps: [grayscale]\noutput: {format: png}\n"
                                                "sidecar: true\n")
    start(daemons, config)
    data = image_bytes("JPEG", (160, 120), seed=5)

    drop(root, "Gray/photo.jpg", data)
    first = root / "outbox" / "Gray" / "photo.png"
    wait_until(first.with_name("photo.png.json").exists, 20, "the first result")
    drop(root, "Gray/same photo.jpg", data)
    again = root / "outbox" / "Gray" / "same photo.png"
    wait_until(again.with_name("same photo.png.json").exists, 20, "the duplicate's result")

    assert again.read_bytes() == first.read_bytes()
    sidecar = json.loads(again.with_name("same photo.png.json").read_text())
    assert sidecar["duplicate_of"] == "Gray/photo.jpg"
    assert sidecar["input"]["name"] == "same photo.jpg"
    assert sidecar["output"]["name"] == "same photo.png"
    assert "duplicate_of" not in json.loads(first.with_name("photo.png.json").read_text())
    wait_until((root / "archive" / "Gray" / "same photo.jpg").exists, 10, "the archived copy")
    assert ResultCache(root / "state", max_bytes=10**6).usage()[0] == 1


def test_a_duplicate_in_another_folder_learns_no_name_of_the_first(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root")
    root = config.parent
    for name in ("gray", "grey"):  # two folders, one result: the same steps and output
        (root / "recipes" / f"{name}.yaml").write_text(
            "steps: [grayscale]\noutput: {format: png}\nsidecar: true\n")
    start(daemons, config)
    data = image_bytes("JPEG", (160, 120), seed=6)
    drop(root, "Gray/Customer photo.jpg", data)
    wait_until((root / "outbox" / "Gray" / "Customer photo.png.json").exists, 20,
               "the first result")
    drop(root, "Grey/mine.jpg", data)
    sidecar_path = root / "outbox" / "Grey" / "mine.png.json"
    wait_until(sidecar_path.exists, 20, "the duplicate's result")

    text = sidecar_path.read_text()
    assert "Customer" not in text and "Gray" not in text
    assert re.fullmatch(r"result [0-9a-f]{12}", json.loads(text)["duplicate_of"])
    assert (root / "outbox" / "Grey" / "mine.png").read_bytes() == (
        root / "outbox" / "Gray" / "Customer photo.png").read_bytes()


def test_a_plans_part_of_the_key_is_made_once_per_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    made = plan("resize=64x64+png")
    first = cache_key("a" * 64, made)
    described: list[int] = []
    monkeypatch.setattr(type(made), "describe", lambda self: described.append(1) or [])
    # Each job's key is looked up from its content and its (kept) plan: the steps and output
    # settings are not described and serialized again for every file.
    assert cache_key("a" * 64, made) == first
    assert cache_key("b" * 64, made) != first
    assert described == []
