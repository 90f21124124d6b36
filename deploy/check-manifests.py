#!/usr/bin/env python3
"""Structural checks of the deployment files, on what actually gets applied.

Renders each kustomize overlay with `kubectl kustomize`, reads
docker-compose.yml and the documented Secret tables, and checks the rules a
schema cannot express, so that they cannot quietly break again:

- probes: every container running the easy-note image has a startup, a
  readiness and a liveness probe, and sets its role with EASYNOTE_SERVICE
  (not with command/args, which `easy-note healthcheck` would not see);
- start-up: each startupProbe lets the container live at least as long as
  the service's own retries take (EASYNOTE_DB_CONNECT_TIMEOUT for the
  services with a database, then NACOS_CONNECT_TIMEOUT with Nacos), read
  from the container's environment, code defaults where unset;
- shutdown: terminationGracePeriodSeconds covers the preStop wait +
  EASYNOTE_DEREGISTER_GRACE (with Nacos) + EASYNOTE_SHUTDOWN_TIMEOUT + the
  telemetry flush (traces bounded by min(OTEL_EXPORTER_OTLP_TIMEOUT,
  OTEL_BSP_EXPORT_TIMEOUT), then metrics by OTEL_EXPORTER_OTLP_TIMEOUT);
  the gateway waits in preStop for load balancers to let go of it; compose's
  stop_grace_period and healthcheck obey the same budgets;
- readiness: the gateway's /readyz probe waits longer than /readyz itself
  may take (CHECK_TIMEOUT in api-gateway/src/routes/health.rs);
- ingress: Services behind an `alb` Ingress are NodePort or LoadBalancer
  (what ACK's ALB needs with the Flannel network plug-in);
- secrets: every secretKeyRef is listed in the documented Secret tables
  (between `<!-- secrets:begin -->` and `<!-- secrets:end -->` in
  deploy/k8s/overlays/aliyun/README.md and docs/tutorial.md), those tables
  agree, an optional one has `optional: true` and a required one does not.

Every failure is printed with the object and the numbers involved, and the
exit status is 1. `--self-test` proves each rule can fail: it breaks the
real rendered files one way at a time and expects the matching complaint.

usage: deploy/check-manifests.py [--self-test] [OVERLAY_DIR ...]
       (default overlays: deploy/k8s/overlays/local and .../aliyun)
Needs PyYAML and kubectl (KUBECTL to override).
"""

import argparse
import copy
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OVERLAYS = ["deploy/k8s/overlays/local", "deploy/k8s/overlays/aliyun"]
COMPOSE_FILE = "docker-compose.yml"
SECRET_DOCS = ["deploy/k8s/overlays/aliyun/README.md", "docs/tutorial.md"]
READYZ_SOURCE = "api-gateway/src/routes/health.rs"

# The services' own defaults, as the README's configuration table lists them
# (durations as the services parse them; OTEL_* timeouts in milliseconds).
DEFAULTS = {
    "EASYNOTE_SERVICE": "all",
    "EASYNOTE_REGISTRY": "static",
    "EASYNOTE_DB_CONNECT_TIMEOUT": "30s",
    "NACOS_CONNECT_TIMEOUT": "60s",
    "EASYNOTE_DEREGISTER_GRACE": "3s",
    "EASYNOTE_SHUTDOWN_TIMEOUT": "10s",
    "OTEL_EXPORTER_OTLP_TIMEOUT": "10000",
    "OTEL_BSP_EXPORT_TIMEOUT": "30000",
}
ROLES = {"all", "user-service", "note-service", "api-gateway"}
ROLES_WITH_DATABASE = {"all", "user-service", "note-service"}
# Binding, migrations and the first registration after the retries.
STARTUP_MARGIN = 10
# Process exit after the last bounded step, before SIGKILL.
SHUTDOWN_MARGIN = 5
# A load balancer in front of the gateway (ACK's ALB: ~6 s of health checks
# alone, plus its controller's reconcile) needs this long to drop a pod.
GATEWAY_MIN_PRESTOP = 10
# Kubernetes' defaults for fields left out.
PROBE_DEFAULTS = {"initialDelaySeconds": 0, "periodSeconds": 10, "timeoutSeconds": 1,
                  "failureThreshold": 3}
