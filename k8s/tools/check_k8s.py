#!/usr/bin/env python3
"""Offline validation of Switchboard's deployment artifacts. Run through scripts/check-k8s,
which installs the tools this needs (kubernetes-validate, promtool, PyYAML).

Checks, per step (any failure -> exit 1):
  render     base + overlays render (kubectl kustomize when present, cross-checked against
             k8s/tools/kustomize_lite.py; the lite renderer alone otherwise)
  schema     kubernetes-validate --strict on every built-in-kind object of every render and on
             secret.example.yaml, for the oldest and newest Kubernetes versions it ships
  crds       ServiceMonitor / PrometheusRule: required fields, known field names, durations;
             plus the @kubernetes-models/prometheus-operator schema when node is available
  extras     k8s/extras/: YAML lint (duplicate keys, tabs); the Gateway API HTTPRoute's structure,
             durations and backend (the client Service and its port), plus the
             @kubernetes-models/gateway-api schema when node is available
  rules      promtool check rules on the PrometheusRule spec; promtool test rules with
             k8s/tests/alerts.test.yaml; alert policy (severity, summary, description,
             runbook_url whose anchor exists in docs/operations.md)
  dashboard  json.tool; Grafana structure ($datasource, $server_instance, ids, grid); every
             PromQL expression parses (promtool, Grafana variables substituted)
  metrics    every metric name in alerts, dashboard, tests and the adapter rule is in
             k8s/metrics.txt
  docs       every docs/operations.md#anchor referenced from k8s/ and every in-page link of
             docs/operations.md resolves; deploy / scale / drain sections exist
  wiring     cross-object consistency (selectors, ports, probes, drain budget, node id, config
             keys, overlay expectations) and Dockerfile / .dockerignore essentials
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
K8S = os.path.join(ROOT, "k8s")
sys.dont_write_bytecode = True  # no __pycache__ inside k8s/tools
sys.path.insert(0, os.path.join(K8S, "tools"))
import kustomize_lite  # noqa: E402

TARGETS = {"base": "k8s/base", "dev": "k8s/overlays/dev", "prod": "k8s/overlays/prod"}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
K8S_VERSIONS = os.environ.get("K8S_VERSIONS", "1.25.0 1.37.0").split()
SEVERITIES = {"critical", "warning", "info"}

# Every SWITCHBOARD_* variable of the configuration contract (DESIGN.md) and of `switchboard
# --help`. The ConfigMap and the Secret template may only use these.
KNOWN_ENV = {
    "SWITCHBOARD_LISTEN", "SWITCHBOARD_ADMIN_LISTEN", "SWITCHBOARD_CLUSTER_KEY",
    "SWITCHBOARD_NODE_ID", "SWITCHBOARD_JWT_SECRET",
    "SWITCHBOARD_JWT_PUBLIC_KEY_FILE", "SWITCHBOARD_JWT_ISSUER", "SWITCHBOARD_JWT_AUDIENCE",
    "SWITCHBOARD_JWT_LEEWAY_SECS", "SWITCHBOARD_REDIS_URL", "SWITCHBOARD_DATABASE_URL",
    "SWITCHBOARD_API_KEY", "SWITCHBOARD_CORS_ORIGINS", "SWITCHBOARD_PING_INTERVAL_MS",
    "SWITCHBOARD_PING_TIMEOUT_MS", "SWITCHBOARD_CONNECT_TIMEOUT_MS",
    "SWITCHBOARD_UPGRADE_TIMEOUT_MS", "SWITCHBOARD_MAX_PAYLOAD", "SWITCHBOARD_MAX_EVENT_BYTES",
    "SWITCHBOARD_MAX_BUFFERED_FRAMES", "SWITCHBOARD_WORKERS", "SWITCHBOARD_SOCKET_EVENT_LIMIT",
    "SWITCHBOARD_SOCKET_EVENT_WINDOW_MS", "SWITCHBOARD_USER_MESSAGE_LIMIT",
    "SWITCHBOARD_USER_MESSAGE_WINDOW_MS", "SWITCHBOARD_DRAIN_SECS", "SWITCHBOARD_LOG",
    "SWITCHBOARD_CONFORMANCE", "SWITCHBOARD_ADVERTISE_URL", "SWITCHBOARD_FORWARD_TIMEOUT_MS",
}
SECRET_KEYS = {"SWITCHBOARD_JWT_SECRET", "SWITCHBOARD_API_KEY", "SWITCHBOARD_REDIS_URL",
               "SWITCHBOARD_DATABASE_URL", "SWITCHBOARD_CLUSTER_KEY"}
# Paths only the admin listener serves: never routed by an Ingress.
ADMIN_PATHS = ("/api/", "/metrics")

DURATION = re.compile(r"^(0|(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?)$")

# Field names prometheus-operator (v0.7x, monitoring.coreos.com/v1) accepts where we use them.
SM_SPEC_FIELDS = {"selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels",
                  "podTargetLabels", "sampleLimit", "targetLimit", "labelLimit",
                  "labelNameLengthLimit", "labelValueLengthLimit", "attachMetadata",
                  "scrapeProtocols", "keepDroppedTargets", "bodySizeLimit",
                  "scrapeClassicHistograms", "nativeHistogramBucketLimit",
                  "nativeHistogramMinBucketFactor", "fallbackScrapeProtocol", "scrapeClass",
                  "selectorMechanism", "convertClassicHistogramsToNHCB", "serviceDiscoveryRole"}
SM_ENDPOINT_FIELDS = {"port", "targetPort", "path", "scheme", "params", "interval",
                      "scrapeTimeout", "tlsConfig", "bearerTokenFile", "bearerTokenSecret",
                      "authorization", "honorLabels", "honorTimestamps", "trackTimestampsStaleness",
                      "basicAuth", "oauth2", "metricRelabelings", "relabelings", "proxyUrl",
                      "followRedirects", "enableHttp2", "filterRunning", "noProxy",
                      "proxyFromEnvironment", "proxyConnectHeader", "scrapeFallbackProtocol"}
RULE_GROUP_FIELDS = {"name", "interval", "rules", "limit", "partial_response_strategy",
                     "query_offset", "labels"}
RULE_FIELDS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                   "and", "or", "unless", "offset", "inf", "nan", "atan2", "start", "end"}


class Checker:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.tmp = tempfile.mkdtemp(prefix="check-k8s-")
        self.renders: dict[str, list[dict]] = {}
        self.promtool = shutil.which("promtool")

    # -------------------------------------------------------------- reporting
    def fail(self, step: str, msg: str) -> None:
        self.failures.append(f"[{step}] {msg}")
        print(f"  FAIL {msg}")

    def ok(self, msg: str) -> None:
        print(f"  ok   {msg}")

    def note(self, msg: str) -> None:
        self.notes.append(msg)
        print(f"  note {msg}")

    def run(self, cmd: list[str], cwd: str | None = None, input: str | None = None):
        return subprocess.run(cmd, cwd=cwd, input=input, capture_output=True, text=True)

    # -------------------------------------------------------------- render
    def step_render(self) -> None:
        print("render")
        # CHECK_K8S_NO_KUBECTL=1 exercises the fresh-machine path (offline renderer only).
        kubectl = None if os.environ.get("CHECK_K8S_NO_KUBECTL") else shutil.which("kubectl")
        if kubectl:
            # Old kubectl (e.g. Debian's 1.20) embeds kustomize v2, which predates `patches`.
            r = self.run([kubectl, "version", "--client", "-o", "json"])
            try:
                kv = json.loads(r.stdout).get("kustomizeVersion", "")
            except ValueError:
                kv = ""
            m = re.match(r"v?(\d+)\.", kv)
            if not m or int(m.group(1)) < 4:
                self.note(f"kubectl's embedded kustomize {kv or '(unknown)'} is older than v4: not used")
                kubectl = None
        for name, rel in TARGETS.items():
            path = os.path.join(ROOT, rel)
            try:
                lite = kustomize_lite.build(path)
            except Exception as e:  # noqa: BLE001 - report any renderer failure
                self.fail("render", f"{rel}: kustomize_lite: {e}")
                continue
            chosen = lite
            if kubectl:
                r = self.run([kubectl, "kustomize", path])
                if r.returncode != 0:
                    self.fail("render", f"{rel}: kubectl kustomize: {r.stderr.strip()}")
                    continue
                real = [d for d in yaml.safe_load_all(r.stdout) if d]
                key = lambda o: json.dumps(o, sort_keys=True)  # noqa: E731
                if sorted(map(key, real)) != sorted(map(key, lite)):
                    ids_real = {kustomize_lite.res_id(o) for o in real}
                    ids_lite = {kustomize_lite.res_id(o) for o in lite}
                    self.fail("render", f"{rel}: kustomize_lite differs from kubectl kustomize "
                                        f"(only kubectl: {sorted(map(str, ids_real - ids_lite))}, "
                                        f"only lite: {sorted(map(str, ids_lite - ids_real))}, "
                                        "or contents differ)")
                chosen = real
            self.renders[name] = chosen
            with open(os.path.join(self.tmp, f"{name}.yaml"), "w") as f:
                yaml.safe_dump_all(chosen, f, sort_keys=False)
            kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in chosen)
            self.ok(f"{rel}: {len(chosen)} objects ({', '.join(kinds)})")
        if kubectl:
            self.ok("kustomize_lite output equals kubectl kustomize for every target")
        else:
            self.note("kubectl not available: rendered with k8s/tools/kustomize_lite.py only")

    # -------------------------------------------------------------- schema
    def step_schema(self) -> None:
        print("schema (kubernetes-validate --strict)")
        files = []
        outdir = os.path.join(self.tmp, "builtin")
        os.makedirs(outdir, exist_ok=True)
        for name, objs in self.renders.items():
            for o in objs:
                if o["kind"] in CRD_KINDS:
                    continue
                fn = os.path.join(outdir, f"{name}--{o['kind']}--{o['metadata']['name']}.yaml")
                with open(fn, "w") as f:
                    yaml.safe_dump(o, f, sort_keys=False)
                files.append(fn)
        files.append(os.path.join(K8S, "base", "secret.example.yaml"))
        exe = shutil.which("kubernetes-validate")
        cmd = [exe] if exe else [sys.executable, "-m", "kubernetes_validate"]
        for version in K8S_VERSIONS:
            r = self.run(cmd + ["--strict", "--quiet", "-k", version] + files)
            out = (r.stdout + r.stderr).strip()
            if r.returncode != 0:
                self.fail("schema", f"Kubernetes {version}:\n{out}")
            else:
                self.ok(f"Kubernetes {version}: {len(files)} objects valid (strict)")

    # -------------------------------------------------------------- CRDs
    def step_crds(self) -> None:
        print("crds (ServiceMonitor, PrometheusRule)")
        crds = [o for objs in self.renders.values() for o in objs if o["kind"] in CRD_KINDS]
        seen = set()
        for o in crds:
            ident = (o["kind"], json.dumps(o, sort_keys=True))
            if ident in seen:
                continue
            seen.add(ident)
            where = f"{o['kind']}/{o['metadata'].get('name')}"
            errs = self.crd_errors(o)
            for e in errs:
                self.fail("crds", f"{where}: {e}")
            if not errs:
                self.ok(f"{where} ({o['metadata'].get('namespace', 'no namespace')}): structure")
        self.crd_schema_npm(crds)

    def crd_errors(self, o: dict) -> list[str]:
        errs = []
        if o.get("apiVersion") != "monitoring.coreos.com/v1":
            errs.append(f"apiVersion {o.get('apiVersion')} != monitoring.coreos.com/v1")
        if set(o) - {"apiVersion", "kind", "metadata", "spec"}:
            errs.append(f"unknown top-level fields {sorted(set(o) - {'apiVersion', 'kind', 'metadata', 'spec'})}")
        if not o.get("metadata", {}).get("name"):
            errs.append("metadata.name missing")
        spec = o.get("spec")
        if not isinstance(spec, dict):
            return errs + ["spec missing"]
        if o["kind"] == "ServiceMonitor":
            unknown = set(spec) - SM_SPEC_FIELDS
            if unknown:
                errs.append(f"unknown spec fields {sorted(unknown)}")
            sel = spec.get("selector")
            if not isinstance(sel, dict) or not (sel.get("matchLabels") or sel.get("matchExpressions")):
                errs.append("spec.selector needs matchLabels or matchExpressions")
            eps = spec.get("endpoints")
            if not isinstance(eps, list) or not eps:
                errs.append("spec.endpoints must be a non-empty list")
                eps = []
            for i, ep in enumerate(eps):
                unknown = set(ep) - SM_ENDPOINT_FIELDS
                if unknown:
                    errs.append(f"endpoints[{i}]: unknown fields {sorted(unknown)}")
                if not (ep.get("port") or ep.get("targetPort")):
                    errs.append(f"endpoints[{i}]: port or targetPort required")
                for d in ("interval", "scrapeTimeout"):
                    if d in ep and not (isinstance(ep[d], str) and DURATION.match(ep[d])):
                        errs.append(f"endpoints[{i}].{d}: {ep[d]!r} is not a duration")
                if "interval" in ep and "scrapeTimeout" in ep and \
                        seconds(ep["scrapeTimeout"]) > seconds(ep["interval"]):
                    errs.append(f"endpoints[{i}]: scrapeTimeout longer than interval")
                if ep.get("scheme", "http") not in ("http", "https"):
                    errs.append(f"endpoints[{i}].scheme must be http or https")
        else:
            if set(spec) - {"groups"}:
                errs.append(f"unknown spec fields {sorted(set(spec) - {'groups'})}")
            groups = spec.get("groups")
            if not isinstance(groups, list) or not groups:
                return errs + ["spec.groups must be a non-empty list"]
            names = [g.get("name") for g in groups]
            if len(set(names)) != len(names):
                errs.append("group names must be unique")
            for g in groups:
                gn = g.get("name")
                if not gn:
                    errs.append("group without name")
                unknown = set(g) - RULE_GROUP_FIELDS
                if unknown:
                    errs.append(f"group {gn}: unknown fields {sorted(unknown)}")
                if "interval" in g and not DURATION.match(str(g["interval"])):
                    errs.append(f"group {gn}: interval {g['interval']!r} is not a duration")
                rules = g.get("rules")
                if not isinstance(rules, list) or not rules:
                    errs.append(f"group {gn}: rules must be a non-empty list")
                    continue
                for r in rules:
                    rid = r.get("alert") or r.get("record")
                    unknown = set(r) - RULE_FIELDS
                    if unknown:
                        errs.append(f"rule {rid}: unknown fields {sorted(unknown)}")
                    if bool(r.get("alert")) == bool(r.get("record")):
                        errs.append(f"rule {rid}: exactly one of alert / record")
                    if not isinstance(r.get("expr"), str) or not r["expr"].strip():
                        errs.append(f"rule {rid}: expr must be a non-empty string")
                    for d in ("for", "keep_firing_for"):
                        if d in r and not (isinstance(r[d], str) and DURATION.match(r[d])):
                            errs.append(f"rule {rid}: {d} {r[d]!r} is not a duration")
                    for m in ("labels", "annotations"):
                        if m in r and not all(isinstance(v, str) for v in (r[m] or {}).values()):
                            errs.append(f"rule {rid}: {m} values must be strings")
        return errs

    def crd_schema_npm(self, crds: list[dict]) -> None:
        mod = os.environ.get("PROM_OPERATOR_MODELS")
        node = shutil.which("node")
        if not mod or not node or not os.path.isdir(mod):
            self.note("@kubernetes-models/prometheus-operator not available (needs node + npm): "
                      "CRD schema check skipped, the structural checks above still ran")
            return
        r = self.run([node, os.path.join(K8S, "tools", "validate_crds.mjs"), mod],
                     input=json.dumps(crds))
        if r.returncode != 0:
            self.fail("crds", f"prometheus-operator schema: {(r.stdout + r.stderr).strip()}")
        else:
            self.ok(f"prometheus-operator schema (@kubernetes-models/prometheus-operator): "
                    f"{r.stdout.strip()}")

    # -------------------------------------------------------------- extras
    def step_extras(self) -> None:
        print("extras (k8s/extras: YAML lint, Gateway API HTTPRoute)")
        extras = os.path.join(K8S, "extras")
        routes = []
        for fn in sorted(os.listdir(extras)):
            if not fn.endswith((".yaml", ".yml")):
                continue
            path = os.path.join(extras, fn)
            rel = os.path.relpath(path, ROOT)
            text = open(path, encoding="utf-8").read()
            try:
                docs = [d for d in yaml.load_all(text, Loader=StrictLoader) if d is not None]
            except yaml.YAMLError as e:
                self.fail("extras", f"{rel}: {e}")
                continue
            if "\t" in text:
                self.fail("extras", f"{rel}: tab characters")
                continue
            self.ok(f"{rel}: YAML lint (no duplicate keys, no tabs), {len(docs)} document(s)")
            routes += [(rel, d) for d in docs if isinstance(d, dict) and d.get("kind") == "HTTPRoute"]
        if not routes:
            self.fail("extras", "no Gateway API HTTPRoute in k8s/extras")
            return
        services = {o["metadata"]["name"]: o for o in self.renders.get("base", []) if o["kind"] == "Service"}
        for rel, route in routes:
            errs = httproute_errors(route, services)
            for e in errs:
                self.fail("extras", f"{rel}: {e}")
            if not errs:
                self.ok(f"{rel}: HTTPRoute/{route['metadata']['name']} structure, durations, backends "
                        "(the client Service and its port), websocket rule without a request timeout")
        mod = os.environ.get("GATEWAY_API_MODELS")
        node = shutil.which("node")
        if not mod or not node or not os.path.isdir(mod):
            self.note("@kubernetes-models/gateway-api not available (needs node + npm): HTTPRoute "
                      "schema check skipped, the structural checks above still ran")
            return
        r = self.run([node, os.path.join(K8S, "tools", "validate_crds.mjs"), mod,
                      "gateway.networking.k8s.io/v1"], input=json.dumps([r for _, r in routes]))
        if r.returncode != 0:
            self.fail("extras", f"Gateway API schema: {(r.stdout + r.stderr).strip()}")
        else:
            self.ok(f"Gateway API schema (@kubernetes-models/gateway-api): {r.stdout.strip()}")

    # -------------------------------------------------------------- rules
    def prometheus_rule(self) -> dict | None:
        for o in self.renders.get("base", []):
            if o["kind"] == "PrometheusRule":
                return o
        return None

    def step_rules(self) -> None:
        print("rules (promtool)")
        rule = self.prometheus_rule()
        if not rule:
            self.fail("rules", "no PrometheusRule in k8s/base")
            return
        if not self.promtool:
            self.fail("rules", "promtool not found (Debian package prometheus)")
            return
        d = os.path.join(self.tmp, "rules")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "switchboard-rules.yaml"), "w") as f:
            yaml.safe_dump(rule["spec"], f, sort_keys=False)
        shutil.copy(os.path.join(K8S, "tests", "alerts.test.yaml"), d)
        r = self.run([self.promtool, "check", "rules", "switchboard-rules.yaml"], cwd=d)
        if r.returncode != 0:
            self.fail("rules", f"promtool check rules:\n{(r.stdout + r.stderr).strip()}")
        else:
            self.ok(f"promtool check rules: {r.stdout.strip().splitlines()[-1].strip()}")
        r = self.run([self.promtool, "test", "rules", "alerts.test.yaml"], cwd=d)
        if r.returncode != 0:
            self.fail("rules", f"promtool test rules:\n{(r.stdout + r.stderr).strip()}")
        else:
            tested = sorted({t["alertname"] for test in yaml.safe_load(
                open(os.path.join(d, "alerts.test.yaml")))["tests"] for t in test.get("alert_rule_test", [])})
            self.ok(f"promtool test rules: SUCCESS ({', '.join(tested)})")
            for must in ("RedisConnectionLost", "ActorMailboxBacklog"):
                if must not in tested:
                    self.fail("rules", f"alerts.test.yaml must exercise {must}")

        anchors = doc_anchors(os.path.join(ROOT, "docs", "operations.md"))
        alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
        names = [a["alert"] for a in alerts]
        if len(set(names)) != len(names):
            self.fail("rules", "duplicate alert names")
        required = {"HighSocketErrorRate", "RedisConnectionLost", "HighMemoryUsage",
                    "SocketConnectionChurn", "ActorMailboxBacklog", "SlowConsumerDisconnects",
                    "NodeDrainingTooLong"}
        missing = required - set(names)
        if missing:
            self.fail("rules", f"missing required alerts {sorted(missing)}")
        bad = 0
        for a in alerts:
            n = a["alert"]
            sev = (a.get("labels") or {}).get("severity")
            if sev not in SEVERITIES:
                self.fail("rules", f"{n}: severity label must be one of {sorted(SEVERITIES)}")
                bad += 1
            ann = a.get("annotations") or {}
            for key in ("summary", "description", "runbook_url"):
                if not ann.get(key):
                    self.fail("rules", f"{n}: annotation {key} missing")
                    bad += 1
            url = ann.get("runbook_url", "")
            anchor = url.split("#", 1)[1] if "#" in url else ""
            if "docs/operations.md#" not in url or anchor != n.lower():
                self.fail("rules", f"{n}: runbook_url must end in docs/operations.md#{n.lower()}")
                bad += 1
            elif anchor not in anchors:
                self.fail("rules", f"{n}: docs/operations.md has no section #{anchor}")
                bad += 1
        if not bad:
            self.ok(f"{len(alerts)} alerts: severity, summary, description, runbook_url -> "
                    "existing docs/operations.md sections")

    # -------------------------------------------------------------- dashboard
    def step_dashboard(self) -> None:
        print("dashboard")
        path = os.path.join(K8S, "base", "dashboards", "switchboard.json")
        r = self.run([sys.executable, "-m", "json.tool", path])
        if r.returncode != 0:
            self.fail("dashboard", f"json.tool: {r.stderr.strip()}")
            return
        self.ok("python3 -m json.tool: valid JSON")
        dash = json.load(open(path))
        tmpl = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
        if tmpl.get("datasource", {}).get("type") != "datasource" or \
                tmpl["datasource"].get("query") != "prometheus":
            self.fail("dashboard", "template variable `datasource` (type datasource, prometheus) missing")
        if "server_instance" not in tmpl and "instance" not in tmpl:
            self.fail("dashboard", "template variable `server_instance` (or `instance`) missing")
        if not dash.get("uid") or not dash.get("title"):
            self.fail("dashboard", "uid and title required")
        ids, exprs = set(), []
        panels = list(walk_panels(dash.get("panels", [])))
        for p in panels:
            pid = p.get("id")
            if pid in ids:
                self.fail("dashboard", f"duplicate panel id {pid}")
            ids.add(pid)
            g = p.get("gridPos", {})
            if not g or g.get("x", 0) + g.get("w", 0) > 24:
                self.fail("dashboard", f"panel {p.get('title')}: gridPos missing or wider than 24")
            if p.get("type") == "row":
                continue
            if (p.get("datasource") or {}).get("uid") != "${datasource}":
                self.fail("dashboard", f"panel {p.get('title')}: datasource must be ${{datasource}}")
            targets = p.get("targets") or []
            if not targets:
                self.fail("dashboard", f"panel {p.get('title')}: no queries")
            for t in targets:
                if (t.get("datasource") or {}).get("uid") != "${datasource}":
                    self.fail("dashboard", f"panel {p.get('title')} {t.get('refId')}: datasource must be ${{datasource}}")
                exprs.append((f"panel {p.get('title')!r} {t.get('refId')}", t.get("expr", "")))
        for a in dash.get("annotations", {}).get("list", []):
            if a.get("expr"):
                exprs.append((f"annotation {a.get('name')!r}", a["expr"]))
        for v in tmpl.values():
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            if v.get("type") == "query":
                m = re.match(r"^\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$", q or "")
                if not m:
                    self.fail("dashboard", f"variable {v['name']}: expected label_values(selector, label)")
                else:
                    exprs.append((f"variable {v['name']}", m.group(1)))
        self.dashboard_exprs = exprs
        titles = " | ".join(p.get("title", "") for p in panels if p.get("type") != "row")
        self.ok(f"{len(panels)} panels, {len(exprs)} queries; structure ok")
        self.check_promql_syntax(exprs)
        self.check_panel_coverage(exprs, titles)

    def check_promql_syntax(self, exprs: list[tuple[str, str]]) -> None:
        if not self.promtool:
            self.fail("dashboard", "promtool not found: cannot parse the dashboard's PromQL")
            return
        rules = []
        for i, (_, e) in enumerate(exprs):
            rules.append({"record": f"dashboard:query_{i}", "expr": grafana_to_promql(e)})
        d = os.path.join(self.tmp, "dash")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "dashboard-queries.yaml"), "w") as f:
            yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, sort_keys=False)
        r = self.run([self.promtool, "check", "rules", "dashboard-queries.yaml"], cwd=d)
        if r.returncode != 0:
            out = (r.stdout + r.stderr).strip()
            for m in re.finditer(r"dashboard:query_(\d+)", out):
                self.fail("dashboard", f"{exprs[int(m.group(1))][0]} does not parse")
            self.fail("dashboard", f"promtool on dashboard queries:\n{out}")
        else:
            self.ok(f"all {len(exprs)} dashboard queries parse (promtool, Grafana variables substituted)")

    def check_panel_coverage(self, exprs, titles) -> None:
        joined = "\n".join(e for _, e in exprs)
        wanted = {
            "active connections": "socket_connections_active",
            "connection rate by status": "socket_connections_total",
            "messages sent": "socket_messages_sent_total",
            "messages received": "socket_messages_received_total",
            "errors by type": "socket_errors_total",
            "disconnects by reason": "socket_disconnects_total",
            "pub/sub latency": "redis_pub_sub_latency_seconds_bucket",
            "redis_connected": "redis_connected",
            "mailbox depth": "actor_mailbox_depth",
            "actor wait p99": "actor_message_wait_seconds_bucket",
            "actor handle p99": "actor_message_handle_seconds_bucket",
            "memory": "process_resident_memory_bytes",
            "cpu": "process_cpu_seconds_total",
            "journal queue": "journal_queue_depth",
            "journal dropped": "journal_dropped_total",
            "draining nodes": "node_draining",
        }
        missing = [k for k, m in wanted.items() if m not in joined]
        if missing:
            self.fail("dashboard", f"no panel for {missing}")
        for q in ("0.5", "0.99"):
            if f"histogram_quantile({q}, sum by (le) (rate(redis_pub_sub_latency_seconds_bucket" not in joined:
                self.fail("dashboard", f"Redis pub/sub latency p{q[2:] or '50'} panel query missing")
        if not missing:
            self.ok(f"required panels present ({len(wanted)} topics)")

    # -------------------------------------------------------------- metrics
    def step_metrics(self) -> None:
        print("metrics (names vs k8s/metrics.txt)")
        allowed = {l.strip() for l in open(os.path.join(K8S, "metrics.txt"))
                   if l.strip() and not l.startswith("#")}
        sources: list[tuple[str, str]] = []
        rule = self.prometheus_rule()
        if rule:
            for g in rule["spec"]["groups"]:
                for r in g["rules"]:
                    sources.append((f"alert {r.get('alert') or r.get('record')}", r["expr"]))
        sources += getattr(self, "dashboard_exprs", [])
        tests = yaml.safe_load(open(os.path.join(K8S, "tests", "alerts.test.yaml")))
        for t in tests.get("tests", []):
            for s in t.get("input_series", []):
                sources.append(("alerts.test.yaml input series", s["series"]))
        adapter = yaml.safe_load(open(os.path.join(K8S, "extras", "prometheus-adapter-values.yaml")))
        for r in adapter["rules"]["custom"]:
            sources.append(("prometheus-adapter rule", r["seriesQuery"]))
            sources.append(("prometheus-adapter rule name", r["name"]["as"]))
        for o in self.renders.get("base", []):
            if o["kind"] == "HorizontalPodAutoscaler":
                for m in o["spec"].get("metrics", []):
                    if m["type"] == "Pods":
                        sources.append(("HPA Pods metric", m["pods"]["metric"]["name"]))
        used: dict[str, set[str]] = {}
        for where, expr in sources:
            for name in metric_names(expr):
                used.setdefault(name, set()).add(where)
        unknown = {n: w for n, w in used.items() if n not in allowed}
        for n, w in sorted(unknown.items()):
            self.fail("metrics", f"{n} is not in k8s/metrics.txt (used by {', '.join(sorted(w))})")
        if not used:
            self.fail("metrics", "no metric names found at all: the extractor is broken")
        if not unknown:
            self.ok(f"{len(used)} distinct metric names in {len(sources)} expressions, all in "
                    f"metrics.txt ({len(allowed)} names)")
        unused = sorted(allowed - set(used))
        if unused:
            print(f"  info not used by dashboard/alerts: {', '.join(unused)}")

    # -------------------------------------------------------------- docs
    def step_docs(self) -> None:
        print("docs (docs/operations.md)")
        path = os.path.join(ROOT, "docs", "operations.md")
        if not os.path.isfile(path):
            self.fail("docs", "docs/operations.md missing")
            return
        anchors = doc_anchors(path)
        refs: list[tuple[str, str]] = []
        for dirpath, _, files in os.walk(K8S):
            for fn in files:
                fp = os.path.join(dirpath, fn)
                if fn.endswith((".yaml", ".yml", ".env", ".json")):
                    for a in re.findall(r"operations\.md#([A-Za-z0-9_-]+)", open(fp, encoding="utf-8").read()):
                        refs.append((os.path.relpath(fp, ROOT), a))
        text = open(path, encoding="utf-8").read()
        for a in re.findall(r"\]\(#([A-Za-z0-9_-]+)\)", text):
            refs.append(("docs/operations.md", a))
        bad = [(w, a) for w, a in refs if a not in anchors]
        for w, a in sorted(set(bad)):
            self.fail("docs", f"{w}: link to #{a} has no matching heading")
        for section in ("deploy", "create-the-secret", "scale", "autoscaling", "drain"):
            if section not in anchors:
                self.fail("docs", f"section #{section} missing")
        if not bad:
            self.ok(f"{len(refs)} anchor links resolve ({len(anchors)} headings)")

    # -------------------------------------------------------------- wiring
    def step_wiring(self) -> None:
        print("wiring (cross-object consistency)")
        for name, objs in self.renders.items():
            errs = wiring_errors(name, objs)
            for e in errs:
                self.fail("wiring", f"{name}: {e}")
            if not errs:
                self.ok(f"{name}: selectors, ports, probes, drain budget, node id, config keys")
        errs = overlay_errors(self.renders)
        for e in errs:
            self.fail("wiring", e)
        if not errs:
            self.ok("dev: 1 replica, no HPA, no PrometheusRule, debug logs; "
                    "prod: HPA-owned replicas 3..12, larger resources")
        secret = yaml.safe_load(open(os.path.join(K8S, "base", "secret.example.yaml")))
        keys = set((secret.get("stringData") or {}) | (secret.get("data") or {}))
        if keys != SECRET_KEYS:
            self.fail("wiring", f"secret.example.yaml keys {sorted(keys)} != {sorted(SECRET_KEYS)}")
        else:
            self.ok("secret.example.yaml: JWT secret, API key, cluster key, Redis URL, database URL")
        if "secret.example.yaml" in open(os.path.join(K8S, "base", "kustomization.yaml")).read().split("resources:")[1]:
            self.fail("wiring", "secret.example.yaml must not be a kustomize resource")
        help_env = self.binary_env()
        if help_env is not None:
            later = {"SWITCHBOARD_REDIS_URL", "SWITCHBOARD_DATABASE_URL", "SWITCHBOARD_DRAIN_SECS"}
            cm_keys = set()
            for o in self.renders.get("prod", []):
                if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "switchboard-config":
                    cm_keys = set(o["data"])
            stray = sorted((cm_keys | keys) - help_env - later)
            if stray:
                self.fail("wiring", f"not accepted by the built binary's --help: {stray}")
            else:
                pending = sorted((cm_keys | keys) & later - help_env)
                self.ok("ConfigMap/Secret keys are flags of the built binary"
                        + (f" (not yet in --help, per DESIGN.md: {', '.join(pending)})" if pending else ""))
        self.check_dockerfile()

    def binary_env(self) -> set[str] | None:
        for p in ("target/debug/switchboard", "target/release/switchboard"):
            exe = os.path.join(ROOT, p)
            if os.access(exe, os.X_OK):
                r = self.run([exe, "--help"])
                if r.returncode == 0:
                    return set(re.findall(r"\[env: (SWITCHBOARD_[A-Z0-9_]+)", r.stdout))
        self.note("no built switchboard binary: config keys checked against DESIGN.md's list only")
        return None

    def check_dockerfile(self) -> None:
        path = os.path.join(ROOT, "Dockerfile")
        if not os.path.isfile(path):
            self.fail("wiring", "Dockerfile missing")
            return
        text = open(path).read()
        lines = [l for l in text.splitlines() if not l.lstrip().startswith("#")]
        body = "\n".join(lines)
        need = {
            "multi-stage build": len(re.findall(r"(?m)^FROM ", body)) >= 2,
            "cargo build --release -p switchboard": re.search(r"cargo build --release.*-p switchboard", body) is not None,
            "debian:*-slim runtime": re.search(r"(?m)^FROM debian:\S*slim\s*$", body) is not None,
            "ca-certificates": "ca-certificates" in body,
            "USER 10001": re.search(r"(?m)^USER 10001", body) is not None,
            "EXPOSE 3000": re.search(r"(?m)^EXPOSE 3000\b", body) is not None,
            "STOPSIGNAL SIGTERM": re.search(r"(?m)^STOPSIGNAL SIGTERM\b", body) is not None,
            'ENTRYPOINT ["/usr/local/bin/switchboard"]': '["/usr/local/bin/switchboard"]' in body,
            "WORKDIR /var/lib/switchboard": re.search(r"(?m)^WORKDIR /var/lib/switchboard\s*$", body) is not None,
        }
        missing = [k for k, v in need.items() if not v]
        if missing:
            self.fail("wiring", f"Dockerfile lacks: {missing}")
        di = os.path.join(ROOT, ".dockerignore")
        entries = set(open(di).read().split()) if os.path.isfile(di) else set()
        for e in ("target", "node_modules", ".git"):
            if e not in entries:
                self.fail("wiring", f".dockerignore lacks {e}")
        if not missing and {"target", "node_modules", ".git"} <= entries:
            self.ok("Dockerfile (multi-stage, uid 10001, 3000, SIGTERM, entrypoint) and .dockerignore")


# ------------------------------------------------------------------ helpers

class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


def _strict_mapping(loader, node, deep=False):
    keys = set()
    for k, _ in node.value:
        key = loader.construct_object(k, deep=deep)
        if key in keys:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", k.start_mark)
        keys.add(key)
    return loader.construct_mapping(node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _strict_mapping)

GATEWAY_DURATION = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")
HTTPROUTE_SPEC_FIELDS = {"parentRefs", "hostnames", "rules"}
HTTPROUTE_RULE_FIELDS = {"name", "matches", "filters", "backendRefs", "timeouts", "retry",
                         "sessionPersistence"}


def httproute_errors(route: dict, services: dict) -> list[str]:
    """Structure of a Gateway API v1 HTTPRoute for Switchboard (the CRD schema may be unavailable
    offline): known fields, parentRefs, PathPrefix matches on /socket.io/, backends that are the
    client Service on one of its ports, valid durations, and a websocket rule whose request
    timeout is off (0s) while long-polls get more than the ping interval (25 s)."""
    errs = []
    if route.get("apiVersion") != "gateway.networking.k8s.io/v1":
        errs.append(f"apiVersion {route.get('apiVersion')} != gateway.networking.k8s.io/v1")
    if not route.get("metadata", {}).get("name"):
        errs.append("metadata.name missing")
    spec = route.get("spec") or {}
    unknown = set(spec) - HTTPROUTE_SPEC_FIELDS
    if unknown:
        errs.append(f"unknown spec fields {sorted(unknown)}")
    if not spec.get("parentRefs") or not all(p.get("name") for p in spec["parentRefs"]):
        errs.append("spec.parentRefs must name a Gateway")
    rules = spec.get("rules") or []
    if not rules:
        return errs + ["spec.rules must be a non-empty list"]
    clients = {n: s for n, s in services.items() if s["spec"].get("clusterIP") != "None"}
    websocket_rule = long_poll_rule = False
    for i, rule in enumerate(rules):
        unknown = set(rule) - HTTPROUTE_RULE_FIELDS
        if unknown:
            errs.append(f"rules[{i}]: unknown fields {sorted(unknown)}")
        for ref in rule.get("backendRefs") or []:
            svc = clients.get(ref.get("name"))
            if not svc or ref.get("kind", "Service") != "Service":
                errs.append(f"rules[{i}]: backend {ref.get('name')} is not the client Service")
            elif ref.get("port") not in {p.get("port") for p in svc["spec"]["ports"]}:
                errs.append(f"rules[{i}]: port {ref.get('port')} is not a port of Service {ref['name']}")
        if not rule.get("backendRefs"):
            errs.append(f"rules[{i}]: no backendRefs")
        timeouts = rule.get("timeouts") or {}
        for k, v in timeouts.items():
            if k not in ("request", "backendRequest") or not GATEWAY_DURATION.match(str(v)):
                errs.append(f"rules[{i}].timeouts.{k}: {v!r} is not a Gateway API duration")
        matches = rule.get("matches") or []
        socket_io = any((m.get("path") or {}).get("value", "").startswith("/socket.io") for m in matches)
        for m in matches:
            path = m.get("path") or {}
            if path and path.get("type") not in ("PathPrefix", "Exact", "RegularExpression"):
                errs.append(f"rules[{i}]: path type {path.get('type')!r}")
        upgrade = any(h.get("name", "").lower() == "upgrade" and h.get("value", "").lower() == "websocket"
                      for m in matches for h in m.get("headers") or [])
        request = timeouts.get("request")
        if socket_io and upgrade:
            websocket_rule = True
            if request is not None and seconds(str(request)) != 0:
                errs.append(f"rules[{i}]: the websocket rule must disable the request timeout (0s)")
        elif socket_io:
            long_poll_rule = True
            if request is None or not 0 < seconds(str(request)) or seconds(str(request)) < 30:
                errs.append(f"rules[{i}]: long-polling needs a request timeout of 30 s or more "
                            "(ping interval 25 s + forwarding); implementations default to 15 s")
    if not websocket_rule:
        errs.append("no rule for websocket upgrades on /socket.io/ (Upgrade: websocket)")
    if not long_poll_rule:
        errs.append("no rule for long-polling on /socket.io/")
    return errs


def seconds(d: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", d))


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels") or [])


def grafana_to_promql(expr: str) -> str:
    e = expr.replace("$__rate_interval", "5m").replace("${__rate_interval}", "5m")
    e = e.replace("$__interval", "1m").replace("${__interval}", "1m").replace("$__range", "1h")
    e = re.sub(r"\$\{[a-zA-Z_][a-zA-Z0-9_]*(:[a-z]+)?\}", ".*", e)
    e = re.sub(r"\$[a-zA-Z_][a-zA-Z0-9_]*", ".*", e)
    return e


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (or a bare series selector)."""
    e = grafana_to_promql(expr)
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', e)   # strings
    e = re.sub(r"\{[^}]*\}", " ", e)                                         # label matchers
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)                                        # ranges, subqueries
    names = set()
    token = re.compile(r"(?P<num>0[xX][0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
                       r"|(?P<id>[a-zA-Z_:][a-zA-Z0-9_:]*)")
    for m in token.finditer(e):
        ident = m.group("id")
        if not ident:
            continue
        rest = e[m.end():].lstrip()
        if rest.startswith("("):                       # function or aggregation
            continue
        if ident.lower() in PROMQL_KEYWORDS:
            continue
        names.add(ident)
    return names


