"""Metrics: the SPEC 9 names, counts from worker processes, and the HTTP endpoints."""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from helpers import drop, image_bytes, wait_until
from hotfolder import __version__
from hotfolder.metrics import (
    IDLE_SECONDS,
    MAX_CONNECTIONS,
    Metrics,
    MetricsServer,
    State,
    parse_listen,
    serve,
)
from service_helpers import Daemon, make_root, start

SPEC_NAMES = {
    "hotfolder_files_detected", "hotfolder_jobs", "hotfolder_stage_seconds",
    "hotfolder_queue_depth", "hotfolder_jobs_in_progress", "hotfolder_waiting_jobs",
    "hotfolder_scanner_up",
    "hotfolder_watcher_last_scan_timestamp_seconds", "hotfolder_bytes", "hotfolder_build_info",
}


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of an exposition fetched over HTTP, by name and sorted labels."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def test_every_spec_metric_is_exposed(metrics: Metrics) -> None:
    metrics.follow(lambda: State(queue_depth=0, jobs_in_progress=0))
    names = {family.name for family in metrics.registry.collect()}
    # Beyond SPEC 9: files processed unscanned under scanner.on_unavailable: allow,
    # folders that inotify cannot watch (SPEC 10), the console's requests and uploads, and
    # the memory of the service's processes.
    assert names == SPEC_NAMES | {"hotfolder_files_unscanned",
                                  "hotfolder_watcher_unwatched_folders",
                                  "hotfolder_web_requests", "hotfolder_web_upload_bytes",
                                  "hotfolder_resident_memory_bytes"}


def test_record_job_counts_outcome_stages_and_bytes(metrics: Metrics) -> None:
    value = metrics.registry.get_sample_value
    metrics.record_job("engrave-wood", "done", timings={"scan": 0.02, "decode": 0.04,
                                                        "process": 0.3, "encode": 0.2,
                                                        "deliver": 0.01},
                       bytes_in=1000, bytes_out=400)
    metrics.record_job("engrave-wood", "failed", timings={"decode": 0.001}, bytes_in=10)
    assert value("hotfolder_jobs_total", {"recipe": "engrave-wood", "outcome": "done"}) == 1
    assert value("hotfolder_jobs_total", {"recipe": "engrave-wood", "outcome": "failed"}) == 1
    assert value("hotfolder_stage_seconds_count", {"stage": "decode"}) == 2
    assert value("hotfolder_stage_seconds_sum", {"stage": "process"}) == pytest.approx(0.3)
    assert value("hotfolder_stage_seconds_bucket", {"stage": "process", "le": "0.25"}) == 0
    assert value("hotfolder_stage_seconds_bucket", {"stage": "process", "le": "0.5"}) == 1
    assert value("hotfolder_bytes_total", {"direction": "in"}) == 1010
    assert value("hotfolder_bytes_total", {"direction": "out"}) == 400


def test_record_job_refuses_unknown_labels(metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="outcome must be one of done, failed, quarantined"):
        metrics.record_job("r", "finished", timings={})
    with pytest.raises(ValueError, match=r"unknown stages \['resize'\]"):
        metrics.record_job("r", "done", timings={"resize": 1.0})
    assert metrics.registry.get_sample_value("hotfolder_jobs_total",
                                             {"recipe": "r", "outcome": "done"}) is None


def test_gauges_follow_the_state_at_each_scrape(metrics: Metrics) -> None:
    value = metrics.registry.get_sample_value
    assert value("hotfolder_queue_depth") is None
    state = State(queue_depth=7, jobs_in_progress=2, waiting_jobs={"scanner": 3},
                  scanner_up=False, watcher_last_scan=1_700_000_000.5)
    metrics.follow(lambda: state)
    assert value("hotfolder_queue_depth") == 7
    assert value("hotfolder_jobs_in_progress") == 2
    assert value("hotfolder_waiting_jobs", {"reason": "scanner"}) == 3
    assert value("hotfolder_scanner_up") == 0
    assert value("hotfolder_watcher_last_scan_timestamp_seconds") == 1_700_000_000.5
    state = State(queue_depth=0, jobs_in_progress=0, scanner_up=True)
    assert value("hotfolder_queue_depth") == 0
    assert value("hotfolder_waiting_jobs", {"reason": "scanner"}) is None
    assert value("hotfolder_scanner_up") == 1


