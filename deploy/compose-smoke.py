"""Compose smoke test, without a Docker engine.

Reads docker-compose.yml and starts the same services natively, each with
the environment its container gets, on the release binaries the Dockerfile
builds (`cargo build --release --locked --workspace`). The infrastructure
containers are replaced by real local stand-ins:

    mysql           -> the local MariaDB (database and user created as the compose file says,
                       with the password `certs` generated)
    nacos           -> rnacos as the tests start it (testkit's rnacos-fixture: ports p, p + 1000),
                       with auth on as in compose, its admin the services' login
    nacos-init      -> its script, run here with sh and curl against rnacos, which has no
                       admin-creation API and no users, roles or permissions (no RBAC):
                       NACOS_INIT_STANDIN=rnacos makes the script skip to its check that
                       the services' login works, so the least-privilege grants themselves
                       are not exercised here
    otel-collector  -> an OTLP/gRPC receiver on a port of its own (testkit/src/bin/otlp-receiver.rs)

Jaeger, Prometheus and Grafana sit behind the collector and are not
started: what reaches the collector is checked instead.

One-shot services that run `easy-note dev-certs` (the `certs` service,
which makes the development CA, each service's certificate, the JWT key
and the MySQL and Nacos passwords on the first `up`) run first, natively,
with their named volumes replaced by directories of this run; every
container path under a mount of such a volume, in the services' settings,
becomes the same path in that directory. So the services talk mutual TLS
with each other, the gateway signs with the generated key, and MySQL and
Nacos take the generated passwords, as in compose.

Container networking maps to loopback: every `service:port` in a setting
becomes 127.0.0.1 and the port that service's stand-in listens on here, and
`0.0.0.0` binds become 127.0.0.1 binds. Ports that compose publishes (the
gateway's 8080, which the README's walkthrough calls) stay as they are;
the others are container-internal, so here the services bind port 0 and
report what they bound (EASYNOTE_ADDR_FILE), and both note-service
replicas get ports of their own. Each service's role comes from its
`command:` or, without one, from EASYNOTE_SERVICE, as in the image.

Then it runs the README's curl walkthrough as written and checks what
compose promises: both replicas registered, a clean stop on SIGTERM in
compose's order (the gateway, then note-service, then user-service), and,
from the spans every process flushed as it stopped: at least one trace
through the gateway, note-service and user-service, every hop carrying its
trace (a server span of note-service and of user-service in the gateway's
traces, and of user-service in note-service's), no server span whose
parent is missing, and no span of note- or user-service that starts a
trace of its own. The metrics every process flushed are handed to
deploy/check-observability.py --emitted: every query of the Grafana
dashboard must read metrics and labels the services really export, as
Prometheus names them.
Settings the compose file gives the services but the README does not
document fail the test, as do services that do not come up with them.

usage: scripts/py deploy/compose-smoke.py   (from anywhere; needs the release build)
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

import yaml

import suite  # scripts/suite.py (on PYTHONPATH through scripts/py)

ROOT = suite.ROOT
OURS = ("user-service", "note-service", "api-gateway")  # depends_on order
INFRA = ("mysql", "nacos", "otel-collector")
MYSQL_ADMIN = "mysql://root@127.0.0.1:3306/"
GATEWAY, NOTE, USER = "easy-note-gateway", "easy-note-note", "easy-note-user"
# A gRPC method is served by the service whose package it names.
RPC_PACKAGE = {NOTE: "easynote.note.", USER: "easynote.user."}
HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")
SPAN_KIND_SERVER = 2  # OTLP
TRACES_WITHIN = 15  # seconds, after the services have stopped (and so flushed)
# The RED instruments each service records (shared/src/telemetry/metrics.rs).
RED_METRICS = {(GATEWAY, "http.server.request.duration"), (GATEWAY, "rpc.client.call.duration"),
               (NOTE, "rpc.server.call.duration"), (NOTE, "rpc.client.call.duration"),
               (USER, "rpc.server.call.duration")}


class SmokeFailure(Exception):
    """A promise of the compose file that the native run did not keep."""


def interpolate(value, env):
    """Compose's `${VAR:-default}` and `${VAR}` substitution."""
    def sub(match):
        name, default = match.group(1), match.group(3) or ""
        return env.get(name) or default
    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", sub, str(value))