def github_slug(heading: str) -> str:
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def doc_anchors(path: str) -> set[str]:
    if not os.path.isfile(path):
        return set()
    anchors = set()
    in_code = False
    for line in open(path, encoding="utf-8"):
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            anchors.add(github_slug(m.group(1)))
        anchors.update(re.findall(r'<a\s+(?:id|name)="([^"]+)"', line))
    return anchors


def selector_matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def wiring_errors(name: str, objs: list[dict]) -> list[str]:
    errs: list[str] = []
    by_kind: dict[str, list[dict]] = {}
    for o in objs:
        if o["kind"] == "StatefulSet" and "replicas" not in o["spec"] and \
                not any(h["kind"] == "HorizontalPodAutoscaler" for h in objs):
            errs.append("StatefulSet without replicas needs an HPA")
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    sts_list = by_kind.get("StatefulSet", [])
    if len(sts_list) != 1:
        return [f"expected one StatefulSet, got {len(sts_list)}"]
    sts = sts_list[0]
    spec = sts["spec"]
    pod = spec["template"]
    pod_labels = pod["metadata"].get("labels", {})
    if not selector_matches(spec["selector"].get("matchLabels"), pod_labels):
        errs.append("StatefulSet selector does not match its pod labels")
    pspec = pod["spec"]
    containers = {c["name"]: c for c in pspec["containers"]}
    c = containers.get("switchboard")
    if not c:
        return errs + ["container `switchboard` missing"]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    if ports.get("http") != 3000:
        errs.append("container port http: 3000 missing")

    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    headless = services.get(spec.get("serviceName"))
    if not headless or headless["spec"].get("clusterIP") != "None":
        errs.append("serviceName must name a headless Service (clusterIP: None)")
    clients = [s for s in services.values() if s["spec"].get("clusterIP") != "None"]
    if not clients:
        errs.append("no client Service")
    for s in services.values():
        if not selector_matches(s["spec"].get("selector"), pod_labels):
            errs.append(f"Service {s['metadata']['name']} selector does not match the pods")
        for p in s["spec"]["ports"]:
            tp = p.get("targetPort")
            if isinstance(tp, str) and tp not in ports:
                errs.append(f"Service {s['metadata']['name']}: targetPort {tp} is not a container port")
    # Affinity is an optimisation (nodes forward requests for other nodes' sessions): either way
    # is valid, but nothing else.
    for s in clients:
        if s["spec"].get("sessionAffinity", "None") not in ("ClientIP", "None"):
            errs.append(f"Service {s['metadata']['name']}: sessionAffinity must be ClientIP or None")

    env = {e["name"]: e for e in c.get("env", [])}
    node_id = env.get("SWITCHBOARD_NODE_ID", {}).get("valueFrom", {}).get("fieldRef", {})
    if node_id.get("fieldPath") != "metadata.name":
        errs.append("SWITCHBOARD_NODE_ID must come from metadata.name (downward API)")
    # Forwarding: each node publishes where the others reach it, the pod IP (downward API).
    pod_ip = [e for e in c.get("env", []) if e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP"]
    advertise = env.get("SWITCHBOARD_ADVERTISE_URL", {}).get("value", "")
    if not pod_ip or f"$({pod_ip[0]['name']})" not in advertise:
        errs.append("SWITCHBOARD_ADVERTISE_URL must be built from the pod IP (an env from status.podIP, "
                    "referenced as $(NAME))")
    elif list(env).index("SWITCHBOARD_ADVERTISE_URL") < list(env).index(pod_ip[0]["name"]):
        errs.append(f"{pod_ip[0]['name']} must be defined before SWITCHBOARD_ADVERTISE_URL ($(VAR) only "
                    "expands variables defined earlier)")
    cms = {o["metadata"]["name"]: o for o in by_kind.get("ConfigMap", [])}
    cm_ref = [e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e]
    sec_ref = [e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]
    if not cm_ref or any(r not in cms for r in cm_ref):
        errs.append(f"envFrom configMapRef {cm_ref} not rendered")
    secret_name = yaml.safe_load(open(os.path.join(K8S, "base", "secret.example.yaml")))["metadata"]["name"]
    if sec_ref != [secret_name]:
        errs.append(f"envFrom secretRef {sec_ref} != secret.example.yaml's {secret_name}")
    config = {}
    for r in cm_ref:
        config.update(cms.get(r, {}).get("data", {}))
    stray = sorted(set(config) - KNOWN_ENV)
    if stray:
        errs.append(f"ConfigMap keys outside the config contract: {stray}")
    leaked = sorted(set(config) & SECRET_KEYS)
    if leaked:
        errs.append(f"secrets in the ConfigMap: {leaked}")
    if any(v == "" for v in config.values()):
        errs.append("empty ConfigMap values (an empty SWITCHBOARD_JWT_ISSUER is not 'unset')")

    # drain budget
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    if len(pre) != 2 or pre[0] != "sleep":
        errs.append("preStop must be exec [sleep, N]")
        pre_s = 0
    else:
        pre_s = int(pre[1])
    drain = int(config.get("SWITCHBOARD_DRAIN_SECS", 30))
    grace = pspec.get("terminationGracePeriodSeconds", 30)
    if grace < pre_s + drain + 5:
        errs.append(f"terminationGracePeriodSeconds {grace} < preStop {pre_s} + drain {drain} + 5 margin")
    # probes
    for probe, path in (("readinessProbe", "/health/ready"), ("livenessProbe", "/health/live"),
                        ("startupProbe", None)):
        p = c.get(probe)
        if not p:
            errs.append(f"{probe} missing")
            continue
        got = p.get("httpGet", {})
        if path and got.get("path") != path:
            errs.append(f"{probe} must GET {path}")
        if got.get("port") not in ("http", 3000):
            errs.append(f"{probe} must use the http port")
    res = c.get("resources", {})
    for k in ("requests", "limits"):
        if not {"cpu", "memory"} <= set(res.get(k, {})):
            errs.append(f"resources.{k} needs cpu and memory")
    aff = pspec.get("affinity", {}).get("podAntiAffinity", {}).get(
        "preferredDuringSchedulingIgnoredDuringExecution", [])
    if not any(t["podAffinityTerm"].get("topologyKey") == "kubernetes.io/hostname" and
               selector_matches(t["podAffinityTerm"].get("labelSelector", {}).get("matchLabels"), pod_labels)
               for t in aff):
        errs.append("preferred podAntiAffinity on kubernetes.io/hostname missing")
    psc, csc = pspec.get("securityContext", {}), c.get("securityContext", {})
    if not psc.get("runAsNonRoot") or psc.get("runAsUser") != 10001:
        errs.append("pod must run as non-root uid 10001")
    if not csc.get("readOnlyRootFilesystem") or csc.get("allowPrivilegeEscalation") is not False:
        errs.append("container must have readOnlyRootFilesystem and no privilege escalation")
    if "ALL" not in csc.get("capabilities", {}).get("drop", []):
        errs.append("container must drop ALL capabilities")
    if csc.get("privileged"):
        errs.append("container must not be privileged")
    errs += admin_errors(pod_labels, c, ports, config, services, by_kind)
    vols = {v["name"]: v for v in pspec.get("volumes", [])}
    data = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/var/lib/switchboard"]
    if not data or "emptyDir" not in vols.get(data[0]["name"], {}):
        errs.append("/var/lib/switchboard (SQLite default) must be an emptyDir mount")

    for pdb in by_kind.get("PodDisruptionBudget", []):
        if pdb["spec"].get("maxUnavailable") != 1:
            errs.append("PDB maxUnavailable must be 1")
        if not selector_matches(pdb["spec"]["selector"].get("matchLabels"), pod_labels):
            errs.append("PDB selector does not match the pods")
    if not by_kind.get("PodDisruptionBudget"):
        errs.append("PodDisruptionBudget missing")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"]["scaleTargetRef"]
        if ref.get("kind") != "StatefulSet" or ref.get("name") != sts["metadata"]["name"]:
            errs.append("HPA must target the StatefulSet")
        types = {(m["type"], (m.get("pods") or {}).get("metric", {}).get("name") or
                  (m.get("resource") or {}).get("name")) for m in hpa["spec"]["metrics"]}
        if ("Pods", "socket_connections_active") not in types or ("Resource", "cpu") not in types:
            errs.append("HPA needs Pods socket_connections_active and Resource cpu metrics")
    for ing in by_kind.get("Ingress", []):
        ann = ing["metadata"].get("annotations", {})
        want = {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
                "nginx.ingress.kubernetes.io/proxy-send-timeout": "3600"}
        for k, v in want.items():
            if ann.get(k) != v:
                errs.append(f"Ingress annotation {k} must be {v!r}")
        # Cookie affinity is optional; when it is on, it must be a cookie on the socket.io path.
        affinity = ann.get("nginx.ingress.kubernetes.io/affinity")
        cookie_keys = [k for k in ann if k.startswith("nginx.ingress.kubernetes.io/session-cookie-")]
        if affinity not in (None, "cookie"):
            errs.append("Ingress affinity, when set, must be 'cookie'")
        if affinity is None and cookie_keys:
            errs.append(f"Ingress session-cookie-* annotations without affinity: {sorted(cookie_keys)}")
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                b = p["backend"]["service"]
                svc = services.get(b["name"])
                if not svc:
                    errs.append(f"Ingress backend {b['name']} is not a Service")
                elif b["port"].get("name") not in {sp.get("name") for sp in svc["spec"]["ports"]}:
                    errs.append(f"Ingress backend port {b['port']} not on Service {b['name']}")
        if not any(p["path"].startswith("/socket.io") for r in ing["spec"]["rules"] for p in r["http"]["paths"]):
            errs.append("Ingress must route /socket.io/")
    for sm in by_kind.get("ServiceMonitor", []):
        targets = [s for s in services.values()
                   if selector_matches(sm["spec"]["selector"].get("matchLabels"), s["metadata"].get("labels", {}))]
        if len(targets) != 1:
            errs.append(f"ServiceMonitor selects {len(targets)} Services (want exactly 1: no double scrape)")
        for ep in sm["spec"]["endpoints"]:
            if ep.get("path") != "/metrics":
                errs.append("ServiceMonitor path must be /metrics")
            for s in targets:
                if ep.get("port") not in {p.get("name") for p in s["spec"]["ports"]}:
                    errs.append(f"ServiceMonitor port {ep.get('port')} not on Service {s['metadata']['name']}")
    dash = [o for o in by_kind.get("ConfigMap", []) if o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    if len(dash) != 1:
        errs.append("exactly one ConfigMap labelled grafana_dashboard: \"1\" expected")
    else:
        content = open(os.path.join(K8S, "base", "dashboards", "switchboard.json")).read()
        if dash[0].get("data", {}).get("switchboard.json") != content:
            errs.append("dashboard ConfigMap does not carry dashboards/switchboard.json verbatim")
    return errs


def admin_errors(pod_labels: dict, c: dict, ports: dict, config: dict, services: dict,
                 by_kind: dict) -> list[str]:
    """The admin listener (issue #17): the server API and /metrics on their own port, reachable
    only in-cluster and only from the pods a NetworkPolicy names; the secrets from the Secret."""
    errs: list[str] = []
    admin = config.get("SWITCHBOARD_ADMIN_LISTEN")
    if not admin:
        return ["SWITCHBOARD_ADMIN_LISTEN must be set (the API and /metrics off the public port)"]
    admin_port = int(admin.rsplit(":", 1)[-1])
    if ports.get("admin") != admin_port:
        errs.append(f"container port `admin` must be {admin_port} (SWITCHBOARD_ADMIN_LISTEN)")
    if admin_port == ports.get("http"):
        errs.append("the admin port must differ from the public one")
    if not any(p.get("targetPort") == "admin" for s in services.values() for p in s["spec"]["ports"]):
        errs.append("no Service exposes the admin port")
    for ing in by_kind.get("Ingress", []):
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                if p["path"].startswith(ADMIN_PATHS) or p["path"] == "/":
                    errs.append(f"Ingress must not route {p['path']} (admin-only paths)")
                svc = services.get(p["backend"]["service"]["name"], {})
                port = p["backend"]["service"]["port"]
                targets = {sp.get("targetPort") for sp in svc.get("spec", {}).get("ports", [])
                           if sp.get("name") == port.get("name") or sp.get("port") == port.get("number")}
                if "admin" in targets:
                    errs.append(f"Ingress routes {p['path']} to the admin port")
    for sm in by_kind.get("ServiceMonitor", []):
        if any(ep.get("port") != "admin" for ep in sm["spec"]["endpoints"]):
            errs.append("ServiceMonitor must scrape the admin port (/metrics is only there)")
    policies = [n for n in by_kind.get("NetworkPolicy", [])
                if selector_matches(n["spec"].get("podSelector", {}).get("matchLabels"), pod_labels)]
    if not policies:
        errs.append("no NetworkPolicy selects the pods")
    for n in policies:
        if "Ingress" not in n["spec"].get("policyTypes", []):
            errs.append(f"NetworkPolicy {n['metadata']['name']} must restrict Ingress")
        for rule in n["spec"].get("ingress", []):
            rule_ports = {p.get("port") for p in rule.get("ports", [])}
            opens_admin = not rule_ports or "admin" in rule_ports or admin_port in rule_ports
            if opens_admin and not rule.get("from"):
                errs.append(f"NetworkPolicy {n['metadata']['name']} opens the admin port to everyone")
    # Secrets only through the Secret: never as literal env values.
    for e in c.get("env", []):
        if e["name"] in SECRET_KEYS and "value" in e:
            errs.append(f"{e['name']} must come from the Secret, not a literal value")
    return errs


def overlay_errors(renders: dict[str, list[dict]]) -> list[str]:
    errs = []

    def get(name, kind):
        return [o for o in renders.get(name, []) if o["kind"] == kind]

    def mem(q: str) -> float:
        m = re.match(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$", str(q))
        mult = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, None: 1}
        return float(m.group(1)) * mult[m.group(2)] if m else -1

    for name in ("dev", "prod"):
        if name not in renders:
            return [f"overlay {name} did not render"]
    dev_sts, prod_sts = get("dev", "StatefulSet")[0], get("prod", "StatefulSet")[0]
    if dev_sts["spec"].get("replicas") != 1:
        errs.append("dev: replicas must be 1")
    if get("dev", "HorizontalPodAutoscaler"):
        errs.append("dev: must not have an HPA")
    dev_cm = {o["metadata"]["name"]: o for o in get("dev", "ConfigMap")}["switchboard-config"]
    if dev_cm["data"].get("SWITCHBOARD_LOG") != "debug":
        errs.append("dev: SWITCHBOARD_LOG must be debug")
    if "replicas" in prod_sts["spec"]:
        errs.append("prod: the StatefulSet must not set replicas (the HPA owns them; a re-apply "
                    "would scale a busy cluster down)")
    hpa = get("prod", "HorizontalPodAutoscaler")
    if not hpa or hpa[0]["spec"].get("minReplicas") != 3 or hpa[0]["spec"].get("maxReplicas") != 12:
        errs.append("prod: HPA min 3 max 12 expected")
    if not get("prod", "PrometheusRule") or not get("prod", "ServiceMonitor"):
        errs.append("prod: PrometheusRule and ServiceMonitor expected")
    dres = dev_sts["spec"]["template"]["spec"]["containers"][0]["resources"]
    pres = prod_sts["spec"]["template"]["spec"]["containers"][0]["resources"]
    if not mem(pres["limits"]["memory"]) > mem(dres["limits"]["memory"]):
        errs.append("prod memory limit must exceed dev's")
    # HighMemoryUsage threshold must sit below the prod memory limit.
    rule = get("prod", "PrometheusRule")
    if rule:
        for g in rule[0]["spec"]["groups"]:
            for r in g["rules"]:
                if r.get("alert") == "HighMemoryUsage":
                    m = re.search(r">\s*([\d.]+(?:\s*\*\s*\d+)*)\s*$", r["expr"].strip())
                    if m:
                        threshold = eval(m.group(1), {"__builtins__": {}})  # digits and * only
                        if threshold >= mem(pres["limits"]["memory"]):
                            errs.append("HighMemoryUsage threshold is not below the prod memory limit")
    for name in ("dev", "prod"):
        if not all(o["metadata"].get("namespace") for o in renders[name]):
            errs.append(f"{name}: every object needs the overlay's namespace")
    return errs


def main() -> int:
    c = Checker()
    try:
        for step in (c.step_render, c.step_schema, c.step_crds, c.step_extras, c.step_rules,
                     c.step_dashboard, c.step_metrics, c.step_docs, c.step_wiring):
            step()
    finally:
        if os.environ.get("CHECK_K8S_KEEP"):
            print(f"work dir kept: {c.tmp}")
        else:
            shutil.rmtree(c.tmp, ignore_errors=True)
    print()
    if c.failures:
        print(f"check-k8s: {len(c.failures)} failure(s)")
        for f in c.failures:
            print(f"  {f.splitlines()[0]}")
        return 1
    print("check-k8s: all checks passed" + (f" ({len(c.notes)} note(s) above)" if c.notes else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