def test_scanner_up_is_left_out_while_scanning_is_off(metrics: Metrics) -> None:
    metrics.follow(lambda: State(queue_depth=3, jobs_in_progress=0, scanner_up=None))
    assert metrics.registry.get_sample_value("hotfolder_queue_depth") == 3
    assert metrics.registry.get_sample_value("hotfolder_scanner_up") is None


# Holds 100 MB; with an argument, first starts one more of itself below it. Each says "held"
# and ends when its standard input closes.
HOLDER = """\
import subprocess, sys
held = b"\\x01" * (100 << 20)
below = [subprocess.Popen([sys.executable, __file__])] if sys.argv[1:] else []
print("held", flush=True)
sys.stdin.read()
for process in below:
    process.wait()
"""


def test_resident_memory_sums_this_process_and_those_below_it(
        metrics: Metrics, tmp_path: Path) -> None:
    def resident() -> float:
        value = metrics.registry.get_sample_value("hotfolder_resident_memory_bytes")
        assert value is not None
        return value

    before = resident()
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    with subprocess.Popen([sys.executable, str(script), "below"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as holders:
        assert holders.stdin is not None and holders.stdout is not None
        try:
            assert [holders.stdout.readline(), holders.stdout.readline()] == ["held\n"] * 2
            assert resident() > before + 190 * 2**20  # a child and a grandchild, 100 MB each
        finally:
            holders.stdin.close()
    wait_until(lambda: resident() < before + 50 * 2**20, 10, "the memory given back")


def test_build_info_names_the_version(metrics: Metrics) -> None:
    assert metrics.registry.get_sample_value(
        "hotfolder_build_info", {"version": __version__, "python": sys.version.split()[0]}) == 1


@pytest.fixture
def server(metrics: Metrics) -> Iterator[tuple[MetricsServer, list[bool]]]:
    ready = [False]
    running = serve("127.0.0.1:0", metrics.registry, lambda: ready[0])
    try:
        yield running, ready
    finally:
        running.close()


def test_http_endpoints(metrics: Metrics, server: tuple[MetricsServer, list[bool]]) -> None:
    running, ready = server
    metrics.files_detected.inc(3)
    assert running.url.startswith("http://127.0.0.1:")
    assert scrape(running.url)[("hotfolder_files_detected_total", ())] == 3
    assert status(running.url + "/healthz") == 200
    assert status(running.url + "/readyz") == 503
    ready[0] = True
    assert status(running.url + "/readyz") == 200
    assert status(running.url + "/nothing") == 404


def test_closed_server_releases_its_port(metrics: Metrics) -> None:
    running = serve("127.0.0.1:0", metrics.registry, lambda: True)
    url = running.url
    running.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/healthz", timeout=5)
    again = serve(url.removeprefix("http://"), metrics.registry, lambda: True)
    again.close()


WORKERS = textwrap.dedent("""
    import multiprocessing, os, signal, sys
    from pathlib import Path
    from hotfolder.metrics import Metrics, State, clear_directory, serve

    directory = Path(sys.argv[1])
    clear_directory(directory)
    metrics = Metrics(directory=directory)
    metrics.files_detected.inc(4)

    def work(n):
        metrics.record_job("wood", "done", timings={"process": 0.1 * n}, bytes_in=100)
        if n == 3:
            os.kill(os.getpid(), signal.SIGKILL)  # a worker killed after counting

    if __name__ == "__main__":
        workers = [multiprocessing.get_context("fork").Process(target=work, args=(n,))
                   for n in (1, 2, 3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        metrics.record_job("wood", "failed", timings={"decode": 0.01})
        metrics.follow(lambda: State(queue_depth=5, jobs_in_progress=1, scanner_up=True))
        server = serve("127.0.0.1:0", metrics.registry, lambda: True)
        print(server.url, [w.exitcode for w in workers], flush=True)
        sys.stdin.read()
        server.close()
""")


def test_counts_from_worker_processes_reach_metrics(tmp_path: Path) -> None:
    directory = tmp_path / "state/metrics"
    directory.mkdir(parents=True)
    (directory / "counter_99999.db").write_bytes(b"left by an earlier run")
    script = tmp_path / "workers.py"
    script.write_text(WORKERS)
    main = subprocess.Popen([sys.executable, str(script), str(directory)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert main.stdout is not None
        url, exitcodes = main.stdout.readline().split(" ", 1)
        assert exitcodes.strip() == "[0, 0, -9]"
        samples = scrape(url)
    finally:
        main.communicate("", timeout=30)
    assert main.returncode == 0
    assert samples[("hotfolder_jobs_total", (("outcome", "done"), ("recipe", "wood")))] == 3
    assert samples[("hotfolder_jobs_total", (("outcome", "failed"), ("recipe", "wood")))] == 1
    assert samples[("hotfolder_stage_seconds_count", (("stage", "process"),))] == 3
    assert samples[("hotfolder_stage_seconds_sum", (("stage", "process"),))] == pytest.approx(0.6)
    assert samples[("hotfolder_bytes_total", (("direction", "in"),))] == 300
    assert samples[("hotfolder_files_detected_total", ())] == 4
    assert samples[("hotfolder_queue_depth", ())] == 5
    assert samples[("hotfolder_scanner_up", ())] == 1


def threads_of(pid: int) -> int:
    """How many threads the process has now."""
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def hung_up(sock: socket.socket) -> bool:
    """True once the server has closed this connection."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def test_idle_connections_are_closed_and_hold_few_threads(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    daemon = start(daemons, make_root(tmp_path / "root"))
    assert daemon.process is not None
    pid = daemon.process.pid
    before = threads_of(pid)
    address = parse_listen(daemon.metrics_url.removeprefix("http://"))
    half_sent = []
    for _ in range(60):  # each sends half a request, then nothing
        sock = socket.create_connection(address, timeout=10)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        half_sent.append(sock)
    peak = before
    open_ = list(half_sent)

    def all_closed() -> bool:
        nonlocal peak, open_
        peak = max(peak, threads_of(pid))
        open_ = [sock for sock in open_ if not hung_up(sock)]
        return not open_

    try:
        wait_until(all_closed, IDLE_SECONDS + 20, "the server to close every idle connection")
    finally:
        for sock in half_sent:
            sock.close()
    assert peak <= before + MAX_CONNECTIONS + 2  # not one thread per connection
    assert daemon.get("/metrics")[0] == 200


def test_inline_folders_and_recipe_files_are_labelled_by_kind(
        tmp_path: Path, daemons: list[Daemon]) -> None:
    config = make_root(tmp_path / "root")
    root = config.parent
    (root / "recipes" / "gray.yaml").write_text("steps: [grayscale]\n")
    (root / "inbox" / "Shop 17").mkdir()
    (root / "inbox" / "Shop 17" / "recipe.yaml").write_text("steps: [grayscale]\n")
    daemon = start(daemons, config)
    for n, folder in enumerate(("grayscale+png", "resize=32x24+png", "Shop 17", "Gray")):
        drop(root, f"{folder}/photo.jpg", image_bytes("JPEG", seed=n))
    for recipe, count in (("inline", 2), ("recipe.yaml", 1), ("gray", 1)):
        wait_until(lambda r=recipe, c=count: daemon.metric(
            "hotfolder_jobs_total", recipe=r, outcome="done") == c, 30, f"{count} {recipe} jobs")
    _, body = daemon.get("/metrics")
    assert "grayscale+png" not in body and "resize=" not in body and "Shop 17" not in body


EMPTY_FILE_SCRAPE = """\
import sys
from pathlib import Path
from prometheus_client import generate_latest
from hotfolder.metrics import Metrics
directory = Path(sys.argv[1])
metrics = Metrics(directory=directory)
metrics.record_job("wood", "done", timings={"process": 0.2})
(directory / "counter_4242.db").touch()  # a worker creating its file at this instant
sys.stdout.write(generate_latest(metrics.registry).decode())
"""


def test_a_scrape_while_a_worker_creates_its_metric_file_succeeds(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    done = subprocess.run([sys.executable, "-c", EMPTY_FILE_SCRAPE, str(directory)],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert 'hotfolder_jobs_total{outcome="done",recipe="wood"} 1.0' in done.stdout
