"""Checks of the telemetry pipeline's files (deploy/observability/), without
a container engine:

- collector: otel-collector.yaml against a schema of the components it uses
  (otel/opentelemetry-collector-contrib as pinned; unknown keys fail, as
  they fail the collector), every pipeline naming defined components and
  every defined component in a pipeline, traces to Jaeger over OTLP and
  metrics to Prometheus's remote-write endpoint;
- Prometheus: prometheus.yml with Debian's `promtool check config`, and
  the remote-write receiver switched on wherever Prometheus runs;
- dashboard: grafana/easy-note.json's structure (unique panel ids, a grid
  of 24 columns, data sources that datasources.yaml provisions, a refId and
  a query per target, template variables that exist), every query parsed
  by Prometheus's own parser (`promtool check rules` on the queries as
  recording rules), and a link from each latency panel to Jaeger;
- wiring: the services export to the collector (compose and the local
  overlay's ConfigMap), the images are pinned and the same in compose and
  in Kubernetes, admin UIs are published on 127.0.0.1 only, compose mounts
  files that exist, and the rendered ConfigMaps hold the files as they are;
- `--emitted FILE`: every metric the dashboard queries is one the services
  emit (FILE: the JSON lines of testkit/src/bin/otlp-receiver.rs after a run),
  translated to Prometheus names as the collector's exporter does, with
  only the labels that exist; metrics not emitted yet must be listed in
  not-emitted.txt, and a listed one that is emitted fails until its line
  is deleted.

`--self-test` breaks the files one way at a time and expects each break to
be caught. Exit status 1 on any failure, every problem printed.

usage: scripts/py deploy/check-observability.py [--self-test] [--emitted FILE]
Needs PyYAML, jsonschema, promtool (Debian's prometheus package) and kubectl.
"""

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import jsonschema
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBS = "deploy/observability"
COLLECTOR = f"{OBS}/otel-collector.yaml"
PROMETHEUS = f"{OBS}/prometheus.yml"
DATASOURCES = f"{OBS}/grafana/datasources.yaml"
DASHBOARD = f"{OBS}/grafana/easy-note.json"
NOT_EMITTED = f"{OBS}/not-emitted.txt"
COMPOSE = "docker-compose.yml"
LOCAL_OVERLAY = "deploy/k8s/overlays/local"
OBSERVABILITY_SERVICES = ("otel-collector", "prometheus", "grafana", "jaeger")
# Published ports of admin UIs and endpoints added for operators: loopback only.
LOOPBACK_ONLY = ("otel-collector", "prometheus", "grafana", "jaeger")
OUR_SERVICES = ("user-service", "note-service", "api-gateway")
COLLECTOR_OTLP = "otel-collector:4317"
# Grafana's own variables, replaced by a sample value before parsing.
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h",
                     "__range_s": "3600", "__interval_ms": "15000"}
PANEL_TYPES = {"row", "timeseries", "stat", "state-timeline", "gauge", "bargauge", "table",
               "text", "heatmap", "barchart", "piechart"}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                   "and", "or", "unless", "offset", "atan2", "inf", "nan", "start", "end"}


# ---------------------------------------------------------------- the collector

def component(properties, required=()):
    return {"type": "object", "additionalProperties": False, "properties": properties,
            "required": list(required)}


TLS_CLIENT = component({"insecure": {"type": "boolean"}, "insecure_skip_verify": {"type": "boolean"},
                        "ca_file": {"type": "string"}, "cert_file": {"type": "string"},
                        "key_file": {"type": "string"}, "server_name_override": {"type": "string"}})