def to_loopback(value, hosts, moved):
    """Container networking on one machine: `service:port` becomes the
    address its stand-in listens on here (`moved`), or 127.0.0.1:port;
    other mentions of a service name, and 0.0.0.0, become 127.0.0.1."""
    def sub(match):
        return moved.get((match.group(1), int(match.group(2))), f"127.0.0.1:{match.group(2)}")
    names = "|".join(re.escape(host) for host in hosts)
    value = re.sub(rf"(?<![\w.-])({names}):(\d+)", sub, value)
    for host in hosts:
        value = re.sub(rf"(?<=[@/]){re.escape(host)}(?=/)", "127.0.0.1", value)
    return value.replace("0.0.0.0", "127.0.0.1")


def published_ports(spec):
    """The container ports a compose service publishes."""
    ports = set()
    for entry in spec.get("ports") or []:
        target = entry.get("target") if isinstance(entry, dict) else str(entry).split("/")[0].rsplit(":", 1)[-1]
        ports.add(int(target))
    return ports


def role_of(name, spec, env):
    """(role, arguments): the `command:` of the service, or its
    EASYNOTE_SERVICE when it has none (the image's entrypoint is easy-note)."""
    command = spec.get("command") or []
    if isinstance(command, str):
        command = shlex.split(command)
    role = command[0] if command else env.get("EASYNOTE_SERVICE")
    if role not in suite.LISTEN_VARS:
        raise SmokeFailure(f"{name}: neither command: nor EASYNOTE_SERVICE names a role ({role!r})")
    return role, [str(part) for part in command]


def volume_mounts(spec):
    """(source, target) of each volume of a compose service."""
    mounts = []
    for volume in spec.get("volumes") or []:
        if isinstance(volume, dict):
            mounts.append((volume.get("source"), volume.get("target")))
        else:
            parts = str(volume).split(":")
            mounts.append((parts[0], parts[1] if len(parts) > 1 else parts[0]))
    return mounts


def run_init_steps(services, workdir):
    """Runs each `easy-note dev-certs` one-shot service natively; returns
    {named volume: the directory standing in for it}."""
    volumes = {}
    for name, spec in services.items():
        command = spec.get("command") or []
        command = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
        if command[:1] != ["dev-certs"]:
            continue
        args = list(command)
        mounts = volume_mounts(spec)
        for source, target in mounts:
            directory = volumes.setdefault(source, os.path.join(workdir, f"volume-{source}"))
            os.makedirs(directory, mode=0o700, exist_ok=True)
        args = [init_path(arg, mounts, volumes, os.path.join(workdir, f"init-{name}"))
                for arg in args]
        result = subprocess.run([suite.EASY_NOTE, *args], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise SmokeFailure(f"{name}: easy-note {' '.join(args)} failed ({result.returncode}):\n"
                               f"{result.stdout}{result.stderr}")
        print(f"{name} -> easy-note {' '.join(args)}")
    return volumes


def init_path(arg, mounts, volumes, standin):
    """A container path of a one-shot's argument as the path here: under a
    mount, in that volume's directory; above mounts (`--out /app/certs`
    with volumes on /app/certs/<name>), a directory of this run whose
    entries are links to those volumes' directories."""
    for source, target in mounts:
        if arg == target or arg.startswith(target + "/"):
            return volumes[source] + arg[len(target):]
    below = [(source, target) for source, target in mounts if target.startswith(arg + "/")]
    if not arg.startswith("/") or not below:
        return arg
    here = standin + arg
    for source, target in below:
        link = os.path.join(here, os.path.relpath(target, arg))
        os.makedirs(os.path.dirname(link), mode=0o700, exist_ok=True)
        if not os.path.islink(link):
            os.symlink(volumes[source], link)
    return here


def container_env(spec, outer, volumes, read_files=True):
    """A compose service's environment as its container sees it: `.env`
    interpolated, init-volume paths made paths here, and (`read_files`)
    the `*_FILE` convention of the official images applied: VAR_FILE naming
    a file of an init volume gives VAR its content."""
    env = {k: to_volume_dirs(interpolate(v, outer), spec, volumes)
           for k, v in (spec.get("environment") or {}).items()}
    if not read_files:
        return env
    for var, path in list(env.items()):
        if var.endswith("_FILE") and var[:-5] not in env and os.path.isfile(path):
            with open(path, encoding="utf-8") as secret:
                env[var[:-5]] = secret.read().rstrip()
    return env


def run_shell_inits(services, volumes, moved):
    """Runs each one-shot `sh -c` service (an entrypoint of sh -c and its
    script, as nacos-init is) natively, with its init volumes and the
    stand-ins' addresses put in; it must exit 0."""
    for name, spec in services.items():
        entrypoint = spec.get("entrypoint") or []
        command = spec.get("command") or []
        if [str(p) for p in entrypoint] != ["sh", "-c"] or not command:
            continue
        script = str(command[0] if isinstance(command, list) else command).replace("$$", "$")
        for source, target in volume_mounts(spec):
            if source in volumes:
                script = script.replace(target + "/", volumes[source] + "/")
        for (host, port), here in moved.items():
            script = script.replace(f"//{host}:{port}/", f"//{here}/")
        result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60,
                                env={**os.environ, "NACOS_INIT_STANDIN": "rnacos"})
        if result.returncode != 0:
            raise SmokeFailure(f"{name}: its script failed ({result.returncode}):\n"
                               f"{result.stdout}{result.stderr}")
        print(f"{name} -> {(result.stdout.strip().splitlines() or ['exit 0'])[-1]}")


