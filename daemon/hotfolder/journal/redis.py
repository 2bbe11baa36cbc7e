"""The journal in Redis, for a service scaled out over machines (`queue.url: redis://...`).

The same record as the SQLite journal, kept where every machine reaches it: one hash
per job (`hotfolder:job:<id>`), one sorted set of ids per state (by creation time),
and one per end state by end time (for `status` and for forgetting old rows).
Every change of state is one Lua script, so two machines never both take a job.

A pid means nothing on another machine, so a running job also holds a lease: a key
`hotfolder:lease:<id>` that expires after LEASE_SECONDS unless the process running
the job renews it (a thread does, every LEASE_SECONDS / 4). A worker machine that
dies, or a `hotfolder worker` killed with SIGKILL (its worker processes die with it),
stops renewing; any supervisor then finds the lease gone and queues the job again.
A worker cut off from Redis for longer than a lease may see its job run again
elsewhere; deliveries are idempotent by content, so that leaves no second result.
When Redis stays away past the connection's retries, operations raise Unavailable.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from hotfolder.errors import Unavailable
from hotfolder.journal import ENDED, UNFINISHED, Claim, Job, OneByOne, count_by_reason
from hotfolder.names import loaded_rel, stored_rel

PREFIX = "hotfolder:"
STATES = (*UNFINISHED, *ENDED)
LEASE_SECONDS = 10.0
RETRIES = 6  # connection attempts, 0.1 s to 2 s apart, before an operation fails
P = ParamSpec("P")
R = TypeVar("R")

# ARGV: prefix, id, allowed states (comma-separated), target state ('' keeps it), now,
# field updates as JSON (a value [n] adds n, at least 0; false deletes), lease ms
# ('' keeps the lease, '0' drops it), lease owner.
MOVE = """
local prefix, id, target, now = ARGV[1], ARGV[2], ARGV[4], ARGV[5]
local key = prefix .. 'job:' .. id
local state = redis.call('HGET', key, 'state')
if not state or not string.find(',' .. ARGV[3] .. ',', ',' .. state .. ',', 1, true) then
  return 0
end
for field, value in pairs(cjson.decode(ARGV[6])) do
  if type(value) == 'table' then
    local n = tonumber(redis.call('HGET', key, field) or '0') + value[1]
    redis.call('HSET', key, field, math.max(n, 0))
  elseif value == false then
    redis.call('HDEL', key, field)
  else
    redis.call('HSET', key, field, value)
  end
end
redis.call('HSET', key, 'updated', now)
if target ~= '' and target ~= state then
  redis.call('HSET', key, 'state', target)
  redis.call('ZREM', prefix .. 'state:' .. state, id)
  redis.call('ZADD', prefix .. 'state:' .. target, redis.call('HGET', key, 'created'), id)
  if target == 'done' or target == 'failed' or target == 'quarantined' then
    redis.call('ZADD', prefix .. 'ended:' .. target, now, id)
  end
end
if ARGV[7] == '0' then
  redis.call('DEL', prefix .. 'lease:' .. id)
elseif ARGV[7] ~= '' then
  redis.call('SET', prefix .. 'lease:' .. id, ARGV[8], 'PX', ARGV[7])
end
return 1
"""

# ARGV: prefix, id, JSON of the job's fields. Adds the job unless its id is known.
ADD = """
local prefix, id = ARGV[1], ARGV[2]
local key = prefix .. 'job:' .. id
if redis.call('EXISTS', key) == 1 then return 0 end
local job = cjson.decode(ARGV[3])
for field, value in pairs(job) do redis.call('HSET', key, field, value) end
redis.call('ZADD', prefix .. 'state:' .. job.state, job.created, id)
if job.state == 'done' or job.state == 'failed' or job.state == 'quarantined' then
  redis.call('ZADD', prefix .. 'ended:' .. job.state, job.created, id)