QUEUE = {"type": "object"}  # sending_queue / retry_on_failure: passed through as written
ENDPOINT = {"type": "string", "pattern": r"^[\w.-]*:\d+$"}
URL = {"type": "string", "pattern": r"^https?://[\w.-]+(:\d+)?(/\S*)?$"}
# The settings of each component this suite uses, as the pinned
# collector-contrib release documents them; a key outside these fails, as
# it fails the collector ("has invalid keys").
COMPONENTS = {
    "receivers": {
        "otlp": component({"protocols": component({
            "grpc": component({"endpoint": ENDPOINT, "max_recv_msg_size_mib": {"type": "integer"},
                               "tls": {"type": "object"}, "keepalive": {"type": "object"}}),
            "http": component({"endpoint": ENDPOINT, "tls": {"type": "object"},
                               "cors": {"type": "object"}, "traces_url_path": {"type": "string"},
                               "metrics_url_path": {"type": "string"},
                               "logs_url_path": {"type": "string"}}),
        })}, ["protocols"]),
    },
    "processors": {
        "memory_limiter": component({
            "check_interval": {"type": "string"}, "limit_mib": {"type": "integer"},
            "spike_limit_mib": {"type": "integer"},
            "limit_percentage": {"type": "integer", "minimum": 1, "maximum": 100},
            "spike_limit_percentage": {"type": "integer", "minimum": 1, "maximum": 100}},
            ["check_interval"]),
        "batch": component({"timeout": {"type": "string"}, "send_batch_size": {"type": "integer"},
                            "send_batch_max_size": {"type": "integer"},
                            "metadata_keys": {"type": "array"},
                            "metadata_cardinality_limit": {"type": "integer"}}),
    },
    "exporters": {
        "otlp": component({"endpoint": ENDPOINT, "tls": TLS_CLIENT, "headers": {"type": "object"},
                           "compression": {"type": "string"}, "timeout": {"type": "string"},
                           "sending_queue": QUEUE, "retry_on_failure": QUEUE,
                           "balancer_name": {"type": "string"}}, ["endpoint"]),
        "prometheusremotewrite": component({
            "endpoint": URL, "tls": TLS_CLIENT, "headers": {"type": "object"},
            "timeout": {"type": "string"}, "namespace": {"type": "string"},
            "external_labels": {"type": "object"},
            "resource_to_telemetry_conversion": component({"enabled": {"type": "boolean"}}),
            "target_info": component({"enabled": {"type": "boolean"}}),
            "add_metric_suffixes": {"type": "boolean"}, "send_metadata": {"type": "boolean"},
            "remote_write_queue": component({"enabled": {"type": "boolean"},
                                             "queue_size": {"type": "integer"},
                                             "num_consumers": {"type": "integer"}}),
            "retry_on_failure": QUEUE, "max_batch_size_bytes": {"type": "integer"},
            "compression": {"type": "string"}, "wal": {"type": "object"}}, ["endpoint"]),
    },
    "extensions": {
        "health_check": component({"endpoint": ENDPOINT, "path": {"type": "string"},
                                   "tls": {"type": "object"}}),
    },
}
PIPELINE = component({"receivers": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                      "processors": {"type": "array", "items": {"type": "string"}},
                      "exporters": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
                     ["receivers", "exporters"])
COLLECTOR_SCHEMA = component({
    **{kind: {"type": "object"} for kind in COMPONENTS},
    "connectors": {"type": "object"},
    "service": component({
        "extensions": {"type": "array", "items": {"type": "string"}},
        "pipelines": {"type": "object", "minProperties": 1,
                      "propertyNames": {"pattern": r"^(traces|metrics|logs)(/[\w.-]+)?$"},
                      "additionalProperties": PIPELINE},
        "telemetry": {"type": "object"}}, ["pipelines"]),
}, ["receivers", "exporters", "service"])


def schema_errors(where, value, schema):
    validator = jsonschema.Draft7Validator(schema)
    return [f"{where}{'.' + '.'.join(str(p) for p in e.absolute_path) if e.absolute_path else ''}: "
            f"{e.message}" for e in sorted(validator.iter_errors(value), key=str)]


def check_collector(inputs, errors):
    config = inputs.collector
    errors.extend(schema_errors(COLLECTOR, config, COLLECTOR_SCHEMA))
    if not isinstance(config, dict):
        return
    defined = {}
    for kind, known in COMPONENTS.items():
        for name, settings in (config.get(kind) or {}).items():
            ctype = name.split("/", 1)[0]
            defined[(kind, name)] = False
            if ctype not in known:
                errors.append(f"{COLLECTOR}: {kind}.{name}: {ctype!r} is not a {kind[:-1]} "
                              f"this check knows ({', '.join(sorted(known))}); add its settings "
                              "to COMPONENTS in deploy/check-observability.py")
                continue
            errors.extend(schema_errors(f"{COLLECTOR}: {kind}.{name}", settings or {}, known[ctype]))
    service = config.get("service") or {}
    for name in service.get("extensions") or []:
        if ("extensions", name) not in defined:
            errors.append(f"{COLLECTOR}: service.extensions names {name!r}, which is not defined")
        defined[("extensions", name)] = True
    exporters_of = {}
    for pipeline, spec in (service.get("pipelines") or {}).items():
        for kind in ("receivers", "processors", "exporters"):
            for name in (spec or {}).get(kind) or []:
                if (kind, name) not in defined:
                    errors.append(f"{COLLECTOR}: pipeline {pipeline} names {kind[:-1]} {name!r}, "
                                  "which is not defined")
                defined[(kind, name)] = True
        processors = (spec or {}).get("processors") or []
        if processors and processors[0] != "memory_limiter":
            errors.append(f"{COLLECTOR}: pipeline {pipeline}: memory_limiter must come first "
                          f"(processors are {processors})")
        exporters_of[pipeline.split("/")[0]] = [
            (name, (config.get("exporters") or {}).get(name) or {})
            for name in (spec or {}).get("exporters") or []]
    for (kind, name), used in defined.items():
        if not used:
            errors.append(f"{COLLECTOR}: {kind}.{name} is defined but no pipeline uses it")
    traces = [n for n, s in exporters_of.get("traces", [])
              if n.split("/")[0] == "otlp" and str(s.get("endpoint", "")).startswith("jaeger:")]
    if not traces:
        errors.append(f"{COLLECTOR}: no traces pipeline exports over OTLP to jaeger:4317")
    metrics = [n for n, s in exporters_of.get("metrics", [])
               if n.split("/")[0] == "prometheusremotewrite"
               and re.fullmatch(r"https?://prometheus:9090/api/v1/write", str(s.get("endpoint", "")))]
    if not metrics:
        errors.append(f"{COLLECTOR}: no metrics pipeline exports by remote write to "
                      "http://prometheus:9090/api/v1/write")
    grpc = (((config.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}).get("grpc")
    if not grpc or not str(grpc.get("endpoint", "")).endswith(":4317"):
        errors.append(f"{COLLECTOR}: the otlp receiver does not take gRPC on port 4317, where the "
                      "services export")


# ---------------------------------------------------------------- Prometheus

def promtool():
    return os.environ.get("PROMTOOL") or shutil.which("promtool")


def run_promtool(args, files):
    """(exit code, output) of `promtool args... files...`."""
    result = subprocess.run([promtool(), *args, *files], capture_output=True, text=True)
    return result.returncode, (result.stdout + result.stderr).strip()


def check_prometheus(inputs, errors):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "prometheus.yml")
        with open(path, "w") as out:
            out.write(inputs.prometheus_text)
        code, output = run_promtool(["check", "config", "--syntax-only"], [path])
    if code != 0:
        errors.append(f"{PROMETHEUS}: promtool check config: {output}")
    flag = "--web.enable-remote-write-receiver"
    compose = ((inputs.compose.get("services") or {}).get("prometheus") or {}).get("command") or []
    if flag not in compose:
        errors.append(f"{COMPOSE}: prometheus runs without {flag}: the collector's remote "
                      "writes would be refused")
    for doc in workloads(inputs.overlay, "prometheus"):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            if flag not in (container.get("args") or []):
                errors.append(f"{LOCAL_OVERLAY}: Deployment prometheus runs without {flag}")


# ---------------------------------------------------------------- the dashboard

def grafana_expr(expr, variables):
    """The query with Grafana's variables replaced by sample values; the
    names of undefined variables."""
    unknown = []

    def sub(match):
        name = match.group(1) or match.group(2)
        if name in GRAFANA_VARIABLES:
            return GRAFANA_VARIABLES[name]
        if name in variables:
            return variables[name]
        unknown.append(name)
        return "x"
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", sub, expr), unknown


def dashboard_queries(dashboard):
    """[(panel title, refId, expr)] of every Prometheus query."""
    found = []
    for panel in all_panels(dashboard):
        for target in panel.get("targets") or []:
            if "expr" in target:
                found.append((panel.get("title", "?"), target.get("refId", "?"), target["expr"]))
    return found


def all_panels(dashboard):
    for panel in dashboard.get("panels") or []:
        yield panel
        yield from panel.get("panels") or []  # collapsed rows


def check_dashboard(inputs, errors):
    dashboard, where = inputs.dashboard, DASHBOARD
    for key, kind in (("uid", str), ("title", str), ("schemaVersion", int), ("panels", list)):
        if not isinstance(dashboard.get(key), kind):
            errors.append(f"{where}: top-level {key!r} missing or not a {kind.__name__}")
    if len(str(dashboard.get("uid", ""))) > 40:
        errors.append(f"{where}: uid longer than Grafana's 40 characters")
    sources = {d.get("uid"): d.get("type") for d in inputs.datasources.get("datasources") or []}
    variables = {v.get("name"): str(v.get("query", "")) for v in
                 (dashboard.get("templating") or {}).get("list") or []}
    ids, rules = set(), []
    for panel in all_panels(dashboard):
        title = panel.get("title", "?")
        pid = panel.get("id")
        if not isinstance(pid, int) or pid in ids:
            errors.append(f"{where}: panel {title!r}: id {pid!r} is missing or not unique")
        ids.add(pid)
        grid = panel.get("gridPos") or {}
        if not all(isinstance(grid.get(k), int) for k in "hwxy"):
            errors.append(f"{where}: panel {title!r}: gridPos needs integer h, w, x and y")
        elif grid["x"] + grid["w"] > 24:
            errors.append(f"{where}: panel {title!r}: x + w = {grid['x'] + grid['w']}, past the "
                          "24 columns of the grid")
        if panel.get("type") not in PANEL_TYPES:
            errors.append(f"{where}: panel {title!r}: unknown type {panel.get('type')!r}")
        if panel.get("type") == "row":
            continue
        source = panel.get("datasource") or {}
        if sources.get(source.get("uid")) != source.get("type"):
            errors.append(f"{where}: panel {title!r}: data source {source} is not one that "
                          f"{DATASOURCES} provisions ({sources})")
        targets = panel.get("targets") or []
        if not targets:
            errors.append(f"{where}: panel {title!r} has no query")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or not all(refs):
            errors.append(f"{where}: panel {title!r}: refIds {refs} are missing or repeated")
        for target in targets:
            if not str(target.get("expr", "")).strip():
                errors.append(f"{where}: panel {title!r} query {target.get('refId')}: empty expr")
                continue
            expr, unknown = grafana_expr(target["expr"], variables)
            if unknown:
                errors.append(f"{where}: panel {title!r} query {target.get('refId')}: undefined "
                              f"variables {unknown}")
            rules.append((f"panel {pid} ({title}) query {target.get('refId')}", expr))
        if "latency" in title.lower() and "jaeger" not in json.dumps(
                [panel.get("links"), (panel.get("fieldConfig") or {}).get("defaults", {}).get("links")]
        ).lower():
            errors.append(f"{where}: latency panel {title!r} has no link to the traces in Jaeger")
        for link in (panel.get("fieldConfig") or {}).get("defaults", {}).get("links") or []:
            if '"uid":"jaeger"' in link.get("url", "") and "jaeger" not in sources:
                errors.append(f"{where}: panel {title!r}: a data link names the Jaeger data "
                              "source, which is not provisioned")
    if rules:
        errors.extend(parse_queries(rules))


def parse_queries(rules):
    """Prometheus's own parser on every query: each one as a recording rule,
    checked by `promtool check rules`."""
    group = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(rules)]}]}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dashboard-queries.yml")
        with open(path, "w") as out:
            yaml.safe_dump(group, out)
        code, output = run_promtool(["check", "rules"], [path])
    if code == 0:
        return []
    problems = []
    for i, (what, expr) in enumerate(rules):
        if re.search(rf"\b(rule {i + 1}|dashboard:query_{i})\b", output):
            problems.append(f"{DASHBOARD}: {what} does not parse: {' '.join(expr.split())}")
    return problems or [f"{DASHBOARD}: promtool check rules: {output}"]


