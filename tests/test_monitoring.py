"""The shipped Grafana dashboard and alert rules, on a real Prometheus scraping the service."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from clamd_server import Clamd
from helpers import drop, image_bytes, wait_until
from server_process import ServerProcess, free_port, serving
from service_helpers import Daemon, files_under, make_root

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "monitoring" / "grafana" / "hotfolder.json"
RULES = REPO / "monitoring" / "prometheus" / "hotfolder-rules.yml"
RULE_TESTS = REPO / "monitoring" / "prometheus" / "hotfolder-rules.test.yml"
JOB = "hotfolder"  # the scrape job name the rules expect
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# What Grafana puts in place of its variables when "All" is chosen.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": ".*", "$instance": ".*"}
# Series Prometheus makes itself for each target, not read from /metrics.
SCRAPE_SERIES = {"up"}
SECONDS = 30.0

GRAY_RECIPE = "steps:\n  - grayscale\noutput: {format: png}\n"
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                   "group_left", "group_right"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not its functions, labels or keywords)."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}", "", bare)  # label matchers
    bare = re.sub(r"\[[^\]]*\]", "", bare)  # ranges
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)
    found = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", bare):
        if match.group(2) is None and match.group(1) not in PROMQL_KEYWORDS:
            found.add(match.group(1))
    return found


def dashboard() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return result


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, expression) of every query of the dashboard, as Grafana sends it."""
    queries = []
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append((panel["title"], expr))
    return queries


def variable_queries() -> list[tuple[str, str]]:
    """(series selector, label) of each `label_values(...)` variable of the dashboard."""
    found = []
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]["query"])
            assert match, f"variable {variable['name']}: {variable['query']['query']}"
            found.append((match.group(1).replace("$job", ".*"), match.group(2)))
    return found


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"]]


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is not installed: run `make setup` (Debian package prometheus)")
    return subprocess.run(["promtool", *map(str, args)], capture_output=True, text=True,
                          timeout=60, check=False)