end
return 1
"""

# ARGV: prefix, now, reason ('' for: every job due by now). Returns the ids made queued.
WAKE = """
local prefix, now, reason = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local woke = {}
for _, id in ipairs(redis.call('ZRANGE', prefix .. 'state:waiting', 0, -1)) do
  local key = prefix .. 'job:' .. id
  local fields = redis.call('HMGET', key, 'reason', 'next_try', 'created')
  local due = (reason == '' and tonumber(fields[2] or '0') <= now) or
              (reason ~= '' and fields[1] == reason)
  if due then
    redis.call('HSET', key, 'state', 'queued', 'updated', now)
    redis.call('ZREM', prefix .. 'state:waiting', id)
    redis.call('ZADD', prefix .. 'state:queued', fields[3], id)
    table.insert(woke, id)
  end
end
return woke
"""

# ARGV: prefix, lease ms, owner, ids... Renews the leases this owner still holds.
RENEW = """
for i = 4, #ARGV do
  local lease = ARGV[1] .. 'lease:' .. ARGV[i]
  if redis.call('GET', lease) == ARGV[3] then redis.call('PEXPIRE', lease, ARGV[2]) end
end
return 0
"""

# ARGV: prefix, before. Drops ended jobs older than `before`; returns how many.
FORGET = """
local prefix, count = ARGV[1], 0
for _, state in ipairs({'done', 'failed', 'quarantined'}) do
  local ended = prefix .. 'ended:' .. state
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', ended, '-inf', '(' .. ARGV[2])) do
    redis.call('DEL', prefix .. 'job:' .. id)
    redis.call('ZREM', prefix .. 'state:' .. state, id)
    redis.call('ZREM', ended, id)
    count = count + 1
  end
end
return count
"""

FORGET_ONE = """
local prefix, id = ARGV[1], ARGV[2]
local state = redis.call('HGET', prefix .. 'job:' .. id, 'state')
if state ~= 'done' and state ~= 'failed' and state ~= 'quarantined' then return 0 end
redis.call('DEL', prefix .. 'job:' .. id)
redis.call('ZREM', prefix .. 'state:' .. state, id)
redis.call('ZREM', prefix .. 'ended:' .. state, id)
return 1
"""


def connect(url: str, retries: int = RETRIES) -> redis.Redis:
    """A client for `url` that rides out a Redis restart of a few seconds."""
    return redis.Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=5, socket_timeout=30,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


def shown(url: str) -> str:
    """A Redis URL without its password, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"{parts.scheme}://{host}:{parts.port or 6379}{parts.path}"


def check_redis(url: str, timeout: float = 5.0) -> str | None:
    """None when the Redis of `queue.url` answers within `timeout` seconds, else one line on
    what is wrong."""
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=timeout,
                                  socket_timeout=timeout) as conn:
            conn.ping()
    except redis.RedisError as exc:
        return f"Redis at {shown(url)} does not answer: {exc}"
    return None