# ---------------------------------------------------------------- what the queries name

def strip_strings(expr):
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)


def query_names(expr):
    """(metric names, label names) a PromQL query uses. Label names come
    from selectors and from by/without/on/ignoring/group_* lists; a label
    that label_replace creates is not counted."""
    created = set(re.findall(r'label_(?:replace|join)\s*\([^,]+,\s*"(\w+)"', expr))
    text = strip_strings(expr)
    metrics, labels = set(), set()
    for selector in re.findall(r"\{([^}]*)\}", text):
        labels.update(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", selector))
    for group in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)",
                            text):
        labels.update(name.strip() for name in group.split(",") if name.strip())
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", bare):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in PROMQL_KEYWORDS or re.fullmatch(r"\d\w*", name):
            continue
        metrics.add(name)
    return metrics, labels - created - {"__name__"}


# ---------------------------------------------------------------- OTLP -> Prometheus

UNITS = {"d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
         "us": "microseconds", "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes",
         "MiBy": "mebibytes", "GiBy": "gibibytes", "TiBy": "tibibytes", "KBy": "kilobytes",
         "MBy": "megabytes", "GBy": "gigabytes", "TBy": "terabytes", "m": "meters", "V": "volts",
         "A": "amperes", "J": "joules", "W": "watts", "g": "grams", "Cel": "celsius",
         "Hz": "hertz", "%": "percent"}
