"""contrib/: the Prometheus alert rules (promtool's own unit tests), the file_sd example, and the
Grafana dashboard's queries, all checked by promtool against the metrics the daemon exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROM = REPO / "contrib" / "prometheus"
DASHBOARD = REPO / "contrib" / "grafana" / "llm-supervisor.json"
# Series the rules may use besides the daemon's own: node-exporter's, and the demotion gauge.
EXTERNAL = {"up", "node_textfile_mtime_seconds", "llm_supervisor_engine_demoted"}


def promtool() -> str:
    found = shutil.which("promtool") or str(Path(sys.executable).parent / "promtool")
    if not Path(found).is_file():
        pytest.fail("promtool is missing: dev/bootstrap extracts it from Debian's prometheus"
                    " package into the venv", pytrace=False)
    return found


def run(*argv: str, cwd: Path = PROM) -> str:
    done = subprocess.run([promtool(), *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def exported_metrics() -> set[str]:
    source = (REPO / "llm_supervisor" / "records" / "metrics.py").read_text()
    names = set(re.findall(r'"(llm_supervisor_[a-z_]+)"', source))
    histograms = {"llm_supervisor_check_latency_seconds"}
    return names | {f"{h}_{s}" for h in histograms for s in ("bucket", "sum", "count")}


def metric_names(expr: str) -> set[str]:
    words = set(re.findall(r"\b([a-z_][a-z0-9_]*)\s*(?:\{|\[|\)|\s*[<>=!]|$)", expr))
    keywords = {"sum", "by", "on", "max", "count", "rate", "increase", "unless", "time",
                "histogram_quantile", "vector", "or", "and", "le"}
    return {w for w in words if w.startswith(("llm_", "node_")) or w == "up"} - keywords


def test_promtool_check_rules():
    assert "SUCCESS: 8 rules found" in run("check", "rules", "llm-supervisor.rules.yml")


def test_promtool_test_rules():
    assert "SUCCESS" in run("test", "rules", "llm-supervisor.rules.test.yml")


def test_prometheus_config_and_file_sd_example():
    run("check", "config", "prometheus.yml")
    import yaml  # ansible-core's dependency, in the test extra

    groups = yaml.safe_load((PROM / "file_sd" / "llm-hosts.yml").read_text())
    assert all(g["targets"] and all(re.match(r"^[\w.-]+:\d+$", t) for t in g["targets"])
               for g in groups)


def test_rules_use_only_metrics_that_exist():
    import yaml

    rules = yaml.safe_load((PROM / "llm-supervisor.rules.yml").read_text())
    known = exported_metrics() | EXTERNAL
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {"LLMSupervisorDown", "LLMEngineDemoted", "LLMEngineFailed", "LLMEngineBlocked",
            "LLMRebootRequired", "LLMCanarySlow"} <= alerts
    for group in rules["groups"]:
        for rule in group["rules"]:
            used = metric_names(rule["expr"])
            assert used and used <= known, (rule["alert"], used - known)


def test_grafana_dashboard_queries_are_valid_promql(tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    known = exported_metrics() | EXTERNAL
    for expr in exprs:
        assert metric_names(expr) <= known, (expr, metric_names(expr) - known)
    # promtool parses every query, with the dashboard's variables filled in
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": e.replace("$instance", ".*")
         .replace("$engine", ".*")} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(json.dumps(rules))
    run("check", "rules", str(path))
