"""The journal in SQLite (`state/journal.db`), for a service on one machine.

Every process (the service, its workers, `status`) opens its own connection to the
same file; a forked child drops the connection it inherited and opens a new one.

Only waits and failures are synced to disk at once (synchronous=FULL). The other
changes survive a crash of any process (WAL) but may be lost with the power: a job
then runs again, finds what it already did (outputs by content, the original gone
from the work folder), and ends without doing it twice. Syncing them too would hold
the write lock for a disk flush three times per job, and intake waits for that lock.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from hotfolder.journal import ENDED, Claim, Job, ProcessConnection, pid_exists
from hotfolder.names import loaded_rel, stored_rel

SCHEMA = """
create table if not exists jobs (
    id text primary key,
    rel text not null,
    state text not null,
    attempts integer not null default 0,
    waits integer not null default 0,
    pid integer,
    kind text,
    size integer,
    reason text,
    outputs text,
    created real not null,
    started real,
    updated real not null,
    next_try real
);
create index if not exists jobs_state on jobs (state, updated);
"""


def _job(row: sqlite3.Row) -> Job:
    data = dict(row)
    data["outputs"] = json.loads(data["outputs"]) if data["outputs"] is not None else None
    data["rel"] = loaded_rel(data["rel"])
    return Job(**data)


class SqliteJournal:
    """The jobs table in one SQLite file, safe to use from threads and forked processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = ProcessConnection(self._open)
        with self._db.lock:
            self._db.get().executescript(SCHEMA)

    @contextmanager
    def fork_guard(self) -> Iterator[None]:
        """Hold the lock every use of this process's connection holds."""
        with self._db.lock:
            yield

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("pragma journal_mode=wal")
        return conn

    def _tx(self, *, durable: bool = True) -> AbstractContextManager[sqlite3.Connection]:
        """One write transaction; `durable=False` skips the fsync (the work folder has it)."""
        return self._db.transaction(durable=durable)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._db.lock:
            return list(self._db.get().execute(sql, params))

    def close(self) -> None:
        """Close this process's connection."""
        self._db.close()

    def add(self, job_id: str, rel: str, *, kind: str | None, size: int | None,
            state: str = "queued", reason: str | None = None) -> None:
        """Record a claimed file (or one refused at intake, with state failed)."""
        self.add_all([Claim(job_id, rel, kind, size, state, reason)])

    def add_all(self, claims: Sequence[Claim]) -> None:
        """Record many claims in one transaction."""
        now = time.time()
        with self._tx(durable=False) as conn:
            conn.executemany(
                "insert or ignore into jobs (id, rel, state, kind, size, reason, created, updated)"
                " values (?, ?, ?, ?, ?, ?, ?, ?)",
                [(c.id, stored_rel(c.rel), c.state, c.kind, c.size, c.reason, now, now)
                 for c in claims],
            )

    def get(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        rows = self._query("select * from jobs where id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def start(self, job_id: str, pid: int) -> Job | None:
        """Mark the job running in worker `pid`; None when it is not queued or waiting."""
        now = time.time()
        with self._tx(durable=False) as conn:
            rows = conn.execute(
                "update jobs set state = 'running', attempts = attempts + 1, pid = ?,"
                " started = ?, updated = ?, next_try = null"
                " where id = ? and state in ('queued', 'waiting') returning *",
                (pid, now, now, job_id),
            ).fetchall()
        return _job(rows[0]) if rows else None

    def requeue(self, job_id: str, *, forgive: bool = False) -> None:
        """Put a running job back in the queue (`forgive`: this start does not count)."""
        with self._tx(durable=False) as conn:
            conn.execute(
                "update jobs set state = 'queued', pid = null, updated = ?,"
                " attempts = max(attempts - ?, 0) where id = ? and state = 'running'",
                (time.time(), 1 if forgive else 0, job_id),
            )

    def wait(self, job_id: str, reason: str, delay: float) -> None:
        """Park the job until `delay` seconds from now because `reason` is unavailable."""
        now = time.time()
        with self._tx() as conn:
            conn.execute(
                "update jobs set state = 'waiting', reason = ?, attempts = 0, waits = waits + 1,"
                " pid = null, updated = ?, next_try = ? where id = ? and state = 'running'",
                (reason, now, now + delay, job_id),
            )

    def wake(self, reason: str | None = None) -> list[Job]:
        """Waiting jobs made queued: those due now, or all waiting for `reason`."""
        now = time.time()
        with self._tx() as conn:
            params: tuple[float | str, ...]
            if reason is None:
                where, params = "state = 'waiting' and next_try <= ?", (now,)
            else:
                where, params = "state = 'waiting' and reason = ?", (reason,)
            rows = list(conn.execute(
                f"select * from jobs where {where} order by created", params))  # noqa: S608
            conn.execute(
                f"update jobs set state = 'queued', updated = ? where {where}",  # noqa: S608
                (now, *params),
            )
        return [replace(_job(r), state="queued", updated=now) for r in rows]

    def delivered(self, job_id: str, outputs: list[str]) -> None:
        """Record that the outputs are stored (a retry then only finishes the original)."""
        self.delivered_all({job_id: outputs})

    def delivered_all(self, outputs: Mapping[str, list[str]]) -> None:
        """`delivered` for many jobs, in one transaction."""
        now = time.time()
        with self._tx(durable=False) as conn:
            conn.executemany("update jobs set outputs = ?, updated = ? where id = ?",
                             [(json.dumps(stored), now, job_id)
                              for job_id, stored in outputs.items()])

    def finish(self, job_id: str, state: str, reason: str | None = None) -> bool:
        """End an unfinished job as done, failed or quarantined; False if it had ended already."""
        return self._finish([job_id], state, reason) == 1

    def finish_all(self, job_ids: Sequence[str], state: str) -> None:
        """`finish` for many jobs, in one transaction."""
        self._finish(job_ids, state, None)

    def _finish(self, job_ids: Sequence[str], state: str, reason: str | None) -> int:
        """How many of the jobs were unfinished and are ended now."""
        if state not in ENDED:
            raise ValueError(f"not an end state: {state}")
        now = time.time()
        with self._tx(durable=state != "done") as conn:
            cur = conn.executemany(
                "update jobs set state = ?, reason = ?, pid = null, updated = ?, next_try = null"
                " where id = ? and state in ('queued', 'running', 'waiting')",
                [(state, reason, now, job_id) for job_id in job_ids],
            )
            return cur.rowcount

    def in_state(self, *states: str) -> list[Job]:
        """The jobs in any of these states, oldest first."""
        marks = ",".join("?" * len(states))
        rows = self._query(
            f"select * from jobs where state in ({marks}) order by created", states  # noqa: S608
        )
        return [_job(r) for r in rows]

    def ids(self) -> set[str]:
        """Every job id the journal knows."""
        return {r[0] for r in self._query("select id from jobs")}

    def counts(self) -> dict[str, int]:
        """Number of jobs by state."""
        return {r[0]: r[1] for r in self._query("select state, count(*) from jobs group by state")}

    def waiting_counts(self) -> dict[str, int]:
        """Number of waiting jobs by reason."""
        rows = self._query(
            "select reason, count(*) from jobs where state = 'waiting' group by reason"
        )
        return {r[0]: r[1] for r in rows}

    def recent(self, state: str, limit: int = 10) -> list[Job]:
        """The latest jobs that ended in `state`, newest first."""
        rows = self._query(
            "select * from jobs where state = ? order by updated desc limit ?", (state, limit)
        )
        return [_job(r) for r in rows]

    def alive(self, job: Job) -> bool:
        """Whether the worker process holding a running job still exists (on this machine)."""
        return pid_exists(job.pid)

    def forget(self, job_id: str) -> bool:
        """Drop one ended job."""
        with self._tx(durable=False) as conn:
            cur = conn.execute(
                "delete from jobs where id = ? and state in ('done', 'failed', 'quarantined')",
                (job_id,))
            return cur.rowcount == 1

    def forget_ended(self, before: float) -> int:
        """Drop rows of jobs that ended before `before` (epoch seconds)."""
        with self._tx(durable=False) as conn:
            cur = conn.execute(
                "delete from jobs where state in ('done', 'failed', 'quarantined')"
                " and updated < ?", (before,)
            )
            return cur.rowcount

