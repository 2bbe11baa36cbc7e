"""Duplicate detection: the same content dropped again under the same recipe is not processed again.

A result is found by a key made of the input's SHA-256 and a hash of the plan's
steps and output settings (canonical JSON) and of hotfolder's version, so a changed
recipe or an upgrade never reuses an old result. Results live in state/: an SQLite
index (`cache.db`) and the encoded outputs as files (`cache/ab/<key>.<n>`), except
results of at most INLINE_BYTES, whose outputs are kept in their index row: a new file
costs more to make than such a result's bytes in the index. The cache
is bounded in bytes (the total kept up to date by triggers, so that a store does not
sum every result) and evicts the least recently used results first;
`hotfolder cache clear` empties it. Outputs are written atomically (hotfolder.files)
but not synced, nor is the index at each change: a result lost with the power is only a
miss. Each process keeps one connection to the index.
Each stored output carries its SHA-256, so a damaged one is a miss, never a
wrong result. A duplicate's sidecar names the first input only when it was in the same
folder; from another folder it gets an opaque reference (`result <key prefix>`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hotfolder.config import CacheConfig, LimitsConfig
from hotfolder.engine import Output, Rendered, output_name, render
from hotfolder.files import write_atomic
from hotfolder.journal import ProcessConnection
from hotfolder.names import loaded_rel, stored_rel
from hotfolder.recipes import Plan, canonical

log = logging.getLogger("hotfolder.cache")

REFERENCE_CHARS = 12  # of the key, in the `duplicate_of` of a duplicate in another folder
# Results of at most this many bytes keep their outputs in the index, not in files.
INLINE_BYTES = 64 * 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    origin TEXT NOT NULL,
    sidecar TEXT NOT NULL,
    outputs TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    last_used REAL NOT NULL,
    data BLOB  -- the outputs' bytes in order, for a result kept in the index (else NULL)
);
CREATE INDEX IF NOT EXISTS results_last_used ON results (last_used);
CREATE TABLE IF NOT EXISTS held (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    results INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO held SELECT 1, COUNT(*), COALESCE(SUM(bytes), 0) FROM results;
CREATE TRIGGER IF NOT EXISTS held_added AFTER INSERT ON results BEGIN
    UPDATE held SET results = results + 1, bytes = bytes + new.bytes;
END;
CREATE TRIGGER IF NOT EXISTS held_removed AFTER DELETE ON results BEGIN
    UPDATE held SET results = results - 1, bytes = bytes - old.bytes;
END;
"""


def cache_key(input_sha256: str, plan: Plan) -> str:
    """The key of a result: the input's content, what the plan does to it, and our version."""
    return hashlib.sha256(canonical({"input": input_sha256, "recipe": plan.digest})).hexdigest()


@dataclass(frozen=True)
class Hit:
    """A stored result and what it was first made for (`origin`, e.g. the first input's path)."""

    origin: str
    rendered: Rendered
    key: str

    def reference(self, rel: str) -> str:
        """How the sidecar of a duplicate at `rel` names this result: the first input's path
        when it is in the same folder, else an opaque reference (no other folder's names)."""
        if PurePosixPath(self.origin).parent == PurePosixPath(rel).parent:
            return self.origin
        return f"result {self.key[:REFERENCE_CHARS]}"

    def for_input(self, rel: str, plan: Plan) -> Rendered:
        """The result renamed for another input at `rel`; the sidecar says it is a duplicate."""
        name = PurePosixPath(rel).name
        sidecar = copy.deepcopy(self.rendered.sidecar)
        out = sidecar.get("output", {})
        old_stem = Path(self.rendered.main.name).stem
        main = output_name(
            plan.output.name, stem=Path(name).stem, ext=Path(self.rendered.main.name).suffix[1:],
            recipe=plan.name, sha8=str(sidecar.get("input", {}).get("sha256", ""))[:8],
            width=int(out.get("width", 0)), height=int(out.get("height", 0)),
        )
        new_stem = Path(main).stem
        outputs = [Output(main, self.rendered.main.data, self.rendered.main.media_type)]
        names = {self.rendered.main.name: main}
        for extra in self.rendered.outputs[1:]:
            renamed = new_stem + extra.name[len(old_stem):]
            names[extra.name] = renamed
            outputs.append(Output(renamed, extra.data, extra.media_type))
        sidecar.setdefault("input", {})["name"] = name
        sidecar["recipe"] = plan.name
        if out:
            out["name"] = main
        for extra_record in sidecar.get("extras", []):
            extra_record["name"] = names.get(extra_record.get("name"), extra_record.get("name"))
        sidecar.pop("timings", None)
        sidecar["duplicate_of"] = self.reference(rel)
        return Rendered(outputs, sidecar)


