"""Structural checks of the deployment files, on what actually gets applied.

Renders each kustomize overlay with `kubectl kustomize`, reads
docker-compose.yml and the documented Secret tables, and checks the rules a
schema cannot express, so that they cannot quietly break again:

- probes: every container running the easy-note image has a startup, a
  readiness and a liveness probe, and sets its role with EASYNOTE_SERVICE
  (not with command/args, which `easy-note healthcheck` would not see);
- start-up: each startupProbe lets the container live at least as long as
  the service's own retries take (EASYNOTE_DB_CONNECT_TIMEOUT for the
  services with a database, then NACOS_CONNECT_TIMEOUT with Nacos);
- shutdown: terminationGracePeriodSeconds covers the preStop wait +
  EASYNOTE_DEREGISTER_GRACE (with Nacos) + EASYNOTE_SHUTDOWN_TIMEOUT + the
  telemetry flush (bounded by the OTLP export timeout when something is
  exported); the gateway waits in preStop for load balancers to let go of
  it; compose's stop_grace_period and healthcheck obey the same budgets;
- readiness: the gateway's /readyz probe waits longer than /readyz itself
  may take;
- ingress: Services behind an `alb` Ingress are NodePort or LoadBalancer
  (what ACK's ALB needs with the Flannel network plug-in);
- secrets: every secretKeyRef and every mounted Secret is listed in the
  documented Secret table (between `<!-- secrets:begin -->` and
  `<!-- secrets:end -->` in deploy/k8s/overlays/aliyun/README.md, the one
  place the docs list them), an optional one has
  `optional: true` and a required one does not; each Deployment has Secrets
  of its own (none is shared with another Deployment, except optional
  ones every service reads alike), the JWT key only in the gateway and the
  database URL only in the services;
- mutual TLS: every container of ours sets EASYNOTE_TLS_CERT, _KEY and _CA
  to files of a mounted Secret, and the gRPC services are probed with
  `easy-note healthcheck` run in the container (the kubelet's gRPC probe
  cannot present a client certificate), with a timeout longer than the
  subcommand's own bound;
- network policy: the NetworkPolicies let exactly these connections reach
  the suite's pods, and nothing else: anyone to the gateway's HTTP port,
  the gateway to user-service and note-service, note-service to
  user-service, on their gRPC ports (read from the Deployments);
- compose: the one-shot `easy-note dev-certs` service writes the keys into
  volumes the three services mount read-only and wait for; each service
  names its own certificate; the gateway's JWT key comes from such a volume
  (EASYNOTE_JWT_SECRET may only be passed through from `.env`, with no
  committed default); no database URL in the gateway and no JWT key in the
  services; Nacos's ports are published on 127.0.0.1 only;
- compose secret separation: of the files dev-certs writes, each of our
  services can read (mounts) only those it uses: its own certificate and
  key, the CA, the JWT key (the gateway), the database password (where a
  MySQL database is used) and its Nacos login's password (where Nacos is
  used); so no other service's key, no MySQL root password and no Nacos
  server secret; and none logs in to Nacos as its admin;
- registry auth and committed secrets: wherever an overlay or compose runs
  Nacos, its auth is on and its admin's password is set as it starts (a
  postStart hook; compose's init one-shot, which our services wait for),
  and our services log in to it; compose commits no secret (every secret
  setting empty or passed through from `.env`, no password in a URL, the
  one exception Grafana's, see COMPOSE_COMMITTED_OK), and the Nacos and
  database passwords our services read are files a dev-certs one-shot
  generates into a volume they mount;
- scaling and pulling: a Deployment a HorizontalPodAutoscaler scales sets no
  `replicas` (every apply would reset the HPA's count) and, when the HPA
  scales on CPU, requests at least HPA_MIN_CPU_REQUEST; no pod names its own
  imagePullSecrets (the kubelet would then ignore the ServiceAccount's, where
  ACK's ACR credential helper puts its Secret);
- restarts and bounds: every long-running compose service has a restart
  policy, and the one-shots others wait for (`service_completed_successfully`)
  have none; Jaeger's in-memory store, in compose and in an overlay, is
  bounded by a positive MEMORY_MAX_TRACES.

What the code decides is not copied here: each role's identity, who may
call it, /readyz's and the health check's bounds and every start-up and
stop wait (read from the container's own environment, the code's defaults
where unset) come from `easy-note deploy-facts` (the release build, or
EASYNOTE_BIN).

Every failure is printed with the object and the numbers involved, and the
exit status is 1. `--self-test` proves each rule can fail: it breaks the
real rendered files one way at a time and expects the matching complaint.

usage: scripts/py deploy/check-manifests.py [--self-test] [OVERLAY_DIR ...]
       (default overlays: deploy/k8s/overlays/local and .../aliyun)
Needs PyYAML, kubectl (KUBECTL to override) and the release build.
"""

import argparse
import copy
import json
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OVERLAYS = ["deploy/k8s/overlays/local", "deploy/k8s/overlays/aliyun"]
COMPOSE_FILE = "docker-compose.yml"
DOCKERFILE = "deploy/Dockerfile"
SECRET_DOCS = ["deploy/k8s/overlays/aliyun/README.md"]
# The build whose facts the files are checked against.
EASYNOTE_BIN = os.environ.get("EASYNOTE_BIN") or os.path.join(ROOT, "target", "release", "easy-note")
HEALTHCHECK_COMMAND = ["easy-note", "healthcheck"]
# Liveness (and start-up, which gates it) ask only whether the process
# answers; readiness asks for SERVING, which follows the database. A
# liveness probe that asks the database gets every replica killed by a
# database failover.
PROBE_COMMANDS = {"startupProbe": HEALTHCHECK_COMMAND + ["--live"],
                  "readinessProbe": HEALTHCHECK_COMMAND,
                  "livenessProbe": HEALTHCHECK_COMMAND + ["--live"]}