DEFAULT_GRACE = 30
OUR_IMAGE = re.compile(r"(^|/)easy-note([:@]|$)")
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}


# ---------------------------------------------------------------- parsing

UNITS = {"ms": 0.001, "msec": 0.001, "s": 1, "sec": 1, "secs": 1, "m": 60, "min": 60,
         "mins": 60, "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600}


def seconds(raw, var):
    """`500ms`, `30s`, `5m`, `1h`, `1m30s` or a bare number of seconds."""
    text = str(raw).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ValueError(f"{var}={raw!r} is not a duration this checker understands")
    total = 0.0
    for number, unit in parts:
        if unit not in UNITS:
            raise ValueError(f"{var}={raw!r}: unknown unit {unit!r}")
        total += float(number) * UNITS[unit]
    return total


def millis(raw, var):
    text = str(raw).strip()
    if not re.fullmatch(r"\d+", text):
        raise ValueError(f"{var}={raw!r} must be a whole number of milliseconds")
    return int(text) / 1000


def fmt(value):
    return f"{value:g}s"


def load_docs(text):
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render(overlay):
    kubectl = os.environ.get("KUBECTL", "kubectl")
    result = subprocess.run([kubectl, "kustomize", overlay], cwd=ROOT, capture_output=True,
                            text=True)
    if result.returncode != 0:
        sys.exit(f"kubectl kustomize {overlay} failed:\n{result.stderr}")
    return load_docs(result.stdout)


def secret_tables(path, text):
    """{variable: (secret, "required"|"optional")} from the marked tables of a document."""
    rows, errors = {}, []
    blocks = re.findall(r"<!--\s*secrets:begin\s*-->(.*?)<!--\s*secrets:end\s*-->", text, re.S)
    if not blocks:
        errors.append(f"{path}: no Secret table between <!-- secrets:begin --> and "
                      "<!-- secrets:end -->")
    for block in blocks:
        for line in block.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 3 or not cells[0].startswith("`"):
                continue
            var, secret, need = cells[0].strip("`"), cells[1].strip("`"), cells[2].lower()
            need = "required" if need.startswith("required") else (
                "optional" if need.startswith("optional") else need)
            if need not in ("required", "optional"):
                errors.append(f"{path}: Secret table row {var}: third column must say "
                              f"required or optional, not {cells[2]!r}")
                continue
            rows[var] = (secret, need)
    return rows, errors


def readyz_worst_case():
    """/readyz's own bound on each downstream check (they run in parallel)."""
    path = os.path.join(ROOT, READYZ_SOURCE)
    try:
        text = open(path, encoding="utf-8").read()
    except OSError:
        return None, (f"{READYZ_SOURCE} is gone: point READYZ_SOURCE in "
                      "deploy/check-manifests.py at the file defining /readyz's CHECK_TIMEOUT")
    match = re.search(r"CHECK_TIMEOUT:\s*Duration\s*=\s*Duration::from_(secs|millis)\((\d+)\)",
                      text)
    if not match:
        return None, (f"{READYZ_SOURCE}: no `CHECK_TIMEOUT: Duration = Duration::from_secs(..)`;"
                      " update deploy/check-manifests.py to where /readyz's bound lives now")
    value = int(match.group(2))
    return (value if match.group(1) == "secs" else value / 1000), None


class Inputs:
    """Everything checked: rendered overlays, the compose file, the Secret tables."""

    def __init__(self, overlays):
        self.overlays = {os.path.basename(o.rstrip("/")): render(o) for o in overlays}
        self.compose = yaml.safe_load(open(os.path.join(ROOT, COMPOSE_FILE), encoding="utf-8"))
        self.secret_docs = {p: open(os.path.join(ROOT, p), encoding="utf-8").read()
                            for p in SECRET_DOCS}
        self.readyz, self.readyz_error = readyz_worst_case()


# ---------------------------------------------------------------- budgets

def startup_required(env):
    """Seconds a service may spend retrying before it first answers a probe."""
    role = env.get("EASYNOTE_SERVICE", DEFAULTS["EASYNOTE_SERVICE"])
    need, parts = 0.0, []
    if role in ROLES_WITH_DATABASE:
        db = seconds(env.get("EASYNOTE_DB_CONNECT_TIMEOUT",
                             DEFAULTS["EASYNOTE_DB_CONNECT_TIMEOUT"]),
                     "EASYNOTE_DB_CONNECT_TIMEOUT")
        need += db
        parts.append(f"EASYNOTE_DB_CONNECT_TIMEOUT {fmt(db)}")
    if env.get("EASYNOTE_REGISTRY", DEFAULTS["EASYNOTE_REGISTRY"]) == "nacos":
        nacos = seconds(env.get("NACOS_CONNECT_TIMEOUT", DEFAULTS["NACOS_CONNECT_TIMEOUT"]),
                        "NACOS_CONNECT_TIMEOUT")
        need += nacos
        parts.append(f"NACOS_CONNECT_TIMEOUT {fmt(nacos)}")
    parts.append(f"margin {fmt(STARTUP_MARGIN)}")
    return need + STARTUP_MARGIN, " + ".join(parts)


def shutdown_required(env, prestop):
    """Seconds from the stop request to the process's exit, at worst."""
    parts, total = [], 0.0
    if prestop:
        total += prestop
        parts.append(f"preStop {fmt(prestop)}")
    if env.get("EASYNOTE_REGISTRY", DEFAULTS["EASYNOTE_REGISTRY"]) == "nacos":
        grace = seconds(env.get("EASYNOTE_DEREGISTER_GRACE",
                                DEFAULTS["EASYNOTE_DEREGISTER_GRACE"]),
                        "EASYNOTE_DEREGISTER_GRACE")
        total += grace
        parts.append(f"EASYNOTE_DEREGISTER_GRACE {fmt(grace)}")
    drain = seconds(env.get("EASYNOTE_SHUTDOWN_TIMEOUT", DEFAULTS["EASYNOTE_SHUTDOWN_TIMEOUT"]),
                    "EASYNOTE_SHUTDOWN_TIMEOUT")
    total += drain
    parts.append(f"EASYNOTE_SHUTDOWN_TIMEOUT {fmt(drain)}")
    if str(env.get("OTEL_SDK_DISABLED", "false")).lower() != "true":
        export = millis(env.get("OTEL_EXPORTER_OTLP_TIMEOUT",
                                DEFAULTS["OTEL_EXPORTER_OTLP_TIMEOUT"]),
                        "OTEL_EXPORTER_OTLP_TIMEOUT")
        batch = millis(env.get("OTEL_BSP_EXPORT_TIMEOUT", DEFAULTS["OTEL_BSP_EXPORT_TIMEOUT"]),
                       "OTEL_BSP_EXPORT_TIMEOUT")
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if base or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            total += min(export, batch)
            parts.append(f"trace flush {fmt(min(export, batch))}")
        if base or env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
            total += export
            parts.append(f"metrics flush {fmt(export)}")
    parts.append(f"margin {fmt(SHUTDOWN_MARGIN)}")
    return total + SHUTDOWN_MARGIN, " + ".join(parts)


# ---------------------------------------------------------------- Kubernetes

def container_env(container, docs):
    """The container's environment as far as the manifests tell it: ConfigMap
    values resolved, Secret values unknown (None)."""
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs
                  if d.get("kind") == "ConfigMap"}
    env = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps.get(source["configMapRef"]["name"], {}))
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "configMapKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["configMapKeyRef"]
            env[var["name"]] = configmaps.get(ref["name"], {}).get(ref["key"])
        else:
            env[var["name"]] = None
    return {k: v for k, v in env.items() if v is not None}