@dataclass
class Scraped:
    """Two services scraped by one Prometheus: one healthy, one whose clamd is missing."""

    healthy: Daemon
    unscanned: Daemon  # its clamd does not answer: a dropped file waits for it; polled
    prometheus: str  # its base URL

    def instance(self, daemon: Daemon) -> str:
        return daemon.metrics_url.removeprefix("http://")

    def api(self, path: str, **params: str) -> Any:
        """The `data` of a Prometheus API answer; fails with Prometheus's error."""
        url = f"{self.prometheus}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                body = json.load(reply)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        assert body["status"] == "success", f"{params}: {body.get('error')}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", f"{expr}: {data['resultType']}"
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts pending or firing now."""
        result: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return result

    def rule_states(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = [rule for group in self.api("rules")["groups"]
                                        for rule in group["rules"]]
        return result


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def service(root: Path, clamd_address: str, **overrides: Any) -> Daemon:
    """A started service on root with the recipe folder gray/."""
    config = make_root(root, clamd_address, **overrides)
    (root / "recipes" / "gray.yaml").write_text(GRAY_RECIPE)
    daemon = Daemon(config)
    daemon.start()
    return daemon


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory, clamd: Clamd) -> Iterator[Scraped]:
    """Two delivered files and a failed one, and one waiting for clamd; scraped every second."""
    base = tmp_path_factory.mktemp("monitoring")
    healthy = service(base / "healthy", clamd.address)
    try:
        # Polled, as a network share is: it exports how long its polls take.
        unscanned = service(base / "unscanned", f"unix://{base}/no-clamd.sock",
                            watch={"mode": "polling"})
    except BaseException:
        healthy.stop()
        raise
    try:
        drop(healthy.root, "gray/one.jpg", image_bytes("JPEG", (64, 48), seed=1))
        drop(healthy.root, "gray/two.jpg", image_bytes("JPEG", (64, 48), seed=2))
        drop(healthy.root, "gray/broken.jpg", b"\xff\xd8\xff\xe0 not really a JPEG")
        drop(unscanned.root, "gray/three.jpg", image_bytes("JPEG", (64, 48), seed=3))
        wait_until(lambda: len(files_under(healthy.root / "outbox")) == 2, SECONDS,
                   "two results")
        wait_until(lambda: healthy.metric("hotfolder_jobs_total", outcome="failed") == 1,
                   SECONDS, "the failed job counted")
        wait_until(lambda: unscanned.metric("hotfolder_waiting_jobs", reason="scanner") == 1,
                   SECONDS, "a job waiting for the scanner")
        port = free_port()
        targets = [daemon.metrics_url.removeprefix("http://") for daemon in (healthy, unscanned)]
        settings = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": targets}]}],
        }
        (base / "prometheus.yml").write_text(yaml.safe_dump(settings))
        url = f"http://127.0.0.1:{port}"
        argv = ["prometheus", f"--config.file={base / 'prometheus.yml'}",
                f"--storage.tsdb.path={base / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"]
        with serving(lambda: ServerProcess(argv, base / "prometheus.log",
                                           lambda: ready(f"{url}/-/ready")),
                     "Debian package prometheus"):
            found = Scraped(healthy, unscanned, url)
            # Two scrapes of the failed counter at least, so that rate() has something to say.
            wait_until(lambda: found.query(
                'count_over_time(hotfolder_jobs_total{outcome="failed"}[1m]) >= 2'),
                SECONDS, "two scrapes of the service in Prometheus")
            yield found
    finally:
        healthy.stop()
        unscanned.stop()


def test_metric_names_are_read_from_expressions() -> None:
    assert metric_names(
        'sum by (stage, le) (rate(a_bucket{x="y", z=~"b|c"}[5m])) / on (job) group_left() b'
        ' > 0.95 and time() - c:d offset 5m unless vector(0) > bool 1e3') == {"a_bucket", "b",
                                                                            "c:d"}


def test_every_metric_the_dashboard_and_rules_use_is_exported(scraped: Scraped) -> None:
    used = set()
    for _, expr in panel_queries():
        used |= metric_names(expr)
    for selector, _ in variable_queries():
        used |= metric_names(selector)
    for rule in rules():
        used |= metric_names(rule["expr"])

    def unexported() -> set[str]:
        exported = {sample.name for daemon in (scraped.healthy, scraped.unscanned)
                    for family in text_string_to_metric_families(daemon.get("/metrics")[1])
                    for sample in family.samples}
        return used - SCRAPE_SERIES - exported

    # The waiting job is queued again for a moment at each retry: no waiting_jobs sample then.
    wait_until(lambda: not unexported(), SECONDS, f"{sorted(unexported())} in /metrics")
    in_prometheus = set(scraped.api("label/__name__/values", **{"match[]": f'{{job="{JOB}"}}'}))
    assert used <= in_prometheus, f"not in Prometheus: {used - in_prometheus}"
    # What the dashboard must show: throughput, latencies, queue, waiting, scanner, watcher
    # (its full scans and its polls), failures, unwatched folders and memory.
    assert used >= {"hotfolder_jobs_total", "hotfolder_stage_seconds_bucket",
                    "hotfolder_queue_depth", "hotfolder_waiting_jobs", "hotfolder_scanner_up",
                    "hotfolder_watcher_last_scan_timestamp_seconds",
                    "hotfolder_watcher_unwatched_folders", "hotfolder_watcher_poll_seconds",
                    "hotfolder_resident_memory_bytes"}


def test_every_dashboard_query_runs_and_shows_the_service(scraped: Scraped) -> None:
    for title, expr in panel_queries():
        wait_until(lambda: scraped.query(expr), SECONDS,  # noqa: B023  (used at once)
                   f"panel {title!r} to show series for {expr}")
    throughput = next(expr for title, expr in panel_queries()
                      if title == "Throughput by recipe and outcome")
    assert {(series["metric"]["recipe"], series["metric"]["outcome"])
            for series in scraped.query(throughput)} == {("gray", "done"), ("gray", "failed")}
    waiting = next(expr for title, expr in panel_queries() if title == "Waiting jobs by reason")
    wait_until(lambda: [(s["metric"], s["value"][1]) for s in scraped.query(waiting)] == [
        ({"reason": "scanner"}, "1")], SECONDS, "one job waiting for the scanner")
    for series in scraped.query("hotfolder_resident_memory_bytes"):
        # The service and its two workers: tens to hundreds of MB.
        assert 20e6 < float(series["value"][1]) < 2e9, series
    for selector, label in variable_queries():
        values = scraped.api(f"label/{label}/values", **{"match[]": selector})
        assert values, f"variable over {label}: no values for {selector}"


def test_every_rule_loads_and_evaluates_without_error(scraped: Scraped) -> None:
    for rule in rules():
        scraped.query(rule["expr"])
    wait_until(lambda: all(r["health"] == "ok" for r in scraped.rule_states()), SECONDS,
               "every rule evaluated by Prometheus")
    assert {r["name"] for r in scraped.rule_states()} == {rule["alert"] for rule in rules()}


def test_only_the_missing_scanner_raises_an_alert(scraped: Scraped) -> None:
    def alerts() -> set[tuple[str, str, str]]:
        return {(a["labels"]["alertname"], a["labels"]["instance"], a["state"])
                for a in scraped.alerts()}

    # pending: firing would take the rule's `for:` of 2 minutes.
    wait_until(alerts, SECONDS, "an alert")
    wait_until(lambda: all(r["health"] == "ok" for r in scraped.rule_states()), SECONDS,
               "every rule evaluated by Prometheus")
    assert alerts() == {("HotfolderScannerDown", scraped.instance(scraped.unscanned), "pending")}


def test_promtool_checks_the_rules() -> None:
    checked = run_promtool("check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


def test_promtool_unit_tests_show_each_alert_firing_and_silent() -> None:
    tested = run_promtool("test", "rules", RULE_TESTS)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
             for case in test["alert_rule_test"]]
    for rule in rules():
        expected = [case["exp_alerts"] for case in cases if case["alertname"] == rule["alert"]]
        assert [] in expected, f"{rule['alert']}: no case where it stays silent"
        fired = [alert for alerts in expected for alert in alerts]
        assert fired, f"{rule['alert']}: no case where it fires"
        assert {alert["exp_labels"]["instance"] for alert in fired} == {"bad"}


def test_each_rule_says_in_words_what_is_wrong() -> None:
    for rule in rules():
        assert rule["for"], rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert len(rule["annotations"]["summary"]) > 20, rule["alert"]
        assert len(rule["annotations"]["description"]) > 80, rule["alert"]


def test_the_dashboard_takes_its_datasource_from_a_variable() -> None:
    board = dashboard()
    assert board["templating"]["list"][0] == {
        "name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
        "refresh": 1, "current": {}, "hide": 0}

    def datasources(node: Any) -> Iterator[Any]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource":
                    yield value
                else:
                    yield from datasources(value)
        elif isinstance(node, list):
            for item in node:
                yield from datasources(item)

    found = list(datasources(board))
    assert len(found) > len(board["panels"])  # each panel, each query and each variable
    assert all(datasource == DATASOURCE for datasource in found)
    ids = [panel["id"] for panel in board["panels"]]
    assert len(set(ids)) == len(ids)
    assert all(panel["description"] for panel in board["panels"])


def test_the_readme_names_every_panel_and_alert() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Prometheus and Grafana"):]
    section = section[:section.index("\n## ", 1)]
    for panel in dashboard()["panels"]:
        assert f"*{panel['title']}*" in section, panel["title"]
    for rule in rules():
        assert f"`{rule['alert']}`" in section, rule["alert"]