def _in_words(method: Callable[Concatenate[RedisJournal, P], R],
              ) -> Callable[Concatenate[RedisJournal, P], R]:
    """Redis errors (after the connection's retries) as Unavailable, in plain words."""

    def call(self: RedisJournal, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except redis.RedisError as exc:
            raise Unavailable(f"the journal in Redis at {shown(self.url)} does not answer",
                              detail=str(exc), stage="queue") from None

    functools.update_wrapper(call, method)
    return call


class RedisJournal(OneByOne):
    """The journal in one Redis database; any number of processes and machines share it."""

    def __init__(self, url: str, *, prefix: str = PREFIX, lease_seconds: float = LEASE_SECONDS,
                 retries: int = RETRIES) -> None:
        self.url = url
        self.prefix = prefix
        self.lease_ms = str(int(lease_seconds * 1000))
        self.host = socket.gethostname()
        self.conn = connect(url, retries)
        self._move = self.conn.register_script(MOVE)
        self._add = self.conn.register_script(ADD)
        self._wake = self.conn.register_script(WAKE)
        self._renew = self.conn.register_script(RENEW)
        self._forget = self.conn.register_script(FORGET)
        self._forget_one = self.conn.register_script(FORGET_ONE)
        self._held: set[str] = set()
        self._keeper: tuple[int, threading.Thread] | None = None
        self._stopped = threading.Event()

    def fork_guard(self) -> AbstractContextManager[None]:
        """Nothing to hold: the connection pool is fork-safe, a child renews its own leases."""
        return nullcontext()

    def owner(self) -> str:
        """Who this process is, on any machine: `host:pid`."""
        return f"{self.host}:{os.getpid()}"

    def _key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def _change(self, job_id: str, allowed: Sequence[str], target: str,
                updates: dict[str, Any], lease: str = "0") -> bool:
        """One atomic change of a job; False when it was not in an `allowed` state."""
        done = self._move(args=[self.prefix, job_id, ",".join(allowed), target, time.time(),
                                json.dumps(updates), lease, self.owner()])
        if lease == "0":
            self._held.discard(job_id)
        return bool(done)

    def _job(self, raw: Any) -> Job | None:
        if not raw:
            return None
        data = {str(k): str(v) for k, v in raw.items()}
        host, _, pid = data.pop("owner", "").rpartition(":")
        return Job(
            id=data["id"], rel=loaded_rel(data["rel"]), state=data["state"],
            attempts=int(data.get("attempts", 0)), waits=int(data.get("waits", 0)),
            # A pid is only meaningful on its own machine.
            pid=int(pid) if pid and host == self.host else None,
            kind=data.get("kind"), size=int(data["size"]) if "size" in data else None,
            reason=data.get("reason"),
            outputs=json.loads(data["outputs"]) if "outputs" in data else None,
            created=float(data["created"]), started=_float(data.get("started")),
            updated=float(data["updated"]), next_try=_float(data.get("next_try")),
        )

    def _jobs(self, ids: Sequence[Any]) -> list[Job]:
        pipe = self.conn.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self._key(str(job_id)))
        return [job for job in map(self._job, pipe.execute()) if job is not None]

    def _members(self, key: str) -> list[str]:
        """The ids in one of the journal's sorted sets, in order."""
        return [str(member) for member in self.conn.zrange(f"{self.prefix}{key}", 0, -1)]

    # -- the journal's operations (see hotfolder.journal.Journal for their contract)

    def close(self) -> None:
        """Stop renewing leases and close the connections."""
        self._stopped.set()
        self.conn.close()

    @_in_words
    def add(self, job_id: str, rel: str, *, kind: str | None, size: int | None,
            state: str = "queued", reason: str | None = None) -> None:
        """Record a claimed file (or one refused at intake, with state failed)."""
        self.add_all([Claim(job_id, rel, kind, size, state, reason)])

    @_in_words
    def add_all(self, claims: Sequence[Claim]) -> None:
        """Record many claims in one round trip (each one atomic)."""
        now = time.time()
        pipe = self.conn.pipeline(transaction=False)
        for c in claims:
            fields = {"id": c.id, "rel": stored_rel(c.rel), "state": c.state, "kind": c.kind,
                      "size": c.size, "reason": c.reason, "attempts": 0, "waits": 0,
                      "created": now, "updated": now}
            self._add(args=[self.prefix, c.id,
                            json.dumps({k: v for k, v in fields.items() if v is not None})],
                      client=pipe)
        pipe.execute()

    @_in_words
    def get(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        return self._job(self.conn.hgetall(self._key(job_id)))

    @_in_words
    def start(self, job_id: str, pid: int) -> Job | None:
        """Mark the job running here and take its lease; None when it is not queued or waiting."""
        updates = {"attempts": [1], "owner": f"{self.host}:{pid}", "started": time.time(),
                   "next_try": False}
        if not self._change(job_id, ("queued", "waiting"), "running", updates, self.lease_ms):
            return None
        self._held.add(job_id)
        self._keep_leases()
        return self.get(job_id)

    @_in_words
    def requeue(self, job_id: str, *, forgive: bool = False) -> None:
        """Put a running job back in the queue (`forgive`: this start does not count)."""
        self._change(job_id, ("running",), "queued",
                     {"owner": False, "attempts": [-1 if forgive else 0]})

    @_in_words
    def wait(self, job_id: str, reason: str, delay: float) -> None:
        """Park the job until `delay` seconds from now because `reason` is unavailable."""
        self._change(job_id, ("running",), "waiting",
                     {"reason": reason, "attempts": 0, "waits": [1], "owner": False,
                      "next_try": time.time() + delay})

    @_in_words
    def wake(self, reason: str | None = None) -> list[Job]:
        """Waiting jobs made queued: those due now, or all waiting for `reason`."""
        return self._jobs(self._wake(args=[self.prefix, time.time(), reason or ""]))

    @_in_words
    def delivered(self, job_id: str, outputs: list[str]) -> None:
        """Record that the outputs are stored (a retry then only finishes the original)."""
        self._change(job_id, STATES, "", {"outputs": json.dumps(outputs)}, lease="")

    @_in_words
    def finish(self, job_id: str, state: str, reason: str | None = None) -> bool:
        """End an unfinished job as done, failed or quarantined; False if it had ended already."""
        if state not in ENDED:
            raise ValueError(f"not an end state: {state}")
        return self._change(job_id, UNFINISHED, state,
                            {"reason": reason if reason is not None else False,
                             "owner": False, "next_try": False})

    @_in_words
    def in_state(self, *states: str) -> list[Job]:
        """The jobs in any of these states, oldest first."""
        ids = [i for s in states for i in self._members(f"state:{s}")]
        return sorted(self._jobs(ids), key=lambda job: job.created)

    @_in_words
    def ids(self) -> set[str]:
        """Every job id the journal knows."""
        return {i for s in STATES for i in self._members(f"state:{s}")}

    @_in_words
    def counts(self) -> dict[str, int]:
        """Number of jobs by state."""
        pipe = self.conn.pipeline(transaction=False)
        for state in STATES:
            pipe.zcard(f"{self.prefix}state:{state}")
        return {s: int(n) for s, n in zip(STATES, pipe.execute(), strict=True) if n}

    @_in_words
    def waiting_counts(self) -> dict[str, int]:
        """Number of waiting jobs by reason."""
        return count_by_reason(self.in_state("waiting"))

    @_in_words
    def recent(self, state: str, limit: int = 10) -> list[Job]:
        """The latest jobs that ended in `state`, newest first."""
        return self._jobs(list(self.conn.zrevrange(f"{self.prefix}ended:{state}", 0,
                                                   limit - 1)))

    @_in_words
    def forget_ended(self, before: float) -> int:
        """Drop rows of jobs that ended before `before` (epoch seconds)."""
        return int(self._forget(args=[self.prefix, before]))

    @_in_words
    def forget(self, job_id: str) -> bool:
        """Drop one ended job."""
        return bool(self._forget_one(args=[self.prefix, job_id]))

    @_in_words
    def alive(self, job: Job) -> bool:
        """Whether a running job is still held: its lease has not expired."""
        return bool(self.conn.exists(f"{self.prefix}lease:{job.id}"))

    # -- leases

    def _keep_leases(self) -> None:
        """Start this process's lease-renewing thread (once per process, also after a fork)."""
        if self._keeper is not None and self._keeper[0] == os.getpid():
            return
        thread = threading.Thread(target=self._renew_loop, name="hotfolder-leases",
                                  daemon=True)
        self._keeper = (os.getpid(), thread)
        thread.start()

    def _renew_loop(self) -> None:
        interval = int(self.lease_ms) / 4000
        while not self._stopped.wait(interval):
            held = list(self._held)
            if held:
                try:
                    self._renew(args=[self.prefix, self.lease_ms, self.owner(), *held])
                except redis.RedisError:
                    continue  # Redis away for a moment: the next round tries again


def _float(value: str | None) -> float | None:
    return float(value) if value is not None else None