class ResultCache:
    """Results by key in `state/cache.db` and `state/cache/`, at most `max_bytes` of outputs."""

    def __init__(self, state: Path, max_bytes: int,
                 clock: Callable[[], float] = time.time, *,
                 inline_bytes: int = INLINE_BYTES) -> None:
        self.db = state / "cache.db"
        self.folder = cache_folder(state)
        self.max_bytes = max_bytes
        self.clock = clock
        self.inline_bytes = inline_bytes
        self.folder.mkdir(parents=True, exist_ok=True)
        self._db = ProcessConnection(
            lambda: sqlite3.connect(self.db, timeout=30, isolation_level=None,
                                    check_same_thread=False))
        conn = sqlite3.connect(self.db, timeout=30)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
            with conn:  # one transaction: two processes opening an older index add it once
                conn.execute("BEGIN IMMEDIATE")
                columns = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
                if "data" not in columns:  # an index made before results were kept in it
                    conn.execute("ALTER TABLE results ADD COLUMN data BLOB")
        finally:
            conn.close()

    def _path(self, key: str, index: int) -> Path:
        return self.folder / key[:2] / f"{key}.{index}"

    def get(self, key: str) -> Hit | None:
        """The stored result for key (and it becomes the most recently used), or None."""
        with self._db.lock:  # a read: a miss, the common case, takes no write lock
            row = self._db.get().execute(
                "SELECT origin, sidecar, outputs, data FROM results WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        with self._db.transaction() as conn:
            conn.execute("UPDATE results SET last_used = ? WHERE key = ?", (self.clock(), key))
        origin, sidecar, listing, inline = row
        outputs, at = [], 0
        for index, item in enumerate(json.loads(listing)):
            if inline is not None:
                data = inline[at:at + item["size"]]
                at += item["size"]
            else:
                try:
                    data = self._path(key, index).read_bytes()
                except FileNotFoundError:
                    data = b""
            if hashlib.sha256(data).hexdigest() != item["sha256"]:
                self.discard(key)  # removed by another worker's eviction, or damaged
                return None
            outputs.append(Output(item["name"], data, item["media_type"]))
        return Hit(loaded_rel(origin), Rendered(outputs, json.loads(sidecar)), key)

    def put(self, key: str, rendered: Rendered, origin: str) -> None:
        """Store a result, then evict the least recently used until the cache fits."""
        size = sum(len(o.data) for o in rendered.outputs)
        if size > self.max_bytes:
            return
        inline = size <= self.inline_bytes
        listing = []
        for index, output in enumerate(rendered.outputs):
            if not inline:
                path = self._path(key, index)
                path.parent.mkdir(exist_ok=True)
                write_atomic(path, output.data, sync=False)  # its SHA-256 tells a damaged one
            listing.append({"name": output.name, "media_type": output.media_type,
                            "size": len(output.data),
                            "sha256": hashlib.sha256(output.data).hexdigest()})
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM results WHERE key = ?", (key,))  # counted out of held
            conn.execute(
                "INSERT INTO results (key, origin, sidecar, outputs, bytes, last_used, data)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, stored_rel(origin), json.dumps(rendered.sidecar), json.dumps(listing), size,
                 self.clock(), b"".join(o.data for o in rendered.outputs) if inline else None),
            )
            evicted = self._evict(conn)
        for old_key, count in evicted:
            self._remove_files(old_key, count)

    def _evict(self, conn: sqlite3.Connection) -> list[tuple[str, int]]:
        """Delete index rows, oldest use first, until the total fits; returns (key, outputs)."""
        total = self._held(conn)[1]
        evicted = []
        rows = conn.execute("SELECT key, bytes, outputs, data IS NULL FROM results"
                            " ORDER BY last_used")
        for key, size, listing, in_files in rows:  # read only as far as needed, along the index
            if total <= self.max_bytes:
                break
            evicted.append((key, len(json.loads(listing)) if in_files else 0))
            total -= size
        conn.executemany("DELETE FROM results WHERE key = ?", [(key,) for key, _ in evicted])
        return evicted

    def _remove_files(self, key: str, count: int) -> None:
        for index in range(count):
            self._path(key, index).unlink(missing_ok=True)

    def discard(self, key: str) -> None:
        """Forget one result."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT outputs, data IS NULL FROM results WHERE key = ?",
                               (key,)).fetchone()
            conn.execute("DELETE FROM results WHERE key = ?", (key,))
        if row is not None and row[1]:
            self._remove_files(key, len(json.loads(row[0])))

    @staticmethod
    def _held(conn: sqlite3.Connection) -> tuple[int, int]:
        """(results, bytes) held, as the triggers keep them: no scan of the results."""
        row = conn.execute("SELECT results, bytes FROM held").fetchone()
        return int(row[0]), int(row[1])

    def usage(self) -> tuple[int, int]:
        """(results, bytes) held now."""
        with self._db.transaction() as conn:
            return self._held(conn)

    def clear(self) -> tuple[int, int]:
        """Remove every result (also files left by a crash); returns what was held."""
        with self._db.transaction() as conn:
            held = self._held(conn)
            conn.execute("DELETE FROM results")
            for sub in self.folder.iterdir():
                if sub.is_dir():
                    shutil.rmtree(sub)
        return held


def cache_folder(state: Path) -> Path:
    """Where the cache keeps the outputs of the results it holds."""
    return state / "cache"


def stored_results(cfg: CacheConfig, state: Path) -> ResultCache:
    """The result cache kept in a root's state folder, whether duplicate detection is on or off."""
    return ResultCache(state, cfg.max_bytes)