def prestop_seconds(container):
    pre = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre:
        return float(pre["sleep"].get("seconds", 0))
    command = pre.get("exec", {}).get("command", [])
    match = re.search(r"\bsleep\s+(\d+)", " ".join(str(c) for c in command))
    return float(match.group(1)) if match else 0.0


def probe_budget(probe):
    p = {**PROBE_DEFAULTS, **probe}
    return p["initialDelaySeconds"] + p["failureThreshold"] * p["periodSeconds"]


def check_overlay(name, docs, inputs, errors):
    services = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Service"}
    for doc in docs:
        if doc.get("kind") not in WORKLOADS:
            continue
        spec = doc["spec"]["template"]["spec"]
        for container in spec.get("containers", []):
            if OUR_IMAGE.search(container.get("image", "")):
                where = f"{name}: {doc['kind']} {doc['metadata']['name']}, container " \
                        f"{container['name']}"
                check_container(where, container, spec, docs, inputs, errors)
    for doc in docs:
        if doc.get("kind") != "Ingress" or doc["spec"].get("ingressClassName") != "alb":
            continue
        for rule in doc["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"].get("service", {}).get("name")
                kind = services.get(backend, {}).get("spec", {}).get("type", "ClusterIP")
                if kind not in ("NodePort", "LoadBalancer"):
                    errors.append(
                        f"{name}: Service {backend} backs the ALB Ingress "
                        f"{doc['metadata']['name']} but is {kind}: ALB needs NodePort or "
                        "LoadBalancer backends on Flannel clusters (patch its type in the "
                        "overlay)")


