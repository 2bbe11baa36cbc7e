"""Server-sent events: a `job` event with the list fields at each change of a job's state.

Jobs change state in worker processes, on this machine or (with a Redis queue)
others, so the journal is the only place that sees every change. While anyone
follows the events, one task looks at the journal every POLL_SECONDS (the unfinished
jobs and the latest ended ones) and sends each job whose state differs from the look
before, to every follower.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from starlette.concurrency import run_in_threadpool

from hotfolder.journal import ENDED, UNFINISHED, Job, Journal
from hotfolder.web.console import summary

POLL_SECONDS = 0.1
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

    def __init__(self, journal: Journal, poll_seconds: float = POLL_SECONDS) -> None:
        self.journal = journal
        self.poll_seconds = poll_seconds
        self._followers: set[asyncio.Queue[str]] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def look(self, unfinished_before: int = 0) -> dict[str, Job]:
        """The unfinished jobs and the latest ended ones, by id.

        Between two looks at most the jobs unfinished at the first one end, and those
        claimed meanwhile: `unfinished_before` plus ENDED_MARGIN of each ended state.
        """
        jobs = self.journal.in_state(*UNFINISHED)
        for state in ENDED:
            jobs += self.journal.recent(state, unfinished_before + ENDED_MARGIN)
        return {job.id: job for job in jobs}

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
            seen = states(await run_in_threadpool(self.look))
            while self._followers and not self._closed:
                await asyncio.sleep(self.poll_seconds)
                unfinished = sum(state in UNFINISHED for state in seen.values())
                now = await run_in_threadpool(self.look, unfinished)
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
