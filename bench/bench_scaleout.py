"""Scaling out over Redis: throughput with 1, 2 and 3 worker processes on one queue, and what
the Redis queue and journal cost per file against SQLite.

Run by hand: `python bench/bench_scaleout.py [--photos 40] [--small 300]`. It starts a
redis-server of its own on a free port (Debian's package) and, on temporary roots:

1. a watch-only service (`queue.workers: 0`) and 1, 2, then 3 `hotfolder worker`
   processes of one worker each, as separate machines would run them, on `--photos`
   1-megapixel photos through a CPU-bound recipe (sharpen, equalize, PNG): files per
   second, and the speed-up over one worker (on a 2-core machine the second worker
   should add close to a core's worth, the third nothing);
2. `hotfolder run` with one worker on `--small` tiny JPEGs delivered unchanged, once with
   the SQLite queue and journal and once with Redis: milliseconds per file, drop to done.
The figures are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from helpers import image_bytes, wait_until  # noqa: E402
from hotfolder.config import load_config  # noqa: E402
from hotfolder.parts import build_journal  # noqa: E402
from redis_server import RedisServer  # noqa: E402
from service_helpers import Daemon, make_root  # noqa: E402
from test_scaleout import SLOW_FOLDER, worker_config  # noqa: E402


@contextmanager
def services(config: Path, workers: int, folder: Path) -> Iterator[None]:
    """The service on config, plus `workers` worker 'machines'; all stopped afterwards."""
    started = [Daemon(config)]
    started += [Daemon(worker_config(config, folder / f"worker-{n}"), "worker")
                for n in range(workers)]
    try:
        for daemon in started:
            daemon.start()
        yield
    finally:
        for daemon in started:
            if daemon.process is not None:
                daemon.stop()


def batch_seconds(config: Path, files: dict[str, bytes]) -> float:
    """Seconds from dropping `files` (relative paths in the inbox) until every job is done."""
    root = config.parent
    journal = build_journal(load_config(config))
    started = time.perf_counter()
    for rel, data in files.items():
        target = root / "inbox" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.part")
        temp.write_bytes(data)
        temp.rename(target)
    wait_until(lambda: journal.counts().get("done", 0) == len(files), 600, "the batch")
    seconds = time.perf_counter() - started
    journal.close()
    return seconds


def throughput(redis: RedisServer, photos: int, tmp: Path) -> dict[int, float]:
    """Files per second with 1, 2 and 3 worker processes on one Redis queue."""
    files = {f"{SLOW_FOLDER}/photo-{n:03d}.jpg": image_bytes("JPEG", (1000, 750), seed=n)
             for n in range(photos)}
    rates = {}
    for workers in (1, 2, 3):
        redis.flush()
        folder = tmp / f"throughput-{workers}"
        config = make_root(folder / "root", queue={"url": redis.url, "workers": 0},
                           cache={"enabled": False})
        with services(config, workers, folder):
            rates[workers] = photos / batch_seconds(config, files)
    return rates


def per_file_ms(url: str, small: int, tmp: Path, name: str) -> float:
    """Milliseconds per tiny file through `hotfolder run` with one worker on queue `url`."""
    files = {f"small-{n:04d}.jpg": image_bytes("JPEG", seed=n) for n in range(small)}
    folder = tmp / f"cost-{name}"
    config = make_root(folder / "root", queue={"url": url, "workers": 1},
                       cache={"enabled": False})
    with services(config, 0, folder):
        return batch_seconds(config, files) / small * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--small", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as name:
        tmp = Path(name)
        (tmp / "redis").mkdir()
        redis = RedisServer(tmp / "redis")
        redis.start()
        try:
            rates = throughput(redis, args.photos, tmp)
            redis.flush()
            sqlite = per_file_ms("sqlite:///state/queue.db", args.small, tmp, "sqlite")
            shared = per_file_ms(redis.url, args.small, tmp, "redis")
        finally:
            redis.stop()
    print(f"cores: {len(os.sched_getaffinity(0))}")
    print(f"throughput on one Redis queue, {args.photos} 1-MP photos ({SLOW_FOLDER}):")
    for workers, rate in rates.items():
        print(f"  {workers} worker process(es): {rate:5.2f} files/s"
              f"  ({rate / rates[1]:.2f} x one worker)")
    print(f"cost per file, {args.small} tiny JPEGs delivered unchanged, one worker:")
    print(f"  SQLite queue and journal: {sqlite:6.1f} ms/file")
    print(f"  Redis queue and journal:  {shared:6.1f} ms/file"
          f"  ({shared - sqlite:+.1f} ms, {shared / sqlite:.2f} x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