def open_cache(cfg: CacheConfig, state: Path) -> ResultCache | None:
    """The result cache of a root, or None when duplicate detection is off."""
    return stored_results(cfg, state) if cfg.enabled and cfg.max_bytes > 0 else None


def look_up(cache: ResultCache, sha256: str, plan: Plan, origin: str) -> tuple[str, Hit | None]:
    """The key of the plan's result for content of SHA-256 `sha256` (the file at `origin`),
    and the result kept under it, if any."""
    key = cache_key(sha256, plan)
    try:
        return key, cache.get(key)
    except (OSError, sqlite3.Error) as exc:
        log.warning("the result cache cannot be read, %s is processed: %s", origin, exc)
        return key, None


def render_cached(cache: ResultCache | None, data: bytes, name: str, plan: Plan, *,
                  origin: str, limits: LimitsConfig, sha256: str | None = None,
                  found: tuple[str, Hit | None] | None = None) -> Rendered:
    """The plan's result for `data` (of SHA-256 `sha256` when the caller has it): reused for
    a duplicate, else rendered and kept. `found` is what `look_up` found, when the caller
    looked already."""
    sha256 = sha256 or hashlib.sha256(data).hexdigest()
    if cache is None:
        return render(data, name, plan, limits, sha256)
    key, hit = found or look_up(cache, sha256, plan, origin)
    if hit is not None:
        log.info("%s is a duplicate of %s (%s), its result is reused", origin, hit.origin,
                 hit.reference(origin))
        return hit.for_input(origin, plan)
    rendered = render(data, name, plan, limits, sha256)
    try:
        cache.put(key, rendered, origin)
    except (OSError, sqlite3.Error) as exc:
        log.warning("the result cache cannot keep the result of %s: %s", origin, exc)
    return rendered
