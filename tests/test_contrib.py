"""contrib/: the Prometheus alert rules (promtool's own unit tests), the file_sd example, and the
Grafana dashboard: its queries checked by promtool against the metrics the daemon exports, its
JSON type-checked against Grafana's own schema (@grafana/schema)."""

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


# Grafana's own schema: @grafana/schema, the TypeScript types Grafana generates from its
# dashboard kind and from each panel plugin's kind (dev/bootstrap installs it and tsc into the
# venv). The dashboard must type-check against them: no key Grafana does not know (TypeScript's
# excess property check), no value of the wrong type or outside an enum. A panel's options and
# custom field config may leave keys out: Grafana fills them from the plugin's defaults.
PANEL_KINDS = {"timeseries": ("TimeSeries", "timeseries"), "stat": ("Stat", "stat"),
               "table": ("Table", "table"), "state-timeline": ("StateTimeline", "statetimeline")}
TS_HEADER = """\
import type { Dashboard } from "@grafana/schema";
// JSON has no enums: an enum's type accepts the strings it stands for.
type Literal<T> = T extends string ? `${T}` : T extends readonly (infer U)[] ? Literal<U>[]
  : T extends object ? { [K in keyof T]: Literal<T[K]> } : T;
type Defaulted<T> = T extends string ? `${T}` : T extends readonly (infer U)[] ? Defaulted<U>[]
  : T extends object ? { [K in keyof T]?: Defaulted<T[K]> } : T;
"""


def node_tools() -> Path:
    found = Path(sys.executable).parent.parent / "node"
    if not (found / "node_modules" / ".bin" / "tsc").is_file():
        pytest.fail(f"tsc and @grafana/schema are missing from {found}: dev/bootstrap installs"
                    " them from the npm registry", pytrace=False)
    return found


def typed_dashboard(dashboard: dict) -> str:
    """The dashboard as TypeScript, each part declared to satisfy Grafana's type for it."""
    lines = [TS_HEADER]
    kinds = sorted({p["type"] for p in dashboard["panels"]})
    for kind in kinds:
        assert kind in PANEL_KINDS, f"panel type {kind}: add its kind to PANEL_KINDS"
        name, folder = PANEL_KINDS[kind]
        lines.append(f'import type * as {name} from "@grafana/schema/dist/esm/raw/composable/'
                     f'{folder}/panelcfg/x/{name}PanelCfg_types.gen";')
    lines.append(f"export const dashboard = {json.dumps(dashboard, indent=1)}"
                 " satisfies Literal<Dashboard>;")
    for panel in dashboard["panels"]:
        name, _ = PANEL_KINDS[panel["type"]]
        pid = panel["id"]
        lines.append(f"export const options{pid} = {json.dumps(panel.get('options', {}))}"
                     f" satisfies Defaulted<{name}.Options>;")
        custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom")
        if custom is not None:
            lines.append(f"export const custom{pid} = {json.dumps(custom)}"
                         f" satisfies Defaulted<{name}.FieldConfig>;")
    return "\n".join(lines) + "\n"


def tsc(dashboard: dict, where: Path) -> subprocess.CompletedProcess[str]:
    tools = node_tools()
    (where / "dashboard.ts").write_text(typed_dashboard(dashboard))
    (where / "tsconfig.json").write_text(json.dumps({"compilerOptions": {
        "strict": True, "noEmit": True, "module": "esnext", "moduleResolution": "bundler",
        "target": "es2022", "skipLibCheck": True, "typeRoots": [],
        "baseUrl": ".", "paths": {"*": [str(tools / "node_modules" / "*")]}},
        "files": ["dashboard.ts"]}))
    return subprocess.run([str(tools / "node_modules" / ".bin" / "tsc"), "-p", str(where)],
                          capture_output=True, text=True, timeout=300, check=False)


def test_grafana_dashboard_matches_grafanas_own_schema(tmp_path):
    done = tsc(json.loads(DASHBOARD.read_text()), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def _misspelt_legend_key(d: dict) -> None:
    panel(d, "timeseries")["options"] = {"legend": {"displayMod": "list"}}


def _colour_mode_not_in_the_enum(d: dict) -> None:
    panel(d, "stat")["options"]["colorMode"] = "rainbow"


def _width_as_a_string(d: dict) -> None:
    panel(d, "table")["gridPos"]["w"] = "12"


def _misspelt_custom_field_config(d: dict) -> None:
    panel(d, "state-timeline")["fieldConfig"]["defaults"]["custom"] = {"fillOpacitee": 70}


def _misspelt_dashboard_key(d: dict) -> None:
    d["refersh"] = "30s"


def panel(dashboard: dict, kind: str) -> dict:
    return next(p for p in dashboard["panels"] if p["type"] == kind)


@pytest.mark.parametrize(("mistake", "reported"), [
    (_misspelt_legend_key, "'\"displayMod\"' does not exist"),
    (_colour_mode_not_in_the_enum, "'\"rainbow\"' is not assignable"),
    (_width_as_a_string, "'string' is not assignable to type 'number'"),
    (_misspelt_custom_field_config, "'\"fillOpacitee\"' does not exist"),
    (_misspelt_dashboard_key, "'\"refersh\"' does not exist"),
])
def test_grafana_schema_check_rejects_what_grafana_does_not_know(tmp_path, mistake, reported):
    """The check above can fail: each mistake alone is reported."""
    dashboard = json.loads(DASHBOARD.read_text())
    mistake(dashboard)
    done = tsc(dashboard, tmp_path)
    assert done.returncode != 0
    assert reported in done.stdout, done.stdout