def to_volume_dirs(value, spec, volumes):
    """A container path under a mount of an init volume, as the path here."""
    for source, target in volume_mounts(spec):
        if source in volumes and (value == target or value.startswith(target + "/")):
            return volumes[source] + value[len(target):]
    return value


def readme_variables():
    """The variables the README and the reference pages under docs/ name."""
    pages = [os.path.join(ROOT, "README.md")] + sorted(
        os.path.join(ROOT, "docs", name) for name in os.listdir(os.path.join(ROOT, "docs")) if name.endswith(".md"))
    text = "\n".join(open(page, encoding="utf-8").read() for page in pages)
    return set(re.findall(r"`((?:EASYNOTE|NACOS|OTEL|RUST)_?[A-Z0-9_]*)`", text))


def seconds(duration, default):
    """Compose durations as used here: `40s`, `2m`."""
    match = re.fullmatch(r"(\d+)(s|m)", str(duration or ""))
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1) if match else default


def main():
    compose = yaml.safe_load(open(os.path.join(ROOT, "docker-compose.yml"), encoding="utf-8"))
    services = compose["services"]
    missing = [s for s in OURS + INFRA if s not in services]
    if missing:
        sys.exit(f"FAILED: docker-compose.yml lacks {missing}")
    group = suite.Group(tempfile.mkdtemp(prefix="compose-smoke-"))
    try:
        run(services, group)
    except (SmokeFailure, suite.Failure) as failure:
        print(group.logs(), file=sys.stderr)
        group.stop_all(timeout=10)
        sys.exit(f"FAILED: {failure.summary if isinstance(failure, suite.Failure) else failure}")
    except BaseException:
        group.stop_all(timeout=10)
        raise
    group.stop_all()
    shutil.rmtree(group.workdir, ignore_errors=True)
    print("compose: 1 passed, 0 failed")