PER_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month",
             "y": "year"}


def prometheus_name(name, kind, unit=""):
    """The series name the collector's Prometheus exporters give an OTLP
    metric (suffixes on, as by default): words joined by `_`, the unit as a
    suffix, `_total` for counters, `_ratio` for gauges of unit 1. For
    histograms, the base of `_bucket`, `_sum` and `_count`."""
    words = [w for w in re.split(r"[^a-zA-Z0-9]+", name) if w]
    unit = re.sub(r"\{[^}]*\}", "", unit or "").strip()
    main, _, per = unit.partition("/")
    suffixes = []
    if main and main != "1":
        suffixes.append(UNITS.get(main, re.sub(r"[^a-zA-Z0-9]+", "_", main)))
    if per:
        suffixes.append("per_" + PER_UNITS.get(per, re.sub(r"[^a-zA-Z0-9]+", "_", per)))
    for suffix in suffixes:
        if not words or "_".join(words[-len(suffix.split("_")):]) != suffix:
            words.extend(suffix.split("_"))
    if kind == "counter":
        words = [w for w in words if w != "total"] + ["total"]
    if kind == "gauge" and main == "1" and words[-1] != "ratio":
        words.append("ratio")
    result = "_".join(words)
    return "_" + result if result[:1].isdigit() else result


