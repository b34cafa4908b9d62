"""deploy/ holds together: the compose file parses and refers only to files and services that
exist, the dealer gets only settings it knows, Prometheus accepts its config and rules (and the
rules' own unit tests pass), and the dashboard is a well-formed Grafana dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from dealer.settings import Settings
from tests.integration.prometheus import (
    ALERT_RULES,
    DASHBOARD,
    DEPLOY,
    PROMETHEUS_CONFIG,
    RULE_TESTS,
    SCRAPE_JOB,
    metric_names,
    promtool,
)

COMPOSE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DOCKERFILE = DEPLOY / "Dockerfile"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "fermata-dealer.yml"
SETTINGS = {f"DEALER_{name.upper()}" for name in Settings.model_fields}
# ${NAME}, ${NAME:-default}, ${NAME:?message}
_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return compose


def _env_example() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    return {key: value for key, value in pairs}


def _bind_sources(service: dict[str, Any]) -> list[str]:
    """Host paths a service mounts (named volumes are not paths)."""
    sources = []
    for volume in service.get("volumes", []):
        source = volume["source"] if isinstance(volume, dict) else volume.split(":", 1)[0]
        if source.startswith((".", "/")):
            sources.append(source)
    return sources


def test_compose_has_the_services_of_the_deployment() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "ledger-postgres", "ledger", "gateway", "dealer",
                             "prometheus", "grafana"}
    assert services["ledger"]["image"].startswith("ghcr.io/formancehq/ledger:")
    assert "v2" in services["ledger"]["image"]


def test_compose_refers_only_to_files_and_services_that_exist() -> None:
    compose = _compose()
    services = compose["services"]
    declared_volumes = set(compose.get("volumes", {}))
    for name, service in services.items():
        for source in _bind_sources(service):
            assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared_volumes, f"{name} uses undeclared volume {source}"
        build = service.get("build")
        if build is not None:
            context = DEPLOY / (build if isinstance(build, str) else build["context"])
            assert context.is_dir(), f"{name} builds from missing {context}"
            dockerfile = context / (build.get("dockerfile", "Dockerfile")
                                    if isinstance(build, dict) else "Dockerfile")
            assert dockerfile.is_file(), f"{name} builds from missing {dockerfile}"
        env_files = service.get("env_file", [])
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            path = env_file if isinstance(env_file, str) else env_file["path"]
            assert (DEPLOY / path).is_file(), f"{name} reads missing {path}"
        depends = service.get("depends_on", [])
        for dependency in depends if isinstance(depends, list) else list(depends):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        assert service.get("image") or build, name
    assert set(services["dealer"]["depends_on"]) == {"postgres", "ledger"}


def test_every_compose_variable_is_in_env_example() -> None:
    used = set(_VARIABLE.findall(COMPOSE.read_text()))
    assert used, "the compose file takes its settings from .env"
    assert used - set(_env_example()) == set()


def test_the_dealer_gets_only_settings_it_knows() -> None:
    """The daemon refuses unknown DEALER_* variables: a typo here would stop it."""
    environment = _compose()["services"]["dealer"]["environment"]
    assert set(environment) - SETTINGS == set()
    assert environment["DEALER_LEDGER_BACKEND"] == "${DEALER_LEDGER_BACKEND:-local}"
    assert {key for key in _env_example() if key.startswith("DEALER_")} - SETTINGS == set()
    assert _env_example()["DEALER_LEDGER_BACKEND"] in {"local", "formance"}
    image_defaults = {line.split("=", 1)[0] for line in re.findall(
        r"^\s+(DEALER_[A-Z_]+=\S+)", DOCKERFILE.read_text(), re.MULTILINE)}
    assert image_defaults
    assert image_defaults - SETTINGS == set()


def test_dockerfile_is_slim_and_runs_unprivileged() -> None:
    text = DOCKERFILE.read_text()
    assert all("slim" in line for line in re.findall(r"^FROM .*$", text, re.MULTILINE))
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users
    assert not users[-1].startswith(("root", "0"))
    root = DEPLOY.parent
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.MULTILINE):
        for source in sources.split():
            assert (root / source).exists(), source
    assert "constraints.txt" in text  # the same pinned versions as the tests


def test_promtool_accepts_the_config_and_rules_and_their_tests_pass() -> None:
    for args in (("check", "config", str(PROMETHEUS_CONFIG)),
                 ("check", "rules", str(ALERT_RULES)),
                 ("test", "rules", str(RULE_TESTS))):
        done = promtool(*args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)


def test_every_alert_is_documented_and_has_a_rule_test() -> None:
    rules = [rule for group in yaml.safe_load(ALERT_RULES.read_text())["groups"]
             for rule in group["rules"]]
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in test["alert_rule_test"] if case.get("exp_alerts")}
    wanted = {"DealerDown", "LpBookStale", "HedgeJobsFailed", "UnhedgedExposureOverLimit",
              "KillSwitchEngaged", "LedgerOutboxBacklog", "ReconciliationDrift"}
    names = {rule["alert"] for rule in rules}
    assert wanted <= names
    assert names - tested == set(), "every alert has a promtool case where it fires"
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule
        assert rule["annotations"]["summary"], rule
        assert rule["annotations"]["description"], rule
        assert metric_names(rule["expr"]), rule


def test_prometheus_scrapes_every_dealer_replica() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == SCRAPE_JOB]
    assert job["metrics_path"] == "/metrics"
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["dealer"]  # the compose service, one address per replica
    assert discovery["port"] == 8080


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def test_dashboard_is_a_well_formed_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    datasource = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", dashboard["uid"])
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["schemaVersion"] >= 36
    assert "id" not in dashboard or dashboard["id"] is None  # provisioning assigns it
    panels = _panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    known_types = {"row", "timeseries", "stat", "bargauge", "state-timeline", "table", "gauge"}
    for panel in panels:
        assert panel["type"] in known_types, panel["title"]
        assert panel["title"]
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y")), panel["title"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["w"] > 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}
        assert panel.get("description"), panel["title"]
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets)
        for target in targets:
            assert target["datasource"] == panel["datasource"]
            assert target["expr"].strip()
            assert 'job="fermata-dealer"' in target["expr"], target["expr"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    used = {name for panel in panels for target in panel.get("targets", [])
            for name in re.findall(r"\$(\w+)", target["expr"]) if not name.startswith("__")}
    assert used <= set(variables)
    for variable in variables.values():
        assert variable["datasource"]["uid"] == datasource["uid"]


def test_dashboard_covers_what_the_desk_watches() -> None:
    exprs = " ".join(target["expr"] for panel in _panels(json.loads(DASHBOARD.read_text()))
                     for target in panel.get("targets", []))
    names = metric_names(exprs)
    for metric in ("dealer_quotes_total", "dealer_quotes_expired_total",
                   "dealer_quote_duration_seconds_bucket",
                   "dealer_quote_accepts_total", "dealer_hedge_first_order_latency_seconds_bucket",
                   "dealer_hedge_fill_to_hedged_seconds_bucket", "dealer_hedge_slippage_bps_bucket",
                   "dealer_hedge_jobs_open", "dealer_hedge_jobs_finished_total",
                   "dealer_hedge_carry_jobs_total",
                   "dealer_unhedged_exposure", "dealer_lp_book_age_seconds",
                   "dealer_ledger_outbox_pending", "dealer_ledger_outbox_oldest_age_seconds",
                   "dealer_reconciliation_drift", "dealer_http_requests_total",
                   "dealer_http_request_duration_seconds_bucket", "process_cpu_seconds_total",
                   "process_resident_memory_bytes", "up"):
        assert metric in names, metric


def test_grafana_provisioning_points_at_the_dashboard_folder() -> None:
    provider = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"][0]
    grafana = _compose()["services"]["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"]
                  if volume.startswith("./"))
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert Path(DEPLOY / "grafana" / "dashboards" / DASHBOARD.name).is_file()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"
    prometheus = _compose()["services"]["prometheus"]
    assert any(v.startswith("./prometheus/rules:") for v in prometheus["volumes"])