def check_container(where, container, pod, docs, inputs, errors):
    env = container_env(container, docs)
    if container.get("command") or container.get("args"):
        errors.append(f"{where}: picks its role with command/args "
                      f"{container.get('command', [])}{container.get('args', [])}; set "
                      "EASYNOTE_SERVICE instead, which `easy-note healthcheck` reads too")
    role = env.get("EASYNOTE_SERVICE")
    if role not in ROLES:
        errors.append(f"{where}: EASYNOTE_SERVICE is {role!r}; set it to one of "
                      f"{sorted(ROLES)}")
        role = DEFAULTS["EASYNOTE_SERVICE"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if probe not in container:
            errors.append(f"{where}: no {probe}")
    try:
        if "startupProbe" in container:
            have = probe_budget(container["startupProbe"])
            need, why = startup_required(env)
            if have < need:
                errors.append(
                    f"{where}: startupProbe gives {fmt(have)} (initialDelaySeconds + "
                    f"failureThreshold x periodSeconds) but start-up may take {fmt(need)} "
                    f"({why}): liveness would kill it while it still retries")
        prestop = prestop_seconds(container)
        if role == "api-gateway" and prestop < GATEWAY_MIN_PRESTOP:
            errors.append(
                f"{where}: preStop waits {fmt(prestop)}; the gateway must keep serving at "
                f"least {GATEWAY_MIN_PRESTOP}s after it starts terminating, while load "
                "balancers in front remove it (lifecycle.preStop.sleep)")
        grace = pod.get("terminationGracePeriodSeconds", DEFAULT_GRACE)
        need, why = shutdown_required(env, prestop)
        if grace < need:
            errors.append(
                f"{where}: terminationGracePeriodSeconds is {grace}s but stopping may take "
                f"{fmt(need)} ({why}): it would be killed mid-drain or mid-flush")
    except ValueError as err:
        errors.append(f"{where}: {err}")
    readiness = container.get("readinessProbe", {})
    if readiness.get("httpGet", {}).get("path") == "/readyz" and inputs.readyz is not None:
        timeout = readiness.get("timeoutSeconds", PROBE_DEFAULTS["timeoutSeconds"])
        if timeout <= inputs.readyz:
            errors.append(
                f"{where}: readinessProbe times out after {timeout}s, but /readyz may take "
                f"{fmt(inputs.readyz)} (CHECK_TIMEOUT in {READYZ_SOURCE}); make it longer")
    check_secret_refs(where, container, inputs, errors)


def check_secret_refs(where, container, inputs, errors):
    documented = inputs.secrets
    for source in container.get("envFrom", []):
        if "secretRef" in source:
            errors.append(f"{where}: envFrom secretRef {source['secretRef']['name']}: name "
                          "each variable with a secretKeyRef, so that whether it is optional "
                          "is explicit and checked")
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if not ref:
            continue
        key, secret, optional = ref["key"], ref["name"], bool(ref.get("optional", False))
        if key not in documented:
            errors.append(f"{where}: {var['name']} comes from Secret {secret} key {key}, which "
                          f"the Secret tables of {' and '.join(SECRET_DOCS)} do not list")
            continue
        doc_secret, need = documented[key]
        if not (secret == doc_secret or re.fullmatch(re.escape(doc_secret) + r"-[a-z0-9]{10}",
                                                    secret)):
            errors.append(f"{where}: {key} comes from Secret {secret}, but the docs say "
                          f"{doc_secret}")
        if need == "optional" and not optional:
            errors.append(f"{where}: {key} is optional in the docs but its secretKeyRef is "
                          "required: pods would not start without it (add optional: true)")
        if need == "required" and optional:
            errors.append(f"{where}: {key} is required in the docs but its secretKeyRef has "
                          "optional: true: a missing Secret would start a broken pod")


# ---------------------------------------------------------------- compose

def check_compose(compose, errors):
    for name, service in (compose.get("services") or {}).items():
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment if "=" in item)
        if "EASYNOTE_SERVICE" not in environment and not str(service.get("image", "")).startswith(
                "easy-note"):
            continue
        where = f"{COMPOSE_FILE}: service {name}"
        env = {k: str(v) for k, v in environment.items()}
        if service.get("command") or service.get("entrypoint"):
            errors.append(f"{where}: picks its role with command/entrypoint; set "
                          "EASYNOTE_SERVICE instead, which `easy-note healthcheck` reads too")
        if env.get("EASYNOTE_SERVICE") not in ROLES:
            errors.append(f"{where}: EASYNOTE_SERVICE is {env.get('EASYNOTE_SERVICE')!r}")
        health = service.get("healthcheck") or {}
        if health.get("test") != ["CMD", "easy-note", "healthcheck"]:
            errors.append(f"{where}: healthcheck is {health.get('test')}; use "
                          "[\"CMD\", \"easy-note\", \"healthcheck\"] (it probes EASYNOTE_SERVICE)")
        try:
            have = (seconds(health.get("start_period", "0s"), "start_period")
                    + seconds(health.get("interval", "30s"), "interval")
                    * int(health.get("retries", 3)))
            need, why = startup_required(env)
            if have < need:
                errors.append(f"{where}: healthcheck turns unhealthy after {fmt(have)} "
                              f"(start_period + retries x interval) but start-up may take "
                              f"{fmt(need)} ({why})")
            grace = seconds(service.get("stop_grace_period", "10s"), "stop_grace_period")
            need, why = shutdown_required(env, 0)
            if grace < need:
                errors.append(f"{where}: stop_grace_period is {fmt(grace)} but stopping may take "
                              f"{fmt(need)} ({why})")
        except ValueError as err:
            errors.append(f"{where}: {err}")


