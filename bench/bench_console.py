"""The console: upload-to-done time against the same file dropped, and throughput while followed.

Run by hand: `python bench/bench_console.py [--count 10] [--batch 20] [--settle 2]`. It
starts a clamd with the tests' signature database and `hotfolder run` on a temporary root
(scanning on, 2 workers, `watch.settle_seconds` as given: 2 s is the default), and prints:

1. for `--count` 1-MP JPEGs through `grayscale+png`, the time from the start of an upload
   request to the job's `done` event on /api/v1/events, and from dropping another such
   file into the folder to its `done` event (target: the upload's median within 50 ms
   of the drop's);
2. the time for a batch of `--batch` such files dropped at once, with nobody following
   the events and with a follower reading them as a browser would, best of ROUNDS
   each, alternately (target: no more than 5% slower followed).
Exit code 0 when both targets are met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from clamd_server import Clamd  # noqa: E402
from helpers import drop, image_bytes, wait_until  # noqa: E402
from hotfolder.journal import open_journal  # noqa: E402
from service_helpers import Daemon, make_root  # noqa: E402
from web_helpers import Api  # noqa: E402

FOLDER = "grayscale+png"
MEGAPIXEL = (1155, 866)
TIMEOUT = 60.0
ROUNDS = 3


def done_at(events: list[dict[str, object]], name: str) -> float:
    """When the done event of the job named `name` arrived."""
    found = wait_until(lambda: [e for e in events if e["name"] == name
                                and e["state"] == "done"], TIMEOUT, f"{name} done")
    return float(found[0]["received"])  # type: ignore[arg-type]


def upload_and_drop(root: Path, api: Api, count: int) -> tuple[list[float], list[float]]:
    """Milliseconds from upload, and from drop, to the done event, alternating."""
    uploads, drops = [], []
    with api.events() as events:
        for n in range(count):
            data = image_bytes("JPEG", MEGAPIXEL, seed=2 * n)  # new content: no cache hit
            started = time.perf_counter()
            reply = api.upload(FOLDER, [(f"up-{n}.jpg", data)])
            assert reply.status == 202, reply
            uploads.append((done_at(events, f"up-{n}.jpg") - started) * 1000)
            data = image_bytes("JPEG", MEGAPIXEL, seed=2 * n + 1)
            started = time.perf_counter()
            drop(root, f"{FOLDER}/drop-{n}.jpg", data)
            drops.append((done_at(events, f"drop-{n}.jpg") - started) * 1000)
    return uploads, drops


def batch_seconds(root: Path, size: int, tag: str, seed: int, *, follower: Api | None) -> float:
    """Seconds until a batch dropped at once is done, read from the journal."""
    files = {f"{tag}-{n}.jpg": image_bytes("JPEG", MEGAPIXEL, seed=seed + n) for n in range(size)}
    staging = root / "inbox" / ".staging"
    staging.mkdir(exist_ok=True)
    for name, data in files.items():
        (staging / name).write_bytes(data)
    journal = open_journal("sqlite:///", root / "state" / "journal.db")

    def all_done() -> bool:
        done = {PurePosixPath(job.rel).name for job in journal.recent("done", 10_000)}
        return done >= set(files)

    def run() -> float:
        started = time.perf_counter()
        for name in files:
            (staging / name).rename(root / "inbox" / FOLDER / name)
        wait_until(all_done, TIMEOUT * 5, f"the batch {tag}")
        return time.perf_counter() - started

    try:
        if follower is None:
            return run()
        with follower.events():
            return run()
    finally:
        journal.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--settle", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clamd = Clamd(Path(tmp))
        clamd.start()
        config = make_root(Path(tmp) / "root", clamd.address,
                           watch={"settle_seconds": args.settle, "rescan_seconds": 60})
        root = config.parent
        (root / "inbox" / FOLDER).mkdir()
        daemon = Daemon(config)
        try:
            daemon.start()
            api = Api(config)
            uploads, drops = upload_and_drop(root, api, args.count)
            alone, followed = [], []
            for round_ in range(ROUNDS):  # alternately, so that the machine's noise hits both
                seed = 1000 * (round_ + 1)
                alone.append(batch_seconds(root, args.batch, f"alone{round_}", seed,
                                           follower=None))
                followed.append(batch_seconds(root, args.batch, f"followed{round_}",
                                              seed + 500, follower=api))
        finally:
            if daemon.process is not None:
                daemon.stop()
            clamd.stop()
    up, dropped = statistics.median(uploads), statistics.median(drops)
    print(f"1-MP JPEG, {args.count} each, watch.settle_seconds {args.settle:g}:")
    print(f"  upload to done event: median {up:.0f} ms, worst {max(uploads):.0f} ms")
    print(f"  drop to done event:   median {dropped:.0f} ms, worst {max(drops):.0f} ms")
    print(f"  upload - drop: {up - dropped:+.0f} ms (target: at most +50 ms)")
    slower = (min(followed) / min(alone) - 1) * 100
    print(f"batch of {args.batch}, best of {ROUNDS}: {min(alone):.2f} s alone,"
          f" {min(followed):.2f} s with a follower ({slower:+.1f}%, target: at most +5%)")
    return 0 if up - dropped <= 50 and slower <= 5 else 1


if __name__ == "__main__":
    sys.exit(main())
