"""Folder-name bombs dropped into the running service at once: its peak memory and how soon
they fail.

Run by hand: `python bench/bench_bombs.py`. It starts a clamd of its own and `hotfolder run`
on a temporary root (as bench_service.py does, one worker per core, default limits), then
drops a small photo into each of four folders whose names ask for gigapixel canvases:

    resize=40000x40000,upscale+png            size=3000mmx,1200+png
    resize=30000x30000,stretch,upscale+jpeg   resize=20000x20000,pad,upscale+rotate=33+png

all at the same moment, and samples the memory of the service's processes (the service and
its workers, not clamd) every 20 ms until all four are in failed/. It prints the peak of
their summed resident memory (RSS, and PSS, which shares pages among them) and the time from
the drop until the fourth error report (targets: peak RSS under 1.5 GB, all four failed
within 60 s). Exit code 0 when both targets are met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_process import photo
from bench_service import Service, clamd_local, make_root, memory_mb, wait_for

BOMBS = ["resize=40000x40000,upscale+png", "size=3000mmx,1200+png",
         "resize=30000x30000,stretch,upscale+jpeg", "resize=20000x20000,pad,upscale+rotate=33+png"]
TARGET_PEAK_MB = 1536
TARGET_SECONDS = 60.0
SAMPLE_SECONDS = 0.02


class Peak(threading.Thread):
    """Samples the summed RSS and PSS of the service's processes until stopped."""

    def __init__(self, service: Service) -> None:
        super().__init__(daemon=True)
        self.service = service
        self.rss = self.pss = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(SAMPLE_SECONDS):
            rss, pss = memory_mb(self.service.pids)
            self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)


def drop_all(inbox: Path, data: bytes) -> None:
    """Write one photo into each bomb folder under a temporary name, then rename them all."""
    staged = []
    for folder in BOMBS:
        (inbox / folder).mkdir(parents=True)
        temp = inbox / folder / ".bomb.jpg.part"
        temp.write_bytes(data)
        staged.append(temp)
    for temp in staged:
        temp.rename(temp.with_name("bomb.jpg"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    workers = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="bench-bombs-") as tmp:
        root = Path(tmp) / "root"
        make_root(root, workers, fuzzy_hash=False)
        service = Service(root)
        try:
            service.start()
            time.sleep(2)  # let the service settle: its idle memory is the baseline
            idle_rss, idle_pss = memory_mb(service.pids)
            peak = Peak(service)
            peak.start()
            reports = [root / "failed" / folder / "bomb.jpg.error.json" for folder in BOMBS]
            image = photo(64, 48, seed=1)
            path = Path(tmp) / "photo.jpg"
            image.save(path, quality=90)
            started = time.perf_counter()
            drop_all(root / "inbox", path.read_bytes())
            wait_for(lambda: all(r.exists() for r in reports), 600, "four error reports",
                     every=SAMPLE_SECONDS)
            seconds = time.perf_counter() - started
            peak.done.set()
            peak.join()
            reasons = [json.loads(r.read_text())["message"] for r in reports]
            service.stop()
        finally:
            if service.process is not None and service.process.poll() is None:
                service.process.kill()
            clamd_local(root, "--stop")
    print(f"four folder-name bombs dropped at once, {workers} workers:")
    for reason in reasons:
        print(f"  {reason}")
    print(f"  all four in failed/ after {seconds:.2f} s (target < {TARGET_SECONDS:g} s)")
    print(f"  service's processes: idle {idle_rss:.0f} MB RSS ({idle_pss:.0f} MB PSS),"
          f" peak {peak.rss:.0f} MB RSS ({peak.pss:.0f} MB PSS)"
          f" (target: peak RSS < {TARGET_PEAK_MB} MB)")
    met = seconds < TARGET_SECONDS and peak.rss < TARGET_PEAK_MB and all(
        "over the limit" in reason for reason in reasons)
    print("all targets met" if met else "some targets missed")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