PROBE_PATHS = {"startupProbe": "/healthz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
# Secrets only one role may hold: the others must not be able to read them.
ROLE_SECRETS = {"EASYNOTE_JWT_SECRET": {"api-gateway", "all"},
                "EASYNOTE_DATABASE_URL": {"user-service", "note-service", "all"}}
TLS_VARS = ("EASYNOTE_TLS_CERT", "EASYNOTE_TLS_KEY", "EASYNOTE_TLS_CA")
SUITE = ("api-gateway", "user-service", "note-service")
# Compose services whose host ports must stay on this machine.
COMPOSE_LOOPBACK_ONLY = ("nacos",)
# A setting whose name says it holds a secret (its *_FILE twin names a file).
SECRET_NAME = re.compile(r"(PASSWORD|TOKEN|SECRET|SECRET_KEY|IDENTITY_VALUE)$")
# The one committed secret compose may keep: Grafana's admin password (its
# image runs as another user than the one the generated files belong to),
# for a dashboard published on 127.0.0.1 that anonymous visitors may view.
COMPOSE_COMMITTED_OK = {"GF_SECURITY_ADMIN_PASSWORD"}
# How Nacos gets an admin: the API the first caller sets its password with.
NACOS_ADMIN_API = "/v1/auth/users/admin"
# How the admin gives the services' user its role's grants.
NACOS_PERMISSIONS_API = "/permissions"
# Nacos's admin: our services log in as a user of their own, with less.
NACOS_ADMIN_USER = "nacos"
NACOS_IMAGE = re.compile(r"(^|/)nacos-server:")
JAEGER_IMAGE = re.compile(r"(^|/)jaegertracing/all-in-one:")
# Below this CPU request an HPA's utilization target is idle noise.
HPA_MIN_CPU_REQUEST = 100
# What a long-running compose service does when it exits or the engine restarts.
COMPOSE_RESTART = {"unless-stopped", "always", "on-failure"}

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
    """A compose duration: `500ms`, `30s`, `5m`, `1h`, `1m30s` or a bare
    number of seconds."""
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
    """{(variable, secret): "required"|"optional"} from the marked tables of a
    document; rows for mounted files (first cell not a `variable`) count as
    (None, secret)."""
    rows, errors = {}, []
    blocks = re.findall(r"<!--\s*secrets:begin\s*-->(.*?)<!--\s*secrets:end\s*-->", text, re.S)
    if not blocks:
        errors.append(f"{path}: no Secret table between <!-- secrets:begin --> and "
                      "<!-- secrets:end -->")
    for block in blocks:
        for line in block.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 3 or not cells[1].startswith("`"):
                continue
            var = cells[0].strip("`") if re.fullmatch(r"`[A-Z0-9_]+`", cells[0]) else None
            secret, need = cells[1].strip("`"), cells[2].lower()
            need = "required" if need.startswith("required") else (
                "optional" if need.startswith("optional") else need)
            if need not in ("required", "optional"):
                errors.append(f"{path}: Secret table row {var}: third column must say "
                              f"required or optional, not {cells[2]!r}")
                continue
            rows[(var, secret)] = need
    return rows, errors


_FACTS = {}


def deploy_facts(env, every_role=False):
    """`easy-note deploy-facts` run with the environment `env`: the facts
    of the role it sets (every role's, keyed by role, with `every_role`).
    A setting the service would refuse raises ValueError with its message."""
    env = {k: str(v) for k, v in env.items() if v is not None}
    key = (every_role, tuple(sorted(env.items())))
    if key not in _FACTS:
        command = [EASYNOTE_BIN, "deploy-facts"] + (["--every-role"] if every_role else [])
        try:
            done = subprocess.run(command, env={"PATH": os.environ.get("PATH", ""), **env},
                                  capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            sys.exit(f"{EASYNOTE_BIN} not found: build it (cargo build --release) or point "
                     "EASYNOTE_BIN at an easy-note binary")
        _FACTS[key] = ((json.loads(done.stdout), None) if done.returncode == 0
                       else (None, done.stderr.strip().removeprefix("easy-note deploy-facts: ")))
    facts, error = _FACTS[key]
    if error:
        raise ValueError(error)
    return facts


def roles():
    """Every role's facts with the code's defaults, keyed by role."""
    return deploy_facts({}, every_role=True)


def identity(role):
    """The name a role's certificate is issued for (the all-in-one's for
    an unknown role)."""
    return roles().get(role, roles()["all"])["identity"]


class Inputs:
    """Everything checked: rendered overlays, the compose file, the Secret tables."""

    def __init__(self, overlays):
        self.overlays = {os.path.basename(o.rstrip("/")): render(o) for o in overlays}
        self.compose = yaml.safe_load(open(os.path.join(ROOT, COMPOSE_FILE), encoding="utf-8"))
        self.dockerfile = open(os.path.join(ROOT, DOCKERFILE), encoding="utf-8").read()
        self.secret_docs = {p: open(os.path.join(ROOT, p), encoding="utf-8").read()
                            for p in SECRET_DOCS}
        self.readyz = roles()["api-gateway"]["readyz_timeout"]
        self.probe_bound = roles()["all"]["healthcheck_timeout"]


# ---------------------------------------------------------------- budgets

def waits(env, which, margin, first=()):
    """The worst case of a start-up or a stop (`which`) with `env`: its
    bounded waits, as `easy-note deploy-facts` reads them, plus `margin`;
    the total and how it adds up."""
    steps = [*first, *((w["what"], w["seconds"]) for w in deploy_facts(env)[which]),
             ("margin", margin)]
    return sum(took for _, took in steps), " + ".join(f"{what} {fmt(took)}" for what, took in steps)


def startup_required(env):
    """Seconds a service may spend retrying before it first answers a probe."""
    return waits(env, "startup", STARTUP_MARGIN)


def shutdown_required(env, prestop):
    """Seconds from the stop request to the process's exit, at worst."""
    return waits(env, "stop", SHUTDOWN_MARGIN, [("preStop", prestop)] if prestop else [])


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
    users = {}  # Secret -> {workload: {keys read, or "files"}}
    for doc in docs:
        if doc.get("kind") not in WORKLOADS:
            continue
        spec = doc["spec"]["template"]["spec"]
        for container in spec.get("containers", []):
            if OUR_IMAGE.search(container.get("image", "")):
                where = f"{name}: {doc['kind']} {doc['metadata']['name']}, container " \
                        f"{container['name']}"
                check_container(where, container, spec, docs, inputs, errors)
                for secret, key in secrets_read(container, spec):
                    users.setdefault(secret, {}).setdefault(doc["metadata"]["name"], set()).add(key)
    check_secret_sharing(name, users, inputs, errors)
    check_autoscaling(name, docs, errors)
    check_pull_secrets(name, docs, errors)
    check_jaeger_memory(name, [c for d in docs if d.get("kind") in WORKLOADS
                               for c in d["spec"]["template"]["spec"].get("containers", [])],
                        errors)
    check_overlay_nacos_auth(name, docs, errors)
    check_network_policies(name, docs, errors)
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
    if role not in roles():
        errors.append(f"{where}: EASYNOTE_SERVICE is {role!r}; set it to one of "
                      f"{sorted(roles())}")
        role = env["EASYNOTE_SERVICE"] = "all"
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
                f"{fmt(inputs.readyz)} (its readyz_timeout); make it longer")
    check_secret_refs(where, container, inputs, errors)
    check_role_secrets(where, role, container, errors)
    check_tls(where, role, env, container, pod, errors)
    if roles()[role]["serves"] == "grpc":
        check_exec_probes(where, container, inputs, errors)
    else:
        check_http_probes(where, container, errors)


def secrets_read(container, pod):
    """(Secret, key) for every secretKeyRef, (Secret, "files") for every mounted Secret."""
    found = [(v["valueFrom"]["secretKeyRef"]["name"], v["valueFrom"]["secretKeyRef"]["key"])
             for v in container.get("env", []) if "secretKeyRef" in v.get("valueFrom", {})]
    mounted = {m["name"] for m in container.get("volumeMounts", [])}
    found += [(vol["secret"]["secretName"], "files") for vol in pod.get("volumes", [])
              if "secret" in vol and vol["name"] in mounted]
    return found


def check_role_secrets(where, role, container, errors):
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["key"] in ROLE_SECRETS and role not in ROLE_SECRETS[ref["key"]]:
            holders = sorted(ROLE_SECRETS[ref["key"]] - {"all"})
            errors.append(f"{where}: reads {ref['key']} (Secret {ref['name']}), which only "
                          f"{', '.join(holders)} may hold: a {role} pod must not be able to")


def documented_secret(name, documented):
    """The documented Secret name `name` stands for (kustomize may add a hash)."""
    for secret in {s for _, s in documented}:
        if name == secret or re.fullmatch(re.escape(secret) + r"-[a-z0-9]{10}", name):
            return secret
    return None


def check_secret_sharing(overlay, users, inputs, errors):
    """Each Deployment its own Secrets: one read by several workloads is
    refused unless every key read from it is optional in the docs (the MSE
    and ARMS credentials, the same for every service)."""
    for secret, workloads in sorted(users.items()):
        if len(workloads) < 2:
            continue
        doc = documented_secret(secret, inputs.secrets)
        keys = set().union(*workloads.values())
        shared_ok = doc is not None and all(
            key != "files" and inputs.secrets.get((key, doc)) == "optional" for key in keys)
        if not shared_ok:
            errors.append(f"{overlay}: Secret {secret} is read by {', '.join(sorted(workloads))}: "
                          "each Deployment gets Secrets of its own, holding only what it needs")
    for secret in users:
        if any(key == "files" for key in set().union(*users[secret].values())) and \
                documented_secret(secret, inputs.secrets) is None:
            errors.append(f"{overlay}: Secret {secret} is mounted, but the Secret tables of "
                          f"{' and '.join(SECRET_DOCS)} do not list it")


def check_tls(where, role, env, container, pod, errors):
    """EASYNOTE_TLS_* name files of a Secret mounted in the container."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = [(m["mountPath"].rstrip("/"), volumes.get(m["name"], {}))
              for m in container.get("volumeMounts", [])]
    expected = {"EASYNOTE_TLS_CERT": "tls.crt", "EASYNOTE_TLS_KEY": "tls.key",
                "EASYNOTE_TLS_CA": "ca.crt"}
    for var in TLS_VARS:
        path = env.get(var)
        if not path:
            errors.append(f"{where}: no {var}: internal gRPC would be plaintext (and refused "
                          "in production)")
            continue
        directory, file = os.path.split(path)
        source = next((vol for mount, vol in mounts if mount == directory), None)
        if not source or "secret" not in source:
            errors.append(f"{where}: {var}={path} is not in a mounted Secret")
        elif file != expected[var]:
            errors.append(f"{where}: {var}={path}: a kubernetes.io/tls Secret holds it as "
                          f"{expected[var]}")


def check_exec_probes(where, container, inputs, errors):
    for name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(name)
        if not probe:
            continue
        command = probe.get("exec", {}).get("command")
        if command != PROBE_COMMANDS[name]:
            kind = next((k for k in ("grpc", "httpGet", "tcpSocket", "exec") if k in probe), "?")
            if kind == "exec" and command and command[:2] == HEALTHCHECK_COMMAND:
                errors.append(f"{where}: {name} runs {command}: use {PROBE_COMMANDS[name]} "
                              "(liveness never asks the database; readiness does)")
            else:
                errors.append(f"{where}: {name} is a {kind} probe; with mutual TLS the kubelet "
                              f"cannot pass the handshake: use exec {PROBE_COMMANDS[name]}")
            continue
        timeout = probe.get("timeoutSeconds", PROBE_DEFAULTS["timeoutSeconds"])
        if inputs.probe_bound is not None and timeout <= inputs.probe_bound:
            errors.append(f"{where}: {name} timeoutSeconds is {timeout}s, but `easy-note "
                          f"healthcheck` may take {fmt(inputs.probe_bound)} (its bound) plus "
                          "its own start; make it longer")


def check_http_probes(where, container, errors):
    """The gateway's HTTP probes: liveness /healthz (never the downstream
    services), readiness /readyz."""
    for name, path in PROBE_PATHS.items():
        have = ((container.get(name) or {}).get("httpGet") or {}).get("path")
        if have is not None and have != path:
            errors.append(f"{where}: {name} asks {have}; use {path} (liveness never asks "
                          "the downstream services; readiness does)")


def check_autoscaling(name, docs, errors):
    """A Deployment an HPA scales sets no `replicas` (every apply would
    reset the HPA's count) and requests enough CPU that the HPA's
    utilization target is real load, not idle noise."""
    for hpa in (d for d in docs if d.get("kind") == "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        where = f"{name}: {target['kind']} {target['name']}"
        try:
            doc = find(docs, target["kind"], target["name"])
        except KeyError:
            errors.append(f"{name}: HorizontalPodAutoscaler {hpa['metadata']['name']} scales "
                          f"{target['kind']} {target['name']}, which is not in the overlay")
            continue
        if "replicas" in doc["spec"]:
            errors.append(f"{where} sets replicas: {doc['spec']['replicas']} beside its "
                          "HorizontalPodAutoscaler: every `kubectl apply` resets the count")
        scales_on_cpu = any((m.get("resource") or {}).get("name") == "cpu"
                            for m in hpa["spec"].get("metrics", []))
        for c in doc["spec"]["template"]["spec"].get("containers", []):
            cpu = ((c.get("resources") or {}).get("requests") or {}).get("cpu")
            if scales_on_cpu and millicores(cpu) < HPA_MIN_CPU_REQUEST:
                errors.append(f"{where}, container {c['name']}: requests cpu {cpu} while its "
                              f"HPA scales on CPU utilization: under {HPA_MIN_CPU_REQUEST}m the "
                              "target is a few dozen requests a second and the HPA flaps")


def millicores(cpu):
    """A Kubernetes CPU quantity in millicores (0 when unset)."""
    if cpu is None:
        return 0
    text = str(cpu)
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def check_pull_secrets(name, docs, errors):
    """No workload names its own imagePullSecrets: the kubelet then ignores
    the ServiceAccount's, which is where ACK's ACR credential helper (and
    `kubectl patch serviceaccount`) put them."""
    for doc in docs:
        if doc.get("kind") in WORKLOADS and doc["spec"]["template"]["spec"].get(
                "imagePullSecrets"):
            errors.append(f"{name}: {doc['kind']} {doc['metadata']['name']} names "
                          "imagePullSecrets: the ServiceAccount's (the ACR credential helper's) "
                          "would be ignored; attach a pull Secret to the ServiceAccount instead")


def check_jaeger_memory(where, containers, errors):
    """Jaeger's in-memory store keeps every trace unless bounded."""
    for c in containers:
        image = str(c.get("image", ""))
        if not JAEGER_IMAGE.search(image):
            continue
        env = c.get("env") or {}
        names = env if isinstance(env, dict) else {v["name"]: v.get("value") for v in env}
        bound = str(names.get("MEMORY_MAX_TRACES") or "")
        # 0, like unset, is no bound at all.
        if not bound.isdigit() or int(bound) == 0:
            errors.append(f"{where}: {image} keeps every trace in memory: set "
                          f"MEMORY_MAX_TRACES (is {bound or 'unset'})")


def check_overlay_nacos_auth(name, docs, errors):
    """A Nacos the overlay runs has auth on, sets its admin's password from a
    Secret as it starts, and every service of ours logs in to it."""
    nacos = [(doc, c) for doc in docs if doc.get("kind") in WORKLOADS
             for c in doc["spec"]["template"]["spec"].get("containers", [])
             if NACOS_IMAGE.search(c.get("image", ""))]
    for doc, container in nacos:
        where = f"{name}: {doc['kind']} {doc['metadata']['name']}, container {container['name']}"
        env = {v["name"]: v.get("value") for v in container.get("env", [])}
        if str(env.get("NACOS_AUTH_ENABLE", "false")).lower() != "true":
            errors.append(f"{where}: Nacos auth is off (NACOS_AUTH_ENABLE="
                          f"{env.get('NACOS_AUTH_ENABLE')!r}): anyone reaching it could register "
                          "instances and change the governance rules")
        hook = " ".join(str(part) for part in ((container.get("lifecycle") or {}).get(
            "postStart") or {}).get("exec", {}).get("command", []))
        if NACOS_ADMIN_API not in hook:
            errors.append(f"{where}: no postStart hook sets the admin's password "
                          f"({NACOS_ADMIN_API}): Nacos 2.4 starts without an admin, so no "
                          "service could log in")
        if NACOS_PERMISSIONS_API not in hook:
            errors.append(f"{where}: the postStart hook grants no role ({NACOS_PERMISSIONS_API}): "
                          "the services would need the admin's login")
    if not nacos:
        return
    # The Secrets the Nacos pods take the admin's password from: no service reads them.
    admin_secrets = {secret_of(v) for _, c in nacos for v in c.get("env", [])
                     if v["name"].endswith("ADMIN_PASSWORD")} - {None}
    for doc in docs:
        if doc.get("kind") not in WORKLOADS:
            continue
        for container in doc["spec"]["template"]["spec"].get("containers", []):
            if not OUR_IMAGE.search(container.get("image", "")):
                continue
            where = f"{name}: {doc['kind']} {doc['metadata']['name']}"
            env = {v["name"]: v for v in container.get("env", [])}
            for var in ("NACOS_USERNAME", "NACOS_PASSWORD"):
                if var not in env:
                    errors.append(f"{where}: no {var}, but the overlay's Nacos has auth on")
            secret = secret_of(env.get("NACOS_PASSWORD") or {})
            if secret in admin_secrets:
                errors.append(f"{where}: logs in to Nacos with the admin's password (Secret "
                              f"{secret}): give the services a user of their own that may only "
                              "register, discover and read configuration")


def secret_of(var):
    """The Secret an env entry reads (valueFrom.secretKeyRef), or None."""
    return ((var.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")


def check_compose_secrets(compose, errors):
    """Nothing secret committed (beyond COMPOSE_COMMITTED_OK): every secret
    setting is empty or passed through from `.env` with no default, and no
    URL carries a password; Nacos runs with auth on, an init one-shot sets
    its admin's password, and our services wait for it and read the
    generated passwords from files a dev-certs one-shot writes."""
    services = compose.get("services") or {}
    generated = {(volume, file): init  # (volume, file name) -> the dev-certs one-shot
                 for volume, files in dev_certs_outputs(compose).items()
                 for file, init in files.items()}
    inits = [name for name, service in services.items()
             if NACOS_ADMIN_API in " ".join(str(p) for p in (
                 [service.get("entrypoint") or []] + [service.get("command") or []]))]
    for name, service in services.items():
        where = f"{COMPOSE_FILE}: service {name}"
        environment, env = compose_environment(service)
        for var, value in sorted(env.items()):
            if SECRET_NAME.search(var) and value and var not in COMPOSE_COMMITTED_OK:
                errors.append(f"{where}: {var} is a committed secret ({value[:4]}…): generate "
                              "it per install (dev-certs --secret) and read it from a file")
            if re.search(r"://[^/@\s]*:[^/@\s]+@", value):
                errors.append(f"{where}: {var} holds a password in its URL; give it through "
                              "a *_PASSWORD_FILE setting")
        if NACOS_IMAGE.search(str(service.get("image", ""))) and name not in inits:
            if env.get("NACOS_AUTH_ENABLE", "false").lower() != "true":
                errors.append(f"{where}: Nacos auth is off (NACOS_AUTH_ENABLE="
                              f"{environment.get('NACOS_AUTH_ENABLE')!r}): anyone reaching it "
                              "could register instances and change the governance rules")
        if "EASYNOTE_SERVICE" not in env:
            continue
        mounts = {target: source for source, target, _ in volume_mounts(service)}
        wanted = ["NACOS_PASSWORD_FILE"]
        if env.get("EASYNOTE_DATABASE_URL", "").startswith("mysql:"):
            wanted.append("EASYNOTE_DATABASE_PASSWORD_FILE")
        for var in wanted:
            path = env.get(var, "")
            source = mounts.get(os.path.dirname(path))
            if not path:
                errors.append(f"{where}: no {var}: its password would have to be committed")
            elif (source, os.path.basename(path)) not in generated:
                errors.append(f"{where}: {var}={path} is not generated by a dev-certs "
                              "one-shot (--secret) into a volume it mounts")
        if env.get("NACOS_USERNAME") is None:
            errors.append(f"{where}: no NACOS_USERNAME: it could not log in to Nacos")
        elif env.get("NACOS_USERNAME") == NACOS_ADMIN_USER:
            errors.append(f"{where}: logs in to Nacos as its admin ({NACOS_ADMIN_USER}): give "
                          "the services a user of their own that may only register, discover "
                          "and read configuration")
        check_compose_separation(where, env, mounts, generated, errors)
        depends = service.get("depends_on") or {}
        if not any(isinstance(depends, dict) and (depends.get(init) or {}).get("condition")
                   == "service_completed_successfully" for init in inits):
            errors.append(f"{where}: does not wait for the one-shot that sets Nacos's admin "
                          f"password ({', '.join(inits) or f'none calls {NACOS_ADMIN_API}'}): "
                          "its login would fail")


def dev_certs_outputs(compose):
    """{named volume: {file name: the dev-certs one-shot writing it}}: what
    each volume an `easy-note dev-certs` one-shot writes will hold, from its
    flags (--out, --split, --all-in-one, --jwt-secret, --secrets-out,
    --secret) and where it mounts the volumes."""
    services = compose.get("services") or {}
    named = compose.get("volumes") or {}
    found = {}
    for name, service in services.items():
        command = command_of(service)
        if command[:1] != ["dev-certs"]:
            continue
        out = flag_value(command, "--out", "certs")
        secrets_out = flag_value(command, "--secrets-out", out)
        split = "--split" in command
        writable = {target: source for source, target, ro in volume_mounts(service)
                    if not ro and source in named}

        def put(path, writer=name):
            source = writable.get(os.path.dirname(path))
            if source:
                found.setdefault(source, {})[os.path.basename(path)] = writer

        stems = [identity(role) for role in SUITE]
        if "--all-in-one" in command:
            stems.append(identity("all"))
        for stem in stems:
            directory = f"{out}/{stem}" if split else out
            for file in ("ca.pem", f"{stem}.pem", f"{stem}.key"):
                put(f"{directory}/{file}")
        if "--jwt-secret" in command:
            put(f"{out}/{identity('api-gateway')}/jwt-secret" if split else f"{out}/jwt-secret")
        for i, part in enumerate(command[:-1]):
            if part == "--secret":
                put(f"{secrets_out}/{command[i + 1]}")
    return found


def check_compose_separation(where, env, mounts, generated, errors):
    """A service can read only the generated files it uses."""
    used = {env.get(var) for var in TLS_VARS + ("EASYNOTE_JWT_SECRET_FILE",)}
    if env.get("EASYNOTE_DATABASE_URL", "").startswith("mysql:"):
        used.add(env.get("EASYNOTE_DATABASE_PASSWORD_FILE"))
    if env.get("EASYNOTE_REGISTRY") == "nacos":
        used.add(env.get("NACOS_PASSWORD_FILE"))
    for target, source in sorted(mounts.items()):
        for (volume, file), init in sorted(generated.items()):
            if volume == source and f"{target}/{file}" not in used:
                errors.append(f"{where}: can read {file} (volume {source}, written by {init}), "
                              "which it does not use: mount only its own keys and the "
                              "passwords it uses")


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
        listed = sorted(s for k, s in documented if k == key)
        if not listed:
            errors.append(f"{where}: {var['name']} comes from Secret {secret} key {key}, which "
                          f"the Secret tables of {' and '.join(SECRET_DOCS)} do not list")
            continue
        doc_secret = documented_secret(secret, {(key, s): n for (k, s), n in documented.items()
                                                if k == key})
        if doc_secret is None:
            errors.append(f"{where}: {key} comes from Secret {secret}, but the docs say "
                          f"{' or '.join(listed)}")
            continue
        need = documented[(key, doc_secret)]
        if need == "optional" and not optional:
            errors.append(f"{where}: {key} is optional in the docs but its secretKeyRef is "
                          "required: pods would not start without it (add optional: true)")
        if need == "required" and optional:
            errors.append(f"{where}: {key} is required in the docs but its secretKeyRef has "
                          "optional: true: a missing Secret would start a broken pod")


# ---------------------------------------------------------------- network policy

def selects(selector, labels):
    """Whether a label selector matches `labels` (an empty selector matches all)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if (op == "In" and labels.get(key) not in values) or \
                (op == "NotIn" and labels.get(key) in values) or \
                (op == "Exists" and key not in labels) or \
                (op == "DoesNotExist" and key in labels):
            return False
    return True


def edge_text(edge):
    source, target, port = edge
    who = "anyone" if source == "*" else source
    return f"{who} -> {target}:{port}"


def check_network_policies(overlay, docs, errors):
    """The connections the NetworkPolicies let reach the suite's pods are
    exactly the edges `easy-note deploy-facts` gives (each role's callers,
    on the port it serves), ports read from the Deployments."""
    workloads = {d["metadata"]["name"]: d["spec"]["template"] for d in docs
                 if d.get("kind") in WORKLOADS}
    suite = {name: workloads[name] for name in SUITE if name in workloads}
    ports = {name: {p.get("name"): p["containerPort"] for c in tmpl["spec"]["containers"]
                    for p in c.get("ports", [])} for name, tmpl in suite.items()}
    expected = {(source, target, ports[target].get(roles()[target]["serves"],
                                                   roles()[target]["serves"]))
                for target in suite for source in roles()[target]["callers"]}
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    actual = set()
    for target, tmpl in suite.items():
        labels = tmpl["metadata"].get("labels") or {}
        selecting = [p for p in policies
                     if "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"])
                     and selects(p["spec"].get("podSelector") or {}, labels)]
        if not selecting:
            errors.append(f"{overlay}: no NetworkPolicy selects {target}'s pods for ingress: "
                          "every pod in the cluster can connect to it")
            continue
        for policy in selecting:
            for rule in policy["spec"].get("ingress") or []:
                sources = set()
                for peer in rule.get("from") or [{}]:
                    if not peer:
                        sources.add("*")
                    elif "podSelector" in peer and "namespaceSelector" not in peer:
                        sources.update(name for name, other in workloads.items()
                                       if selects(peer["podSelector"],
                                                  other["metadata"].get("labels") or {}))
                    else:
                        sources.add("*")
                numbers = {ports[target].get(p.get("port"), p.get("port", "any port"))
                           for p in rule.get("ports") or [{}]}
                actual.update((source, target, number) for source in sources
                              for number in numbers)
    for edge in sorted(actual - expected, key=str):
        errors.append(f"{overlay}: the NetworkPolicies let {edge_text(edge)} through, which is "
                      f"not one of the allowed connections "
                      f"({', '.join(edge_text(e) for e in sorted(expected, key=str))})")
    for edge in sorted(expected - actual, key=str):
        errors.append(f"{overlay}: the NetworkPolicies do not let {edge_text(edge)} through: "
                      "the suite makes that call")


# ---------------------------------------------------------------- compose

def command_of(service):
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def volume_mounts(service):
    """(source, target, read_only) of each volume of a compose service."""
    found = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            found.append((volume.get("source"), volume.get("target"),
                          bool(volume.get("read_only"))))
        else:
            parts = str(volume).split(":")
            found.append((parts[0], parts[1] if len(parts) > 1 else parts[0],
                          len(parts) > 2 and "ro" in parts[2].split(",")))
    return found


def flag_value(command, flag, default=None):
    """The argument after `flag` in a command list, or `default`."""
    return command[command.index(flag) + 1] if flag in command[:-1] else default


def compose_environment(service):
    """(raw, resolved) environment of a compose service: `raw` as written,
    `resolved` with every `${VAR:-default}` replaced by its default (what a
    run without `.env` gets); unset entries dropped."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw if "=" in item)
    resolved = {k: re.sub(r"\$\{\w+(:?-([^}]*))?\}", lambda m: m.group(2) or "", str(v))
                for k, v in raw.items() if v is not None}
    return dict(raw), resolved


def check_compose_keys(where, role, raw_env, env, service, inits, errors):
    """The keys `dev-certs` made: mounted read-only, waited for, each
    service its own certificate; the gateway's JWT key from the volume."""
    mounts = [(source, target, ro) for source, target, ro in volume_mounts(service)
              if source in inits]
    if not mounts:
        errors.append(f"{where}: does not mount the volume the dev-certs service writes "
                      f"({', '.join(sorted(set(inits.values()))) or 'none'}): it would have no "
                      "certificates")
        return
    for source, target, read_only in mounts:
        if not read_only:
            errors.append(f"{where}: mounts {source} writable; mount the keys read-only (:ro)")
    depends = service.get("depends_on") if isinstance(service.get("depends_on"), dict) else {}
    for init in sorted({inits[source] for source, _, _ in mounts}):
        if (depends.get(init) or {}).get("condition") != "service_completed_successfully":
            errors.append(f"{where}: does not wait for {init} (depends_on: {init}: condition: "
                          "service_completed_successfully): it could start before its keys "
                          "exist")
    # The keys' volume: the one mounted where the certificate is.
    cert_dir = os.path.dirname(env.get("EASYNOTE_TLS_CERT", ""))
    source, target = next(((s, t) for s, t, _ in mounts if t == cert_dir),
                          (mounts[0][0], mounts[0][1]))
    name = identity(role)
    wanted = {"EASYNOTE_TLS_CERT": f"{name}.pem", "EASYNOTE_TLS_KEY": f"{name}.key",
              "EASYNOTE_TLS_CA": "ca.pem"}
    for var in TLS_VARS:
        path = env.get(var, "")
        if not path:
            errors.append(f"{where}: no {var}: internal gRPC would be plaintext (and refused "
                          "in production)")
        elif os.path.dirname(path) != target:
            errors.append(f"{where}: {var}={path} is not in the mounted {source} ({target})")
        elif os.path.basename(path) != wanted[var]:
            errors.append(f"{where}: {var}={path}: not its own certificate ({wanted[var]}, "
                          f"the name {name} its callers check)")
    for var, holders in ROLE_SECRETS.items():
        if env.get(var) and role not in holders:
            errors.append(f"{where}: has {var}, which only "
                          f"{', '.join(sorted(holders - {'all'}))} may hold")
    if role in ROLE_SECRETS["EASYNOTE_JWT_SECRET"]:
        raw = raw_env.get("EASYNOTE_JWT_SECRET")
        if raw is not None and not re.fullmatch(r"\$\{EASYNOTE_JWT_SECRET(:?-)?\}", str(raw)):
            errors.append(f"{where}: EASYNOTE_JWT_SECRET is {raw!r}: a committed key (or "
                          "default); pass it through from .env only (${EASYNOTE_JWT_SECRET:-}) "
                          "and read the generated one from EASYNOTE_JWT_SECRET_FILE")
        key_file = env.get("EASYNOTE_JWT_SECRET_FILE", "")
        if os.path.dirname(key_file) != target:
            errors.append(f"{where}: EASYNOTE_JWT_SECRET_FILE is {key_file!r}, not the key "
                          f"generated in the mounted {source} ({target}/jwt-secret)")


def check_compose(compose, inputs, errors):
    """The one-shot dev-certs service, Nacos's ports, then each of our services."""
    services = compose.get("services") or {}
    outputs = dev_certs_outputs(compose)
    inits = {}  # named volume -> the dev-certs service writing it
    for name, service in services.items():
        command = command_of(service)
        if command[:1] != ["dev-certs"]:
            continue
        where = f"{COMPOSE_FILE}: service {name}"
        for flag, why in (("--if-missing", "a later `up` would fail on the existing set"),
                          ("--jwt-secret", "the gateway would have no generated JWT key")):
            if flag not in command:
                errors.append(f"{where}: `easy-note {' '.join(command)}` lacks {flag}: {why}")
        out = flag_value(command, "--out")
        written = [source for source, files in outputs.items() if name in files.values()]
        if not written:
            errors.append(f"{where}: writes {out}, which is not a writable named volume: the "
                          "services would not see the keys")
        for source in written:
            inits[source] = name
    for name in COMPOSE_LOOPBACK_ONLY:
        for port in (services.get(name) or {}).get("ports") or []:
            host_ip = port.get("host_ip") if isinstance(port, dict) else \
                (str(port).split(":")[0] if str(port).count(":") == 2 else None)
            if host_ip != "127.0.0.1":
                errors.append(f"{COMPOSE_FILE}: service {name} publishes {port!r} beyond this "
                              "machine; bind it to 127.0.0.1")
    for name, service in services.items():
        if command_of(service)[:1] == ["dev-certs"]:
            continue
        raw_env, env = compose_environment(service)
        if "EASYNOTE_SERVICE" not in raw_env and not str(service.get("image", "")).startswith(
                "easy-note"):
            continue
        where = f"{COMPOSE_FILE}: service {name}"
        env = {k: v for k, v in env.items() if v}
        if service.get("command") or service.get("entrypoint"):
            errors.append(f"{where}: picks its role with command/entrypoint; set "
                          "EASYNOTE_SERVICE instead, which `easy-note healthcheck` reads too")
        if env.get("EASYNOTE_SERVICE") not in roles():
            errors.append(f"{where}: EASYNOTE_SERVICE is {env.get('EASYNOTE_SERVICE')!r}")
        health = service.get("healthcheck") or {}
        if health.get("test") != ["CMD", *HEALTHCHECK_COMMAND]:
            errors.append(f"{where}: healthcheck is {health.get('test')}; use "
                          "[\"CMD\", \"easy-note\", \"healthcheck\"] (it probes EASYNOTE_SERVICE)")
        role = env.get("EASYNOTE_SERVICE")
        check_compose_keys(where, role, raw_env, env, service, inits, errors)
        try:
            have = (seconds(health.get("start_period", "0s"), "start_period")
                    + seconds(health.get("interval", "30s"), "interval")
                    * int(health.get("retries", 3)))
            need, why = startup_required(env)
            if have < need:
                errors.append(f"{where}: healthcheck turns unhealthy after {fmt(have)} "
                              f"(start_period + retries x interval) but start-up may take "
                              f"{fmt(need)} ({why})")
            timeout = seconds(health.get("timeout", "30s"), "timeout")
            if inputs.probe_bound is not None and timeout <= inputs.probe_bound:
                errors.append(f"{where}: healthcheck timeout is {fmt(timeout)}, but `easy-note "
                              f"healthcheck` may take {fmt(inputs.probe_bound)} (its bound) plus "
                              "its own start")
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
        for (var, secret), need in rows.items():
            if (var, secret) in inputs.secrets and inputs.secrets[(var, secret)] != need:
                errors.append(f"{path}: Secret table says {var or 'the files'} in {secret} is "
                              f"{need}, another document says {inputs.secrets[(var, secret)]}")
            inputs.secrets.setdefault((var, secret), need)
    for path, rows in tables.items():
        for var, secret in sorted(set(inputs.secrets) - set(rows), key=str):
            errors.append(f"{path}: its Secret table lacks {var or 'the files'} in {secret}, "
                          "which another document lists")
    for name, docs in inputs.overlays.items():
        check_overlay(name, docs, inputs, errors)
    check_compose(inputs.compose, inputs, errors)
    check_compose_secrets(inputs.compose, errors)
    check_compose_restarts(inputs.compose, errors)
    check_writable_mounts(inputs.compose, inputs.dockerfile, errors)
    for name, service in (inputs.compose.get("services") or {}).items():
        check_jaeger_memory(f"{COMPOSE_FILE}: service {name}",
                            [{"image": service.get("image"),
                              "env": compose_environment(service)[1]}], errors)
    return errors


def check_writable_mounts(compose, dockerfile, errors):
    """Every named volume a dev-certs one-shot writes is mounted on a
    directory the image makes for its runtime user: an empty volume takes
    the owner of the directory it is mounted on, and root's where the image
    has none, which the one-shot (uid 10001) cannot write into."""
    runtime = dockerfile[dockerfile.rfind("AS runtime"):]
    made = set()
    for run in re.findall(r"mkdir -p((?:\\\n|[^&\n])+)", runtime):
        made.update(part for part in run.replace("\\\n", " ").split() if part.startswith("/"))
    named = compose.get("volumes") or {}
    for name, service in (compose.get("services") or {}).items():
        if command_of(service)[:1] != ["dev-certs"]:
            continue
        for source, target, ro in volume_mounts(service):
            if source in named and not ro and target not in made:
                errors.append(f"{COMPOSE_FILE}: service {name} writes into volume {source} at {target}, "
                              f"which {DOCKERFILE} does not make (mkdir -p, owned by the runtime user): "
                              "the empty volume would be root's and the one-shot could not write")


def check_compose_restarts(compose, errors):
    """Long-running services come back after a crash or an engine restart
    (`restart: unless-stopped`); one-shots, which others wait for with
    `service_completed_successfully`, run once and are not restarted."""
    services = compose.get("services") or {}
    one_shots = {dep for service in services.values()
                 if isinstance(service.get("depends_on"), dict)
                 for dep, cond in service["depends_on"].items()
                 if (cond or {}).get("condition") == "service_completed_successfully"}
    for name, service in services.items():
        where = f"{COMPOSE_FILE}: service {name}"
        restart = service.get("restart", "no")
        # An unquoted `restart: no` is YAML 1.1's false to PyYAML; compose reads "no".
        restart = "no" if restart is False else str(restart)
        if name in one_shots and restart != "no":
            errors.append(f"{where} is a one-shot others wait for, but restart: {restart} "
                          "would run it again and again")
        elif name not in one_shots and restart not in COMPOSE_RESTART:
            errors.append(f"{where} has restart: {restart}: after a crash or an engine restart "
                          "it stays down (use unless-stopped)")


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
         lambda d: set_config(d, "OTEL_EXPORTER_OTLP_TIMEOUT", "30000"),
         "telemetry flush (OTEL_EXPORTER_OTLP_TIMEOUT) 30s"),
        ("a drain bound the service would refuse", "local",
         lambda d: set_config(d, "EASYNOTE_SHUTDOWN_TIMEOUT", "soon"),
         'EASYNOTE_SHUTDOWN_TIMEOUT: "soon" is not a duration'),
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
        # Network policy: exactly the allowed edges.
        ("note-service open to anyone", "local",
         lambda d: find(d, "NetworkPolicy", "note-service-ingress")["spec"]["ingress"][0].pop(
             "from"), "let anyone -> note-service:8888 through"),
        ("user-service selected by no policy", "aliyun",
         lambda d: (d.remove(find(d, "NetworkPolicy", "user-service-ingress")),
                    find(d, "NetworkPolicy", "easy-note-default-deny")["spec"]["podSelector"][
                        "matchExpressions"][0]["values"].remove("user-service")),
         "no NetworkPolicy selects user-service"),
        ("the gateway reaches note-service on every port", "local",
         lambda d: find(d, "NetworkPolicy", "note-service-ingress")["spec"]["ingress"][0].pop(
             "ports"), "api-gateway -> note-service:any port"),
        ("note-service can no longer call user-service", "aliyun",
         lambda d: find(d, "NetworkPolicy", "user-service-ingress")["spec"]["ingress"][0][
             "from"].pop(1), "do not let note-service -> user-service:8889"),
        ("every pod of the namespace may call user-service", "local",
         lambda d: find(d, "NetworkPolicy", "user-service-ingress")["spec"]["ingress"][0][
             "from"].append({"podSelector": {}}), "let mysql -> user-service:8889"),
        # Secrets: each Deployment its own, and only what its role needs.
        ("the gateway reads the database URL", "aliyun",
         lambda d: container(d, "api-gateway")["env"].append(
             {"name": "EASYNOTE_DATABASE_URL", "valueFrom": {"secretKeyRef": {
                 "name": "user-service-db", "key": "EASYNOTE_DATABASE_URL"}}}),
         "reads EASYNOTE_DATABASE_URL"),
        ("note-service reads the JWT key", "local",
         lambda d: container(d, "note-service")["env"].append(
             {"name": "EASYNOTE_JWT_SECRET", "valueFrom": {"secretKeyRef": {
                 "name": "api-gateway-jwt", "key": "EASYNOTE_JWT_SECRET"}}}),
         "reads EASYNOTE_JWT_SECRET"),
        ("two Deployments share a database Secret", "aliyun",
         lambda d: env_var(container(d, "note-service"), "EASYNOTE_DATABASE_URL")["valueFrom"][
             "secretKeyRef"].update(name="user-service-db"),
         "Secret user-service-db is read by note-service, user-service"),
        ("the gateway mounts user-service's certificate", "local",
         lambda d: next(v for v in find(d, "Deployment", "api-gateway")["spec"]["template"][
             "spec"]["volumes"] if v["name"] == "tls")["secret"].update(
                 secretName="user-service-tls"),
         "Secret user-service-tls is read by api-gateway, user-service"),
        ("a mounted Secret nobody documented", "aliyun",
         lambda d: next(v for v in find(d, "Deployment", "note-service")["spec"]["template"][
             "spec"]["volumes"] if v["name"] == "tls")["secret"].update(
                 secretName="undocumented-tls"),
         "Secret undocumented-tls is mounted"),
        # Mutual TLS and the probes that go with it.
        ("user-service without its TLS key", "local",
         lambda d: container(d, "user-service")["env"].remove(
             env_var(container(d, "user-service"), "EASYNOTE_TLS_KEY")),
         "no EASYNOTE_TLS_KEY"),
        ("note-service's certificate outside the mounted Secret", "aliyun",
         lambda d: env_var(container(d, "note-service"), "EASYNOTE_TLS_CERT").update(
             value="/tmp/tls.crt"), "EASYNOTE_TLS_CERT=/tmp/tls.crt is not in a mounted Secret"),
        ("user-service's readiness back to the kubelet's gRPC probe", "local",
         lambda d: container(d, "user-service").update(readinessProbe={
             "grpc": {"port": 8889}, "periodSeconds": 5, "timeoutSeconds": 2}),
         "readinessProbe is a grpc probe"),
        # Nacos where the overlay runs it: auth on, an admin, our logins.
        ("the local Nacos with auth off", "local",
         lambda d: env_var(container(d, "nacos"), "NACOS_AUTH_ENABLE").update(value="false"),
         "Nacos auth is off"),
        ("the local Nacos without its admin", "local",
         lambda d: container(d, "nacos").pop("lifecycle"), "no postStart hook sets the admin"),
        ("the local Nacos grants the services' user nothing", "local",
         lambda d: container(d, "nacos")["lifecycle"]["postStart"]["exec"].update(
             command=["sh", "-c", "curl -X POST http://127.0.0.1:8848/nacos/v1/auth/users/admin"]),
         "grants no role"),
        ("the services log in with the local Nacos admin's password", "local",
         lambda d: env_var(container(d, "note-service"), "NACOS_PASSWORD")["valueFrom"][
             "secretKeyRef"].update(name="nacos-admin"),
         "logs in to Nacos with the admin's password"),
        ("user-service without its Nacos password", "local",
         lambda d: container(d, "user-service")["env"].remove(
             env_var(container(d, "user-service"), "NACOS_PASSWORD")), "no NACOS_PASSWORD"),
        ("the gateway's liveness asks the downstream services", "local",
         lambda d: container(d, "api-gateway")["livenessProbe"]["httpGet"].update(path="/readyz"),
         "livenessProbe asks /readyz"),
        ("note-service's liveness asks the database", "aliyun",
         lambda d: container(d, "note-service")["livenessProbe"]["exec"].update(
             command=["easy-note", "healthcheck"]),
         "liveness never asks the database"),
        ("note-service's liveness gives up before the health check does", "aliyun",
         lambda d: container(d, "note-service")["livenessProbe"].update(timeoutSeconds=3),
         "livenessProbe timeoutSeconds is 3s"),
        # Scaling, pulling and Jaeger's store.
        ("the gateway's replicas set beside its HPA", "aliyun",
         lambda d: find(d, "Deployment", "api-gateway")["spec"].update(replicas=2),
         "beside its HorizontalPodAutoscaler"),
        ("the gateway's CPU request too small for its HPA", "local",
         lambda d: container(d, "api-gateway")["resources"]["requests"].update(cpu="50m"),
         "the HPA flaps"),
        ("pods name their own pull Secret", "aliyun",
         lambda d: find(d, "Deployment", "note-service")["spec"]["template"]["spec"].update(
             imagePullSecrets=[{"name": "acr-pull"}]),
         "attach a pull Secret to the ServiceAccount"),
        ("the local Jaeger keeps every trace", "local",
         lambda d: container(d, "jaeger")["env"].remove(
             env_var(container(d, "jaeger"), "MEMORY_MAX_TRACES")),
         "keeps every trace in memory"),
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
        ("compose gateway with a committed JWT key",
         lambda c: svc(c, "api-gateway")["environment"].update(
             EASYNOTE_JWT_SECRET="${EASYNOTE_JWT_SECRET:-a-key-written-into-the-file-0123456789}"),
         "a committed key"),
        ("compose gateway without the generated JWT key",
         lambda c: svc(c, "api-gateway")["environment"].pop("EASYNOTE_JWT_SECRET_FILE"),
         "EASYNOTE_JWT_SECRET_FILE is ''"),
        ("compose user-service without the certificates",
         lambda c: svc(c, "user-service").pop("volumes"), "does not mount the volume"),
        ("compose note-service mounts the keys writable",
         lambda c: svc(c, "note-service").update(volumes=[
             "certs-note:/app/certs", *svc(c, "note-service")["volumes"][1:]]),
         "mount the keys read-only"),
        ("compose gateway can read the database password",
         lambda c: svc(c, "api-gateway")["volumes"].append("secrets-db:/app/secrets/db:ro"),
         "can read mysql-password (volume secrets-db"),
        ("compose gateway can read Nacos's server secrets",
         lambda c: svc(c, "api-gateway")["volumes"].append("secrets-nacos:/app/secrets/nacos:ro"),
         "can read nacos-token (volume secrets-nacos"),
        ("compose user-service can read another service's key",
         lambda c: svc(c, "user-service")["volumes"].append("certs-note:/app/other:ro"),
         "can read easy-note-note.key"),
        ("compose services log in to Nacos as its admin",
         lambda c: svc(c, "note-service")["environment"].update(NACOS_USERNAME="nacos"),
         "logs in to Nacos as its admin"),
        ("compose note-service with user-service's certificate",
         lambda c: svc(c, "note-service")["environment"].update(
             EASYNOTE_TLS_CERT="/app/certs/easy-note-user.pem"), "not its own certificate"),
        ("compose gateway without mutual TLS",
         lambda c: svc(c, "api-gateway")["environment"].pop("EASYNOTE_TLS_CA"),
         "no EASYNOTE_TLS_CA"),
        ("compose gateway starts before the keys exist",
         lambda c: svc(c, "api-gateway")["depends_on"].pop("certs"), "does not wait for certs"),
        ("compose gateway with the database URL",
         lambda c: svc(c, "api-gateway")["environment"].update(
             EASYNOTE_DATABASE_URL="mysql://easynote:x@mysql:3306/easynote"),
         "has EASYNOTE_DATABASE_URL"),
        ("compose dev-certs without --if-missing",
         lambda c: svc(c, "certs")["command"].remove("--if-missing"), "lacks --if-missing"),
        ("compose Nacos console on every interface",
         lambda c: svc(c, "nacos").update(ports=["8848:8848", "127.0.0.1:9848:9848"]),
         "publishes '8848:8848' beyond this machine"),
        ("compose Nacos gRPC on every interface",
         lambda c: svc(c, "nacos").update(ports=["127.0.0.1:8848:8848", "9848:9848"]),
         "publishes '9848:9848' beyond this machine"),
        ("compose Nacos with auth off",
         lambda c: svc(c, "nacos")["environment"].update(
             NACOS_AUTH_ENABLE="${NACOS_AUTH_ENABLE:-false}"), "Nacos auth is off"),
        ("compose Nacos with a committed token",
         lambda c: svc(c, "nacos")["environment"].update(
             NACOS_AUTH_TOKEN="${NACOS_AUTH_TOKEN:-ZWFzeS1ub3RlLWRlbW8tdG9rZW4tc2VjcmV0}"),
         "NACOS_AUTH_TOKEN is a committed secret"),
        ("compose MySQL with a committed password",
         lambda c: svc(c, "mysql")["environment"].update(MYSQL_PASSWORD="easynote-demo"),
         "MYSQL_PASSWORD is a committed secret"),
        ("compose database URL with its password",
         lambda c: svc(c, "note-service")["environment"].update(
             EASYNOTE_DATABASE_URL="mysql://easynote:easynote-demo@mysql:3306/easynote"),
         "holds a password in its URL"),
        ("compose Nacos password no longer generated",
         lambda c: svc(c, "certs").update(command=[
             part for part in svc(c, "certs")["command"]
             if part != "registry/nacos-service-password"]),
         "NACOS_PASSWORD_FILE=/app/secrets/registry/nacos-service-password is not generated"),
        ("compose user-service without its database password file",
         lambda c: svc(c, "user-service")["environment"].pop("EASYNOTE_DATABASE_PASSWORD_FILE"),
         "no EASYNOTE_DATABASE_PASSWORD_FILE"),
        ("compose gateway no longer waits for Nacos's admin",
         lambda c: svc(c, "api-gateway")["depends_on"].pop("nacos-init"),
         "does not wait for the one-shot that sets Nacos's admin"),
        ("compose health check timeout within the check's own bound",
         lambda c: svc(c, "note-service").update(healthcheck={
             **svc(c, "note-service")["healthcheck"], "timeout": "3s"}),
         "healthcheck timeout is 3s"),
        ("compose note-service with no restart policy",
         lambda c: svc(c, "note-service").pop("restart"), "stays down"),
        ("compose restarts the certs one-shot",
         lambda c: svc(c, "certs").update(restart="unless-stopped"), "run it again and again"),
        ("compose Jaeger keeps every trace",
         lambda c: svc(c, "jaeger")["environment"].pop("MEMORY_MAX_TRACES"),
         "keeps every trace in memory"),
        ("compose Jaeger bounded by zero",
         lambda c: svc(c, "jaeger")["environment"].update(MEMORY_MAX_TRACES="0"),
         "MEMORY_MAX_TRACES (is 0)"),
    ]


def doc_mutations():
    return [
        ("the Secret table marks an optional Secret required",
         lambda docs: docs.update({SECRET_DOCS[0]: docs[SECRET_DOCS[0]].replace(
             "| `NACOS_ACCESS_KEY` | `easy-note-mse` | optional",
             "| `NACOS_ACCESS_KEY` | `easy-note-mse` | required")}),
         "is required in the docs but its secretKeyRef has optional: true"),
        ("a Secret the table forgets",
         lambda docs: docs.update({SECRET_DOCS[0]: re.sub(
             r"\| `NACOS_SIGN_REGION_ID` \| `easy-note-mse` [^\n]*\n", "",
             docs[SECRET_DOCS[0]])}),
         "do not list"),
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
    cases.append(("the image no longer makes a mount point the certs one-shot writes into",
                  lambda i: setattr(i, "dockerfile", i.dockerfile.replace(" /app/secrets/db ", " ")),
                  "does not make"))
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
    print(f"manifests: probes, start-up and shutdown budgets, ALB Service type, Secrets, "
          f"mutual TLS, network policy, autoscaling, pull secrets, restarts, the image's volume mount points and Jaeger's bound "
          f"agree ({', '.join(inputs.overlays)} and {COMPOSE_FILE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