def run(services, group):
    """Starts the stand-ins and the services, then checks the promises."""
    outer = dict(os.environ)
    path = {"PATH": outer.get("PATH", "")}

    # --- one-shot dev-certs services first: the stand-ins need their secrets
    volumes = run_init_steps(services, group.workdir)

    # --- stand-ins -------------------------------------------------------
    mysql_env = container_env(services["mysql"], outer, volumes)
    db, user, password = mysql_env["MYSQL_DATABASE"], mysql_env["MYSQL_USER"], mysql_env["MYSQL_PASSWORD"]
    suite.recreate_database(MYSQL_ADMIN, db, charset="utf8mb4 COLLATE utf8mb4_unicode_ci")
    suite.mysql(MYSQL_ADMIN, "".join(
        f"CREATE USER IF NOT EXISTS '{user}'@'{host}' IDENTIFIED BY '{password}';"
        f"ALTER USER '{user}'@'{host}' IDENTIFIED BY '{password}';"
        f"GRANT ALL ON `{db}`.* TO '{user}'@'{host}';" for host in ("localhost", "127.0.0.1")))
    print(f"mysql  -> local MariaDB, database {db!r} for user {user!r}")

    # Nacos with auth on: rnacos with its open API and gRPC behind a login,
    # its admin the user and password our services log in with (as
    # nacos-init makes them; rnacos creates its admin itself).
    nacos_env = container_env(services["nacos"], outer, volumes)
    nacos_auth = None
    if nacos_env.get("NACOS_AUTH_ENABLE", "false").lower() == "true":
        login = container_env(services[OURS[0]], outer, volumes)
        nacos_auth = (login["NACOS_USERNAME"], login["NACOS_PASSWORD"])
    _, nacos_port = suite.start_rnacos(group, "nacos", auth=nacos_auth)
    print(f"nacos  -> rnacos on {nacos_port}/{nacos_port + 1000}"
          + (f", auth on, admin {nacos_auth[0]!r}" if nacos_auth else ", auth off"))

    if not os.path.exists(suite.OTLP_RECEIVER):
        raise SmokeFailure("build the receiver first: cargo build --release --locked --workspace")
    receiver = group.spawn("otel-collector", [suite.OTLP_RECEIVER, "127.0.0.1:0"], path)
    otlp = suite.printed_addr(group, receiver, r"listening on (\S+)")
    print(f"otel-collector -> OTLP receiver on {otlp}")

    moved = {("nacos", 8848): f"127.0.0.1:{nacos_port}", ("nacos", 9848): f"127.0.0.1:{nacos_port + 1000}",
             ("otel-collector", 4317): otlp}

    # --- the one-shot that sets Nacos's admin, as written (sh and curl)
    run_shell_inits(services, volumes, moved)

    # --- the services, in depends_on order, with their container env -----
    documented = readme_variables()
    started = {}  # compose service -> its children (replicas)
    for name in OURS:
        spec = services[name]
        # Volume paths first: a path such as /app/certs/... must not be read
        # as a mention of the service `certs`.
        # Our services read their *_FILE settings themselves.
        env = {k: to_loopback(v, list(services), moved)
               for k, v in container_env(spec, outer, volumes, read_files=False).items()}
        undocumented = sorted(k for k in env if k not in documented)
        if undocumented:
            raise SmokeFailure(f"{name}: docker-compose.yml sets {undocumented}, which neither README.md nor docs/ documents")
        role, args = role_of(name, spec, env)
        for var in suite.LISTEN_VARS[role].values():
            if var in env:
                host, port = env[var].rsplit(":", 1)
                if int(port) not in published_ports(spec):
                    env[var] = f"{host}:0"
        test = spec["healthcheck"]["test"]
        if test[0] != "CMD":
            raise SmokeFailure(f"{name}: the health check is not a CMD list: {test}")
        probe = [os.path.join(suite.RELEASE, part) if part == "easy-note" else part for part in test[1:]]
        replicas = int((spec.get("deploy") or {}).get("replicas", 1))
        started[name] = []
        for replica in range(replicas):
            label = name if replicas == 1 else f"{name}-{replica + 1}"
            child, addrs = suite.start_service(group, label, role, dict(env, **path), args=args, probe=probe,
                                                interval=0.2)
            started[name].append(child)
            print(f"{label}: healthy ({' '.join(test[1:])}) on {', '.join(addrs.values())}")

    # --- what compose promises ------------------------------------------
    notes = int((services["note-service"].get("deploy") or {}).get("replicas", 1))
    token = suite.nacos_login(nacos_port, *nacos_auth) if nacos_auth else None
    group.wait_for(f"{notes} note-service instances in the registry",
                   lambda: len(suite.nacos_instances(nacos_port, "easy-note-note", token)) == notes, 30)
    print(f"registry: {notes} note-service instances")

    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "run-doc.py"), "README.md",
                             "--skip-background"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    print(result.stdout[-1500:])
    if result.returncode != 0:
        print(result.stderr[-3000:], file=sys.stderr)
        raise SmokeFailure("the README walkthrough failed against the compose services")

    # `docker compose down`: dependents first, each within its
    # stop_grace_period. Stopping flushes every process's telemetry.
    for name in reversed(OURS):
        grace = seconds(services[name].get("stop_grace_period"), 10)
        for child, code in suite.stop_all(started[name], timeout=grace):
            if code != 0:
                raise SmokeFailure(f"{child.name} exited {code} on SIGTERM"
                                   + (f" (killed after {grace}s)" if child.killed else ""))
    print("stop: every service exited 0 on SIGTERM")

    def received(key):
        """The receiver's JSON lines that carry `key` (spans: trace_id; metrics: metric)."""
        lines = [json.loads(line) for line in receiver.output().splitlines() if line.startswith("{")]
        return [line for line in lines if key in line]

    def verdict():
        return check_traces(received("trace_id"))

    def complete():
        result = verdict()
        done = result.full and not result.problems and not result.roots and not result.missing_hops()
        return result if done else None
    try:
        result = suite.wait_for("traces at the collector", complete, TRACES_WITHIN, [receiver], interval=0.3)
    except suite.Failure:
        result = verdict()
        found = result.problems + [f"{root}: starts a trace of its own" for root in result.roots]
        raise SmokeFailure("traces at the collector within "
                           f"{TRACES_WITHIN}s of the stop: {result.full} through gateway, note and user; "
                           f"hops never seen: {result.missing_hops() or 'none'}; "
                           + ("; ".join(found[:10]) or "no problem with parents")) from None
    print(f"collector: {result.full} traces through gateway, note-service and user-service; "
          "every hop carries its trace; every server span's parent present; "
          "no span of note- or user-service starts a trace")

    # The dashboard against what was exported: each process flushed its
    # metrics as it stopped.
    try:
        suite.wait_for("the RED metrics at the collector",
                       lambda: RED_METRICS <= {(line["service"], line["metric"]) for line in received("metric")},
                       TRACES_WITHIN, [receiver], interval=0.3)
    except suite.Failure:
        seen = sorted({(line["service"], line["metric"]) for line in received("metric")})
        raise SmokeFailure(f"metrics at the collector within {TRACES_WITHIN}s of the stop: "
                           f"{seen or 'none'}, wanted {sorted(RED_METRICS)}") from None
    emitted = os.path.join(group.workdir, "metrics.jsonl")
    with open(emitted, "w") as out:
        out.writelines(json.dumps(line) + "\n" for line in received("metric"))
    # First proof that the comparison can fail (each break of the metrics or
    # the dashboard caught), then the comparison itself.
    for args in (["--self-test", "--emitted", emitted], ["--emitted", emitted]):
        check = subprocess.run([sys.executable, os.path.join(ROOT, "deploy", "check-observability.py"),
                                *args], cwd=ROOT, capture_output=True, text=True)
        print((check.stdout + check.stderr).strip())
        if check.returncode != 0:
            raise SmokeFailure("the Grafana dashboard and the metrics the services export disagree "
                               f"(check-observability.py {' '.join(args)})")