# ---------------------------------------------------------------- all

def check(inputs):
    errors = []
    inputs.secrets = {}
    tables = {}
    for path, text in inputs.secret_docs.items():
        rows, problems = secret_tables(path, text)
        errors.extend(problems)
        tables[path] = rows
    for path, rows in tables.items():
        for var, row in rows.items():
            if var in inputs.secrets and inputs.secrets[var] != row:
                errors.append(f"{path}: Secret table says {var} is {row[1]} in {row[0]}, "
                              f"another document says {inputs.secrets[var][1]} in "
                              f"{inputs.secrets[var][0]}")
            inputs.secrets.setdefault(var, row)
    if inputs.readyz_error:
        errors.append(inputs.readyz_error)
    for name, docs in inputs.overlays.items():
        check_overlay(name, docs, inputs, errors)
    check_compose(inputs.compose, errors)
    return errors


# ---------------------------------------------------------------- self-test

def find(docs, kind, name):
    for doc in docs:
        if doc.get("kind") == kind and doc["metadata"]["name"].startswith(name):
            return doc
    raise KeyError(f"{kind} {name} not in the rendered overlay")


def container(docs, name):
    return find(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]


def env_var(c, name):
    return next(v for v in c["env"] if v["name"] == name)


def set_config(docs, var, value):
    find(docs, "ConfigMap", "easy-note-config")["data"][var] = value


