"""A real Prometheus server for tests (Debian's `prometheus` package): its own config, storage
and port, never the system service. Also finds `promtool` and the deploy/ files."""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).parents[2] / "deploy"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERT_RULES = DEPLOY / "prometheus" / "rules" / "fermata-dealer.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tests" / "fermata-dealer.test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "fermata-dealer.json"
SCRAPE_JOB = "fermata-dealer"
INSTALL_HINT = ("the tests need Prometheus: `apt-get install prometheus` (Debian/Ubuntu; "
                "`make test` does it when run as root), or put prometheus and promtool on PATH")

# Grafana's own variables, replaced as Grafana would for a recent time range: the rate window
# covers the whole test session (daemon start included), the range a little more.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "15s", "$__range": "10m"}


def binary(name: str) -> str:
    """The path of `prometheus` or `promtool`; fails the test (never skips) when missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: {INSTALL_HINT}", pytrace=False)
    return path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("promtool"), *args], capture_output=True, text=True,
                          timeout=120, check=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape_config_for(target: str, folder: Path) -> Path:
    """deploy/'s prometheus.yml with the dealer job pointed at `target` (host:port), scraping
    and evaluating every second, and the alert rules of deploy/ by absolute path."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update({"scrape_interval": "1s", "evaluation_interval": "1s"})
    config["rule_files"] = [str(ALERT_RULES)]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == SCRAPE_JOB]
    job.pop("dns_sd_configs")
    job["static_configs"] = [{"targets": [target]}]
    config["scrape_configs"] = [job]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Prometheus:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; answers `data`, raises with Prometheus' error otherwise."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 (loopback)
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise PromQLError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at the current time: the vector's samples."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else [
            {"metric": {}, "value": data["result"]}]
        return result

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:  # noqa: S310
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class PromQLError(Exception):
    """Prometheus refused a query."""


def start_prometheus(config: Path, folder: Path) -> Prometheus:
    """Run the binary on a free loopback port with its own storage (not the system service)."""
    port = free_port()
    log = folder / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary("prometheus"), f"--config.file={config}",
             f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
             "--storage.tsdb.retention.time=1h"],
            stdout=out, stderr=subprocess.STDOUT)
    return Prometheus(process, f"http://127.0.0.1:{port}", log)


def has_data(samples: list[dict[str, Any]]) -> bool:
    """At least one sample with a number (a quantile of nothing observed is NaN: no data)."""
    return any(not math.isnan(float(s["value"][1])) for s in samples)


def grafana_expr(expr: str, variables: dict[str, str]) -> str:
    """A panel's PromQL as Grafana sends it: its variables and Grafana's own replaced."""
    for name, value in {**GRAFANA_VARIABLES, **variables}.items():
        expr = expr.replace(name, value)
    return expr


# Metric names in PromQL: identifiers that are not functions, keywords, label names in
# `by (...)`-like clauses or matchers. Ours all start with these prefixes, plus `up`.
_METRIC = re.compile(r"\b(?:dealer|process|python)_[a-z0-9_]+\b|\bup\b")
_NOT_METRICS = re.compile(
    r"\{[^}]*\}|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)|\"[^\"]*\"")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects."""
    return set(_METRIC.findall(_NOT_METRICS.sub(" ", expr)))