class TraceCheck:
    """What the collector received: `full` traces through all three
    services, `hops` seen ((caller, callee) with the callee's server span in
    a trace of the caller's), `problems` (server spans whose parent never
    arrived) and `roots` (note/user spans that start a trace)."""

    HOPS = ((GATEWAY, NOTE), (GATEWAY, USER), (NOTE, USER))

    def __init__(self):
        self.full, self.hops, self.problems, self.roots = 0, set(), [], []

    def missing_hops(self):
        return [f"{a} -> {b}" for a, b in self.HOPS if (a, b) not in self.hops]


def is_server(span):
    """Whether a received span is a server span: its OTLP kind when the
    receiver reports it, else by name (an HTTP method in the gateway, a gRPC
    method of the service's own package in note- and user-service)."""
    if "kind" in span:
        return span["kind"] == SPAN_KIND_SERVER
    name = span["name"]
    if span["service"] == GATEWAY:
        return name.split(" ", 1)[0] in HTTP_METHODS
    package = RPC_PACKAGE.get(span["service"])
    return bool(package) and name.startswith(package)


def is_health_check(span):
    # Health probes come from untraced callers (the container's health
    # check), so their server spans are roots by design.
    return span["name"].startswith("grpc.health.v1.Health/")


def check_traces(spans):
    """A TraceCheck of `spans`. A problem is a server span whose parent is
    not among its trace's spans; a root is a span of note- or user-service
    that starts a trace (every request enters at the gateway, so such a
    span lost its caller's context)."""
    by_trace = {}
    for span in spans:
        by_trace.setdefault(span["trace_id"], []).append(span)
    result = TraceCheck()
    for trace, members in by_trace.items():
        services = {span["service"] for span in members}
        if {GATEWAY, NOTE, USER} <= services:
            result.full += 1
        servers = {span["service"] for span in members if is_server(span) and not is_health_check(span)}
        for caller, callee in TraceCheck.HOPS:
            if caller in services and callee in servers and caller != callee:
                result.hops.add((caller, callee))
        ids = {span["span_id"] for span in members}
        for span in members:
            parent = (span.get("parent_span_id") or "").strip("0")
            kind = "server span" if is_server(span) else "span"
            what = f"{span['service']} {kind} {span['name']!r} of trace {trace}"
            if parent and is_server(span) and span["parent_span_id"] not in ids:
                result.problems.append(f"{what}: parent {span['parent_span_id']} never arrived")
            elif not parent and span["service"] != GATEWAY and not is_health_check(span):
                if is_server(span):
                    result.problems.append(f"{what}: a server span that starts the trace (no parent)")
                else:
                    result.roots.append(what)
    return result


if __name__ == "__main__":
    main()