def mutations():
    """(what breaks, overlay, how, a phrase the complaint must contain)."""
    def drop(key):
        return lambda c: c.pop(key)
    return [
        ("note-service loses its startupProbe", "local",
         lambda d: drop("startupProbe")(container(d, "note-service")), "no startupProbe"),
        ("the gateway loses its readinessProbe", "aliyun",
         lambda d: drop("readinessProbe")(container(d, "api-gateway")), "no readinessProbe"),
        ("user-service loses its livenessProbe", "local",
         lambda d: drop("livenessProbe")(container(d, "user-service")), "no livenessProbe"),
        ("user-service's startupProbe shrinks to 50s", "local",
         lambda d: container(d, "user-service")["startupProbe"].update(failureThreshold=10),
         "startupProbe gives 50s"),
        ("the database retry grows to 300s", "aliyun",
         lambda d: set_config(d, "EASYNOTE_DB_CONNECT_TIMEOUT", "5m"), "start-up may take"),
        ("the gateway's Nacos retry grows to 2m", "local",
         lambda d: container(d, "api-gateway")["env"].append(
             {"name": "NACOS_CONNECT_TIMEOUT", "value": "2m"}),
         "NACOS_CONNECT_TIMEOUT 120s"),
        ("the gateway's grace period drops to 30s", "aliyun",
         lambda d: find(d, "Deployment", "api-gateway")["spec"]["template"]["spec"].update(
             terminationGracePeriodSeconds=30), "terminationGracePeriodSeconds is 30s"),
        ("the drain bound grows to 60s", "local",
         lambda d: set_config(d, "EASYNOTE_SHUTDOWN_TIMEOUT", "60s"),
         "EASYNOTE_SHUTDOWN_TIMEOUT 60s"),
        ("the OTLP export timeout grows to 30s", "aliyun",
         lambda d: set_config(d, "OTEL_EXPORTER_OTLP_TIMEOUT", "30000"), "metrics flush 30s"),
        ("the gateway loses its preStop wait", "aliyun",
         lambda d: container(d, "api-gateway").pop("lifecycle"), "preStop waits 0s"),
        ("the gateway's readiness timeout drops to 1s", "local",
         lambda d: container(d, "api-gateway")["readinessProbe"].update(timeoutSeconds=1),
         "/readyz may take"),
        ("the ALB's backend Service becomes ClusterIP", "aliyun",
         lambda d: find(d, "Service", "api-gateway")["spec"].update(type="ClusterIP"),
         "is ClusterIP"),
        ("an optional MSE key becomes required", "aliyun",
         lambda d: env_var(container(d, "note-service"), "NACOS_ACCESS_KEY")["valueFrom"][
             "secretKeyRef"].pop("optional"), "is optional in the docs"),
        ("the required database URL becomes optional", "local",
         lambda d: env_var(container(d, "user-service"), "EASYNOTE_DATABASE_URL")["valueFrom"][
             "secretKeyRef"].update(optional=True), "is required in the docs"),
        ("a Secret key nobody documented", "aliyun",
         lambda d: container(d, "api-gateway")["env"].append(
             {"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "UNDOCUMENTED"}}}),
         "do not list"),
        ("a whole Secret through envFrom", "local",
         lambda d: container(d, "note-service")["envFrom"].append(
             {"secretRef": {"name": "easy-note-secrets"}}), "envFrom secretRef"),
        ("the role given as args", "local",
         lambda d: container(d, "user-service").update(args=["user-service"]),
         "command/args"),
        ("a container without EASYNOTE_SERVICE", "aliyun",
         lambda d: container(d, "note-service")["env"].remove(
             env_var(container(d, "note-service"), "EASYNOTE_SERVICE")),
         "EASYNOTE_SERVICE is None"),
    ]


def compose_mutations():
    def svc(c, name):
        return c["services"][name]
    return [
        ("compose stop_grace_period drops to 10s",
         lambda c: svc(c, "note-service").update(stop_grace_period="10s"),
         "stop_grace_period is 10s"),
        ("compose healthcheck names the role",
         lambda c: svc(c, "api-gateway").update(healthcheck={
             **svc(c, "api-gateway")["healthcheck"],
             "test": ["CMD", "easy-note", "api-gateway", "healthcheck"]}),
         "healthcheck is"),
        ("compose start_period too short for the retries",
         lambda c: svc(c, "user-service").update(healthcheck={
             **svc(c, "user-service")["healthcheck"], "start_period": "5s"}),
         "turns unhealthy after"),
        ("compose role given as command",
         lambda c: svc(c, "user-service").update(command=["user-service"]), "command/entrypoint"),
    ]


def doc_mutations():
    return [
        ("the docs disagree on a Secret",
         lambda docs: docs.update({SECRET_DOCS[1]: docs[SECRET_DOCS[1]].replace(
             "| `NACOS_ACCESS_KEY` | `easy-note-mse` | optional",
             "| `NACOS_ACCESS_KEY` | `easy-note-mse` | required")}),
         "another document says"),
    ]


def self_test(inputs):
    failures = []
    baseline = check(inputs)
    if baseline:
        failures.append("the unmodified files already fail:\n  " + "\n  ".join(baseline))
    cases = []
    for what, overlay, mutate, expected in mutations():
        def apply(i, overlay=overlay, mutate=mutate):
            mutate(i.overlays[overlay])
        cases.append((what, apply, expected))
    for what, mutate, expected in compose_mutations():
        cases.append((what, lambda i, m=mutate: m(i.compose), expected))
    for what, mutate, expected in doc_mutations():
        cases.append((what, lambda i, m=mutate: m(i.secret_docs), expected))
    for what, apply, expected in cases:
        broken = copy.deepcopy(inputs)
        apply(broken)
        errors = check(broken)
        if not any(expected in e for e in errors):
            failures.append(f"{what}: expected a complaint containing {expected!r}, got "
                            f"{errors or 'none'}")
        else:
            print(f"  caught: {what}")
    if failures:
        print("check-manifests self-test FAILED:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    print(f"check-manifests self-test: all {len(cases)} broken variants were caught")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overlays", nargs="*", default=DEFAULT_OVERLAYS)
    parser.add_argument("--self-test", action="store_true",
                        help="break the files one way at a time; every break must be caught")
    args = parser.parse_args()
    if args.self_test:
        # The broken variants are made from the two real overlays.
        return self_test(Inputs(DEFAULT_OVERLAYS))
    inputs = Inputs(args.overlays)
    errors = check(inputs)
    if errors:
        print("deploy/check-manifests.py: the deployment files break these rules:",
              file=sys.stderr)
        for error in errors:
            print(f"  - {error}", file=sys.stderr)
        return 1
    print(f"manifests: probes, start-up and shutdown budgets, ALB Service type and Secrets "
          f"agree ({', '.join(inputs.overlays)} and {COMPOSE_FILE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
