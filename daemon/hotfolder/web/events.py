"""Server-sent events: a `job` event with the list fields at each change of a job's state.

Jobs change state in worker processes, on this machine or (with a Redis queue)
others, so the journal is the only place that sees every change. While anyone
follows the events, one task looks at the journal every POLL_SECONDS (the unfinished
jobs and the latest ended ones) and sends each job whose state differs from the look
before, to every follower. A look at a big backlog takes longer, and the task then
waits longer: looking takes at most LOOK_SHARE of a core, so a console left open
during a burst of 100,000 files slows the events, not the service.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable

from starlette.concurrency import run_in_threadpool

from hotfolder.journal import ENDED, UNFINISHED, Job, Journal
from hotfolder.web.console import summary

POLL_SECONDS = 0.1
LOOK_SHARE = 0.1  # of a core, at most, spent looking at the journal
KEEPALIVE_SECONDS = 15.0
CLOSED_CHECK_SECONDS = 0.25
ENDED_MARGIN = 50  # jobs of each ended state looked at beyond those unfinished before
FOLLOWER_BACKLOG = 1000


def event(job: Job) -> str:
    """One job event in the text/event-stream format."""
    return f"event: job\ndata: {json.dumps(summary(job), ensure_ascii=False)}\n\n"


def states(jobs: dict[str, Job]) -> dict[str, str]:
    """Each job's state, by id."""
    return {job_id: job.state for job_id, job in jobs.items()}


class Hub:
    """Follows the journal while anyone listens, and sends the changes to every follower."""

    def __init__(self, journal: Journal, poll_seconds: float = POLL_SECONDS,
                 clock: Callable[[], float] = time.thread_time) -> None:
        self.journal = journal
        self.poll_seconds = poll_seconds
        self.clock = clock  # the CPU time of the thread that looks
        self._followers: set[asyncio.Queue[str]] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def look(self, unfinished_before: int = 0) -> tuple[dict[str, Job], float]:
        """The unfinished jobs and the latest ended ones, by id; and the seconds to wait
        before the next look.

        Between two looks at most the jobs unfinished at the first one end, and those
        claimed meanwhile: `unfinished_before` plus ENDED_MARGIN of each ended state.
        """
        start = self.clock()
        jobs = self.journal.in_state(*UNFINISHED)
        for state in ENDED:
            jobs += self.journal.recent(state, unfinished_before + ENDED_MARGIN)
        spent = self.clock() - start
        return {job.id: job for job in jobs}, max(self.poll_seconds, spent / LOOK_SHARE - spent)

    async def follow(self) -> AsyncIterator[str]:
        """The event stream of one follower, until the server stops."""
        queue: asyncio.Queue[str] = asyncio.Queue(FOLLOWER_BACKLOG)
        self._followers.add(queue)
        if self._task is None:
            self._task = asyncio.create_task(self._watch())
        try:
            yield "retry: 1000\n: following the jobs\n\n"
            quiet = 0.0
            while not self._closed:
                try:
                    item = await asyncio.wait_for(queue.get(), CLOSED_CHECK_SECONDS)
                except TimeoutError:
                    quiet += CLOSED_CHECK_SECONDS
                    if quiet >= KEEPALIVE_SECONDS:
                        quiet = 0.0
                        yield ": still here\n\n"
                    continue
                quiet = 0.0
                yield item
        finally:
            self._followers.discard(queue)

    async def _watch(self) -> None:
        """Look at the journal while anyone follows; send what changed."""
        try:
            jobs, pause = await run_in_threadpool(self.look)
            seen = states(jobs)
            while self._followers and not self._closed:
                await asyncio.sleep(pause)
                unfinished = sum(state in UNFINISHED for state in seen.values())
                now, pause = await run_in_threadpool(self.look, unfinished)
                for job_id, job in now.items():
                    if seen.get(job_id) != job.state:
                        self._send(event(job))
                seen = states(now)
        finally:
            self._task = None

    def _send(self, item: str) -> None:
        for queue in list(self._followers):
            if queue.full():  # a follower that stopped reading gets no more
                self._followers.discard(queue)
                continue
            queue.put_nowait(item)

    def close(self) -> None:
        """End every stream within CLOSED_CHECK_SECONDS (from any thread)."""
        self._closed = True