def label_name(attribute):
    label = re.sub(r"[^a-zA-Z0-9_]", "_", attribute)
    return "key_" + label if label[:1].isdigit() else label


def series_names(base, kind):
    if kind in ("histogram", "exponential_histogram"):
        return {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    return {base}


def emitted_series(lines):
    """{series name: {label names}} of what the services exported, as
    Prometheus receives it from the collector; and the OTLP names seen."""
    series, otlp = {}, set()
    identifying = {"service.name", "service.instance.id", "service.namespace"}
    for line in lines:
        metric = line["metric"]
        otlp.add(metric)
        base = prometheus_name(metric, line["kind"], line.get("unit", ""))
        labels = {label_name(a) for a in line.get("attributes", [])} | {"job", "instance"}
        for name in series_names(base, line["kind"]):
            extra = {"le"} if name.endswith("_bucket") else set()
            series.setdefault(name, set()).update(labels | extra)
        info = {label_name(a) for a in line.get("resource", []) if a not in identifying}
        series.setdefault("target_info", set()).update(info | {"job", "instance"})
    return series, otlp


def read_not_emitted(text):
    """{Prometheus name: (why, OTLP name, kind, {labels})}, and problems."""
    entries, problems = {}, []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        cells = line.split()
        if len(cells) != 5 or cells[1] not in ("later", "event", "prometheus"):
            problems.append(f"{NOT_EMITTED}:{number}: expected <Prometheus name> later|event|prometheus "
                            f"<OTLP name> <instrument> <labels>, got {line!r}")
            continue
        name, why, otlp, kind, labels = cells
        if why in ("later", "event") and prometheus_name(otlp, kind) != name:
            problems.append(f"{NOT_EMITTED}:{number}: {otlp} ({kind}) becomes "
                            f"{prometheus_name(otlp, kind)} in Prometheus, not {name}")
        entries[name] = (why, otlp, kind, set(labels.split(",")))
    return entries, problems


def check_emitted(inputs, lines, errors):
    series, otlp = emitted_series(lines)
    if not lines:
        errors.append("no metric reached the receiver: nothing to compare the dashboard with")
        return
    entries, problems = read_not_emitted(inputs.not_emitted_text)
    errors.extend(problems)
    for name, (why, otlp_name, kind, _) in entries.items():
        if why == "later" and otlp_name in otlp:
            errors.append(f"{NOT_EMITTED}: {otlp_name} is emitted now: delete its line, so the "
                          "dashboard is checked against what the services really export")
        if why == "event" and otlp_name in otlp and name not in series:
            # Emitted in this run after all (a governance event happened),
            # but not under the name listed: a unit or a kind changed.
            near = sorted(n for n in series if n.startswith(name))
            errors.append(f"{NOT_EMITTED}: {otlp_name} is emitted as {', '.join(near) or 'something else'}, "
                          f"not {name}, which the dashboard reads")
    for panel, ref, expr in dashboard_queries(inputs.dashboard):
        metrics, labels = query_names(grafana_expr(expr, {})[0])
        known = set()
        for metric in sorted(metrics):
            if metric in series:
                known |= series[metric]
            elif metric in entries and not (entries[metric][0] == "later"
                                            and entries[metric][1] in otlp):
                known |= entries[metric][3]
            else:
                near = sorted(n for n in series if n.split("_")[:2] == metric.split("_")[:2])
                errors.append(f"{DASHBOARD}: panel {panel!r} query {ref} reads {metric}, which "
                              f"the services do not emit and {NOT_EMITTED} does not list"
                              + (f" (emitted: {', '.join(near)})" if near else ""))
        missing = sorted(labels - known) if known else []
        if missing:
            errors.append(f"{DASHBOARD}: panel {panel!r} query {ref} uses labels {missing}, which "
                          f"{', '.join(sorted(metrics))} do not carry (they carry "
                          f"{', '.join(sorted(known))})")


# ---------------------------------------------------------------- wiring

def workloads(docs, name):
    return [d for d in docs if d.get("kind") == "Deployment" and d["metadata"]["name"] == name]


def image_of(service):
    return str((service or {}).get("image", ""))


def check_wiring(inputs, errors):
    services = inputs.compose.get("services") or {}
    for name, service in services.items():
        image = image_of(service)
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        if not tag or tag == "latest":
            errors.append(f"{COMPOSE}: service {name}: image {image!r} is not pinned to a version")
    for name in OBSERVABILITY_SERVICES:
        if name not in services:
            errors.append(f"{COMPOSE}: no service {name}")
            continue
        k8s = workloads(inputs.overlay, name)
        if not k8s:
            errors.append(f"{LOCAL_OVERLAY}: no Deployment {name}")
            continue
        k8s_image = k8s[0]["spec"]["template"]["spec"]["containers"][0]["image"]
        if k8s_image != image_of(services[name]):
            errors.append(f"{name}: compose runs {image_of(services[name])}, the local overlay "
                          f"{k8s_image}: keep them the same")
    for name in LOOPBACK_ONLY:
        for port in (services.get(name) or {}).get("ports") or []:
            if not str(port).startswith("127.0.0.1:"):
                errors.append(f"{COMPOSE}: service {name} publishes {port!r} on every interface; "
                              "bind it to 127.0.0.1")
        for volume in (services.get(name) or {}).get("volumes") or []:
            source = str(volume).split(":", 1)[0]
            if source.startswith(".") and not os.path.exists(os.path.join(ROOT, source)):
                errors.append(f"{COMPOSE}: service {name} mounts {source}, which does not exist")
    for name in OUR_SERVICES:
        env = (services.get(name) or {}).get("environment") or {}
        endpoint = str(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", ""))
        if not endpoint.endswith(COLLECTOR_OTLP):
            errors.append(f"{COMPOSE}: {name} exports to {endpoint or 'nowhere'}, not to the "
                          f"collector ({COLLECTOR_OTLP})")
    configmaps = {d["metadata"]["name"]: d for d in inputs.overlay if d.get("kind") == "ConfigMap"}
    config = next((d.get("data", {}) for n, d in configmaps.items()
                   if n.startswith("easy-note-config")), {})
    if not str(config.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")).endswith(COLLECTOR_OTLP):
        errors.append(f"{LOCAL_OVERLAY}: the services export to "
                      f"{config.get('OTEL_EXPORTER_OTLP_ENDPOINT')!r}, not to the collector")
    for prefix, key, path in (("otel-collector-config", "config.yaml", COLLECTOR),
                              ("prometheus-config", "prometheus.yml", PROMETHEUS),
                              ("grafana-dashboards", "easy-note.json", DASHBOARD),
                              ("grafana-provisioning", "datasources.yaml", DATASOURCES)):
        found = [d for n, d in configmaps.items() if n.startswith(prefix)]
        disk = open(os.path.join(ROOT, path), encoding="utf-8").read()
        if not found or (found[0].get("data") or {}).get(key) != disk:
            errors.append(f"{LOCAL_OVERLAY}: ConfigMap {prefix} does not hold {path} as it is")


# ---------------------------------------------------------------- all

class Inputs:
    def __init__(self):
        def text(path):
            return open(os.path.join(ROOT, path), encoding="utf-8").read()
        self.collector = yaml.safe_load(text(COLLECTOR))
        self.prometheus_text = text(PROMETHEUS)
        self.datasources = yaml.safe_load(text(DATASOURCES))
        self.dashboard = json.loads(text(DASHBOARD))
        self.not_emitted_text = text(NOT_EMITTED)
        self.compose = yaml.safe_load(text(COMPOSE))
        rendered = subprocess.run([os.environ.get("KUBECTL", "kubectl"), "kustomize", LOCAL_OVERLAY],
                                  cwd=ROOT, capture_output=True, text=True)
        if rendered.returncode != 0:
            sys.exit(f"kubectl kustomize {LOCAL_OVERLAY} failed:\n{rendered.stderr}")
        self.overlay = [d for d in yaml.safe_load_all(rendered.stdout) if d]


def check(inputs):
    errors = []
    check_collector(inputs, errors)
    check_prometheus(inputs, errors)
    check_dashboard(inputs, errors)
    check_wiring(inputs, errors)
    return errors


# ---------------------------------------------------------------- self-test

def panel(inputs, title_part):
    return next(p for p in all_panels(inputs.dashboard) if title_part in p.get("title", ""))


def mutations():
    """(what breaks, how, a phrase the complaint must contain)."""
    def col(i):
        return i.collector
    return [
        ("a misspelt collector setting", lambda i: col(i)["exporters"]["otlp/jaeger"].update(
            endpiont="jaeger:4317"), "Additional properties are not allowed ('endpiont'"),
        ("a pipeline naming an undefined exporter", lambda i: col(i)["service"]["pipelines"][
            "metrics"]["exporters"].append("prometheus"), "which is not defined"),
        ("a component no pipeline uses", lambda i: col(i)["processors"].update(
            {"batch/unused": {}}), "no pipeline uses it"),
        ("a component type this check does not know", lambda i: col(i)["exporters"].update(
            {"kafka": {}}), "is not a exporter this check knows"),
        ("traces sent somewhere other than Jaeger", lambda i: col(i)["exporters"][
            "otlp/jaeger"].update(endpoint="tempo:4317"), "no traces pipeline exports"),
        ("metrics sent to the wrong path", lambda i: col(i)["exporters"][
            "prometheusremotewrite"].update(endpoint="http://prometheus:9090/write"),
         "no metrics pipeline exports by remote write"),
        ("memory_limiter after batch", lambda i: col(i)["service"]["pipelines"]["traces"].update(
            processors=["batch", "memory_limiter"]), "memory_limiter must come first"),
        ("a prometheus.yml key Prometheus does not know", lambda i: setattr(
            i, "prometheus_text", i.prometheus_text.replace("scrape_interval:", "scrape_intervall:", 1)),
         "promtool check config"),
        ("Prometheus without its remote-write receiver", lambda i: i.compose["services"][
            "prometheus"]["command"].remove("--web.enable-remote-write-receiver"),
         "runs without --web.enable-remote-write-receiver"),
        ("a query that does not parse", lambda i: panel(i, "Request rate")["targets"][0].update(
            expr="sum by (http_route (rate(x[1m]))"), "does not parse"),
        ("a query with an undefined variable", lambda i: panel(i, "Request rate")["targets"][
            0].update(expr="rate(x[$window])"), "undefined variables ['window']"),
        ("a panel on a data source nobody provisions", lambda i: panel(i, "Retries").update(
            datasource={"type": "prometheus", "uid": "mimir"}), "is not one that"),
        ("two panels with one id", lambda i: panel(i, "Retries").update(
            id=panel(i, "Requests shed")["id"]), "is missing or not unique"),
        ("a panel past the grid", lambda i: panel(i, "Retries")["gridPos"].update(x=20),
         "past the 24 columns"),
        ("a latency panel without its Jaeger link", lambda i: (
            panel(i, "Latency p50")["fieldConfig"]["defaults"].pop("links"),
            panel(i, "Latency p50").pop("links")), "has no link to the traces in Jaeger"),
        ("a service exporting around the collector", lambda i: i.compose["services"][
            "api-gateway"]["environment"].update(OTEL_EXPORTER_OTLP_ENDPOINT="http://jaeger:4317"),
         "not to the collector"),
        ("an unpinned image", lambda i: i.compose["services"]["grafana"].update(
            image="grafana/grafana:latest"), "is not pinned"),
        ("compose and Kubernetes on different versions", lambda i: i.compose["services"][
            "prometheus"].update(image="prom/prometheus:v3.4.0"), "keep them the same"),
        ("an admin UI on every interface", lambda i: i.compose["services"]["grafana"].update(
            ports=["3000:3000"]), "on every interface"),
        ("a ConfigMap out of step with its file", lambda i: next(
            d for d in i.overlay if d.get("kind") == "ConfigMap"
            and d["metadata"]["name"].startswith("prometheus-config"))["data"].update(
            {"prometheus.yml": "global: {}\n"}), "does not hold"),
    ]


def emitted_mutations(lines):
    """(what breaks, how (inputs, lines), a phrase the complaint must contain)."""
    def rename(old, new):
        return [dict(line, metric=new) if line["metric"] == old else line for line in lines]
    return [
        ("the dashboard reads a metric under its old name", lambda i, l: (panel(
            i, "Request rate")["targets"][0].update(
            expr="sum(rate(http_server_duration_milliseconds_count[5m]))"), l)[1],
         "reads http_server_duration_milliseconds_count, which the services do not emit"),
        ("the services rename a metric", lambda i, l: rename(
            "rpc.server.call.duration", "rpc.server.duration"),
         "reads rpc_server_call_duration_seconds_bucket"),
        ("a histogram in milliseconds", lambda i, l: [
            dict(x, unit="ms") if x["metric"] == "http.server.request.duration" else x for x in l],
         "emitted: http_server_request_duration_milliseconds"),
        ("a label the metric does not carry", lambda i, l: (panel(
            i, "RPC rate")["targets"][0].update(
            expr="sum by (rpc_grpc_status_code) (rate(rpc_server_call_duration_seconds_count[5m]))"),
            l)[1], "uses labels ['rpc_grpc_status_code']"),
        ("a metric listed for later that is emitted now", lambda i, l: (setattr(
            i, "not_emitted_text", i.not_emitted_text + "\nhttp_server_request_duration  later  "
            "http.server.request.duration  histogram  job\n"), l)[1], "is emitted now: delete its line"),
        ("a governance gauge emitted with a unit", lambda i, l: l + [{
            "service": "easy-note-gateway", "metric": "easynote.governance.breaker.state",
            "kind": "gauge", "unit": "1", "attributes": ["service", "method"], "resource": []}],
         "is emitted as easynote_governance_breaker_state_ratio, not easynote_governance_breaker_state"),
        ("a not-emitted entry under the wrong name", lambda i, l: (setattr(
            i, "not_emitted_text", i.not_emitted_text.replace(
                "easynote_governance_shed_total ", "easynote_governance_shed ")), l)[1],
         "becomes easynote_governance_shed_total in Prometheus"),
    ]


def self_test(inputs, lines):
    failures, caught = [], 0
    baseline = check(inputs)
    if lines is not None:
        check_emitted(inputs, lines, baseline)
    if baseline:
        failures.append("the unmodified files already fail:\n  " + "\n  ".join(baseline))
    cases = [(what, lambda i, l, m=mutate: (m(i), None)[1], expected)
             for what, mutate, expected in mutations()]
    if lines is not None:
        cases += emitted_mutations(lines)
    for what, mutate, expected in cases:
        broken = copy.deepcopy(inputs)
        broken_lines = mutate(broken, copy.deepcopy(lines))
        errors = check(broken)
        if broken_lines is not None or lines is not None:
            check_emitted(broken, broken_lines if broken_lines is not None else lines, errors)
        if any(expected in e for e in errors):
            caught += 1
            print(f"  caught: {what}")
        else:
            failures.append(f"{what}: expected a complaint containing {expected!r}, got "
                            f"{errors or 'none'}")
    if failures:
        print("check-observability self-test FAILED:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    print(f"check-observability self-test: all {caught} broken variants were caught")
    return 0


def read_lines(path):
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.startswith("{") and '"metric"' in line]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--self-test", action="store_true",
                        help="break the files one way at a time; every break must be caught")
    parser.add_argument("--emitted", metavar="FILE",
                        help="the receiver's output after a run: check the dashboard's metrics")
    args = parser.parse_args()
    if not promtool():
        sys.exit("promtool not found (Debian: apt-get install prometheus; or set PROMTOOL)")
    inputs = Inputs()
    lines = read_lines(args.emitted) if args.emitted else None
    if args.self_test:
        return self_test(inputs, lines)
    errors = check(inputs)
    if lines is not None:
        check_emitted(inputs, lines, errors)
    if errors:
        print("deploy/check-observability.py: the telemetry files break these rules:",
              file=sys.stderr)
        for error in errors:
            print(f"  - {error}", file=sys.stderr)
        return 1
    queries = dashboard_queries(inputs.dashboard)
    print(f"observability: collector, Prometheus and {len(queries)} dashboard queries are valid "
          "and wired" + (f"; every query reads metrics the services emit ({len(lines)} metric "
                         "streams seen) or that not-emitted.txt lists" if lines is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
