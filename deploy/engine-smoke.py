"""Engine smoke test: the committed docker-compose.yml on a real Docker engine.

The file runs unmodified, with the images deploy/engine/images.sh builds
under the names it gives (stand-ins where nothing real can be had; each
says in its Dockerfile what it proves and what it cannot). For each
Compose given (`--compose v2`, `v1` or `both`, the default: Compose v2,
then Debian's Compose 1.29 with --compatibility):

  - `up` from nothing (`down -v` first): every container running and every
    health check healthy within its start period, both note-service
    replicas among them; the README's curl walkthrough, verbatim, against
    http://127.0.0.1:8080; a request's trace at the collector's stand-in
    with spans of the gateway, note-service and user-service.

With `--drills` (CI runs them under Compose v2), under a steady write load
(creates with an Idempotency-Key; afterwards every acknowledged note is
read back), each printing what was acknowledged, failed and lost, and how
long recovery took:

  kill       `docker kill` one note-service replica; it leaves the registry
  pause      `docker pause` one replica for 60 s, then `unpause`
  mysql      `docker restart` of MySQL
  nacos      Nacos stopped for 60 s, then started; every service registered again
  rolling    a rolling replacement of note-service (a third replica first,
             then each old one stopped), and a recreate of the gateway
  down-up    `down` then `up`: data, passwords, keys and old tokens kept
  fresh      `down -v` then `up`: a fresh install, both replicas migrating at once

usage: scripts/py deploy/engine-smoke.py [--compose v2|v1|both] [--drills] [--keep]
Needs a running engine and the images (deploy/engine/run.sh does it all).
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT = "easy-note-engine"
GATEWAY_URL = "http://127.0.0.1:8080"
NACOS_URL = "http://127.0.0.1:8848"
SERVICES = {"api-gateway": "easy-note-gateway", "user-service": "easy-note-user",
            "note-service": "easy-note-note"}
NOTE_REPLICAS = 2
ONE_SHOTS = {"certs", "nacos-init"}
LONG_RUNNING = {"mysql", "nacos", "jaeger", "otel-collector", "prometheus", "grafana", *SERVICES}
COMPOSE = {"v2": ["docker", "compose"], "v1": ["docker-compose", "--compatibility"]}


class Failure(Exception):
    pass


def log(*args):
    print(*args, flush=True)


def wait_for(what, check, timeout, interval=0.5):
    """Seconds until check() is truthy; Failure after `timeout`."""
    start = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - start
        except (OSError, ValueError, KeyError, subprocess.SubprocessError):
            pass
        if time.monotonic() - start > timeout:
            raise Failure(f"{what}: not within {timeout}s")
        time.sleep(interval)


def api(method, path, body=None, token=None, headers=None, timeout=10):
    """(HTTP status, envelope or None, response headers) of a gateway call."""
    req = urllib.request.Request(GATEWAY_URL + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, json.load(response), response.headers
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.load(err), err.headers
        except ValueError:
            return err.code, None, err.headers


def new_user():
    """A fresh account's token."""
    name = "drill-" + uuid.uuid4().hex[:12]
    password = "engine-smoke-" + uuid.uuid4().hex[:8]
    status, _, _ = api("POST", "/v1/user/register", {"username": name, "password": password})
    if status != 200:
        raise Failure(f"register: HTTP {status}")
    status, body, _ = api("POST", "/v1/user/login", {"username": name, "password": password})
    if status != 200:
        raise Failure(f"login: HTTP {status}")
    return body["data"]["token"]


def all_note_ids(token):
    """Every note id the user has, by walking the cursor pages."""
    ids, cursor = set(), None
    while True:
        query = "limit=100" + (f"&cursor={urllib.parse.quote(cursor)}" if cursor else "")
        status, body, _ = api("GET", f"/v1/note/query?{query}", token=token, timeout=30)
        if status != 200:
            raise Failure(f"reading the notes back: HTTP {status}")
        ids.update(note["note_id"] for note in body["data"]["notes"])
        cursor = body["data"].get("next_cursor")
        if not cursor:
            return ids


class Compose:
    def __init__(self, flavour):
        self.flavour = flavour
        self.base = COMPOSE[flavour] + ["-p", PROJECT, "-f", os.path.join(ROOT, "docker-compose.yml")]

    def __call__(self, *args, timeout=600, check=True):
        result = subprocess.run(self.base + list(args), cwd=ROOT, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise Failure(f"{' '.join(COMPOSE[self.flavour] + list(args))}: exit {result.returncode}\n"
                          + (result.stdout + result.stderr)[-3000:])
        return result.stdout

    def ids(self, service=None, all_states=False):
        """Container ids (of one service), running ones unless `all_states`."""
        args = ["ps", "-q"] + (["-a"] if all_states and self.flavour == "v2" else []) + ([service] if service else [])
        ids = self(*args).split()
        return ids if all_states else [cid for cid in ids if inspect(cid)["State"]["Running"]]

    def up(self):
        """`up -d` with the images as built; seconds until every service is
        running and every health check healthy."""
        start = time.monotonic()
        self("up", "-d", "--no-build", timeout=900)
        wait_for("every service healthy", self.healthy, 240, 1)
        return time.monotonic() - start

    def healthy(self):
        """Every long-running service up (healthy where it has a health
        check), note-service with its replicas."""
        running = {}
        for cid in self.ids(all_states=True):
            info = inspect(cid)
            service = info["Config"]["Labels"].get("com.docker.compose.service")
            if service in ONE_SHOTS:
                continue
            state = info["State"]
            up = state["Running"] and state.get("Health", {}).get("Status", "healthy") == "healthy"
            running.setdefault(service, []).append(up)
        return (len(running) == len(LONG_RUNNING) and running.get("note-service", []).count(True) >= NOTE_REPLICAS
                and all(any(ups) for ups in running.values()))

    def logs(self, service):
        return self("logs", "--no-color", service, timeout=120)


def inspect(cid):
    out = subprocess.run(["docker", "inspect", cid], capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]


def docker(*args, timeout=120):
    subprocess.run(["docker", *args], check=True, capture_output=True, timeout=timeout)


class Registry:
    """The registry's instance lists, as the admin (its generated password)."""

    def __init__(self, compose):
        self.password = compose("exec", "-T", "nacos", "cat", "/run/easy-note/nacos/nacos-password")

    def instances(self, service):
        body = urllib.parse.urlencode({"username": "nacos", "password": self.password}).encode()
        with urllib.request.urlopen(NACOS_URL + "/nacos/v1/auth/login", body, timeout=5) as response:
            token = json.load(response)["accessToken"]
        query = urllib.parse.urlencode({"serviceName": service, "accessToken": token})
        with urllib.request.urlopen(f"{NACOS_URL}/nacos/v1/ns/instance/list?{query}", timeout=5) as response:
            return [h for h in json.load(response)["hosts"] if h.get("healthy", True)]

    def counts(self):
        return {name: len(self.instances(name)) for name in SERVICES.values()}

    def complete(self):
        return self.counts() == {"easy-note-gateway": 1, "easy-note-user": 1, "easy-note-note": NOTE_REPLICAS}


class Load:
    """Creates with an Idempotency-Key from `workers` threads, each about
    `rate` a second, until stopped; every acknowledged note id is kept."""

    def __init__(self, token, workers=2, rate=8):
        self.token, self.rate = token, rate
        self.acked, self.failed, self.refused = [], {}, 0
        self.first_failure = self.last_failure = None
        self.lock, self.stopping = threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(workers)]
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()

    def run(self):
        while not self.stopping.is_set():
            key = str(uuid.uuid4())
            try:
                status, body, _ = api("POST", "/v1/note", {"title": "drill", "content": key}, self.token,
                                      {"Idempotency-Key": key}, timeout=15)
                outcome = "ok" if status == 200 and body and body.get("code") == 0 else f"HTTP {status}"
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as err:
                reason = getattr(err, "reason", err)
                outcome = "refused" if isinstance(reason, ConnectionRefusedError) else type(reason).__name__
            now = time.monotonic()
            with self.lock:
                if outcome == "ok":
                    self.acked.append(body["data"]["note_id"])
                else:
                    self.failed[outcome] = self.failed.get(outcome, 0) + 1
                    self.first_failure = self.first_failure or now
                    self.last_failure = now
            self.stopping.wait(1 / self.rate)

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def report(self, name, **extra):
        """Stops, reads every note back, prints and returns the numbers."""
        self.stop()
        lost = len(set(self.acked) - all_note_ids(self.token))
        window = (f"{self.last_failure - self.first_failure:.1f}s" if self.first_failure else "none")
        row = {"drill": name, "acknowledged": len(self.acked), "failed": dict(sorted(self.failed.items())),
               "lost": lost, "failure window": window, **extra}
        log(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in row.items() if k != "drill"))
        if lost:
            raise Failure(f"{name}: {lost} acknowledged notes missing afterwards")
        return row


def check_trace(compose):
    """A query's trace (note-service asks user-service for author names)
    reaches the collector with spans of all three services."""
    token = new_user()
    api("POST", "/v1/note", {"title": "traced", "content": "engine smoke"}, token)
    status, _, headers = api("GET", "/v1/note/query", token=token)
    trace_id = headers.get("x-trace-id")
    if status != 200 or not trace_id:
        raise Failure(f"query for the trace check: HTTP {status}, x-trace-id {trace_id!r}")

    def services():
        found = set()
        for line in compose.logs("otel-collector").splitlines():
            start = line.find("{")
            if start >= 0 and trace_id in line:
                found.add(json.loads(line[start:]).get("service"))
        return found
    took = wait_for(f"trace {trace_id} at the collector with spans of {sorted(SERVICES.values())}",
                    lambda: set(SERVICES.values()) <= services(), 60, 2)
    log(f"  trace {trace_id}: spans of the gateway, note-service and user-service at the collector "
        f"{took:.0f}s after the request")


def bring_up(compose):
    compose("down", "-v", "--remove-orphans", timeout=300)
    took = compose.up()
    log(f"  up from nothing: every service healthy after {took:.0f}s "
        f"({len(compose.ids('note-service'))} note-service replicas)")
    return took


def walkthrough():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "run-doc.py"), "README.md",
                             "--skip-background"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise Failure("the README walkthrough failed:\n" + (result.stdout + result.stderr)[-3000:])
    log("  the README's curl walkthrough passed against http://127.0.0.1:8080")


def settle(seconds):
    time.sleep(seconds)


def drill_kill(compose, registry, token):
    load = Load(token)
    settle(5)
    victim = compose.ids("note-service")[0]
    docker("kill", victim)
    killed = time.monotonic()
    gone = wait_for("the killed replica leaving the registry",
                    lambda: len(registry.instances("easy-note-note")) == 1, 60)
    settle(10)
    restarted = inspect(victim)["State"]["Running"]
    row = load.report("kill", **{"left the registry after": f"{gone:.1f}s",
                                 "restarted by the engine": "yes" if restarted else "no"})
    if not restarted:
        docker("start", victim)
    wait_for("note-service back to two healthy replicas", compose.healthy, 120, 1)
    wait_for("both replicas registered", registry.complete, 60)
    row["back after"] = f"{time.monotonic() - killed:.0f}s"
    return row


def drill_pause(compose, registry, token):
    load = Load(token)
    settle(5)
    victim = compose.ids("note-service")[0]
    docker("pause", victim)
    settle(60)
    docker("unpause", victim)
    back = wait_for("the paused replica healthy and registered",
                    lambda: compose.healthy() and registry.complete(), 90)
    settle(5)
    return load.report("pause 60 s", **{"healthy and registered after unpause": f"{back:.1f}s"})


def drill_mysql(compose, registry, token):
    load = Load(token)
    settle(5)
    compose("restart", "mysql", timeout=120)
    back = wait_for("every service healthy after the MySQL restart", compose.healthy, 120, 1)
    settle(10)
    return load.report("MySQL restart", **{"healthy again after": f"{back:.0f}s"})


def drill_nacos(compose, registry, token):
    load = Load(token)
    settle(5)
    compose("stop", "nacos", timeout=120)
    settle(60)
    compose("start", "nacos", timeout=120)
    back = wait_for("every instance registered again", registry.complete, 120, 1)
    settle(5)
    return load.report("Nacos stopped 60 s", **{"all registered again after start": f"{back:.1f}s"})


def drill_rolling(compose, registry, token):
    load = Load(token)
    settle(5)
    old = compose.ids("note-service")
    for cid in old:
        compose("up", "-d", "--no-build", "--no-deps", "--no-recreate", "--scale",
                f"note-service={NOTE_REPLICAS + 1}", "note-service", timeout=300)
        wait_for("the new replica healthy and registered",
                 lambda: len(registry.instances("easy-note-note")) == NOTE_REPLICAS + 1
                 and all(inspect(c)["State"].get("Health", {}).get("Status") == "healthy"
                         for c in compose.ids("note-service")), 180, 1)
        docker("stop", "-t", "40", cid, timeout=60)
        docker("rm", cid)
    settle(5)
    row = load.report("rolling note-service")
    if row["failed"]:
        raise Failure(f"rolling replacement of note-service: failed requests {row['failed']}")

    load = Load(token)
    settle(5)
    compose("up", "-d", "--no-build", "--no-deps", "--force-recreate", "api-gateway", timeout=300)
    back = wait_for("the new gateway healthy", compose.healthy, 120, 0.5)
    settle(5)
    return [row, load.report("recreate gateway", **{"healthy after": f"{back:.1f}s"})]


def drill_down_up(compose, registry, token):
    before = all_note_ids(token)
    compose("down", timeout=300)
    took = compose.up()
    wait_for("every instance registered", registry.complete, 60)
    after = all_note_ids(token)  # the old token, signed before the restart
    if not before <= after:
        raise Failure(f"down then up: {len(before - after)} notes missing")
    log(f"  down then up: healthy after {took:.0f}s; the old token still valid; "
        f"{len(before)} of {len(before)} notes there")
    return {"drill": "down, up", "healthy after": f"{took:.0f}s", "notes kept": f"{len(after & before)}/{len(before)}"}


def drill_fresh(compose, registry, token):
    compose("down", "-v", timeout=300)
    took = compose.up()
    exited = [cid for cid in compose.ids("note-service", all_states=True) if not inspect(cid)["State"]["Running"]]
    if exited:
        raise Failure(f"fresh install: {len(exited)} note-service replica(s) exited")
    status, _, _ = api("GET", "/v1/note/query", token=token)
    if status != 401:
        raise Failure(f"fresh install: a token of the old install answered HTTP {status}, not 401")
    fresh = new_user()
    api("POST", "/v1/note", {"title": "fresh", "content": "install"}, fresh)
    if len(all_note_ids(fresh)) != 1:
        raise Failure("fresh install: a note created is not listed")
    log(f"  down -v then up: a fresh install healthy after {took:.0f}s, both note-service replicas "
        "running (migrated at once), the old token refused (401), a new account works")
    return {"drill": "down -v, up", "healthy after": f"{took:.0f}s"}


DRILLS = [drill_kill, drill_pause, drill_mysql, drill_nacos, drill_rolling, drill_down_up, drill_fresh]


def run(flavour, drills):
    compose = Compose(flavour)
    log(f"--- {' '.join(COMPOSE[flavour])} ({compose('version', timeout=30).splitlines()[0].strip()})")
    rows = []
    bring_up(compose)
    walkthrough()
    check_trace(compose)
    if drills:
        registry = Registry(compose)
        wait_for("every instance registered", registry.complete, 60)
        token = new_user()
        for drill in DRILLS:
            row = drill(compose, registry, token)
            rows.extend(row if isinstance(row, list) else [row])
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compose", choices=("v2", "v1", "both"), default="both")
    parser.add_argument("--drills", action="store_true", help="the failure drills (under the first Compose)")
    parser.add_argument("--keep", action="store_true", help="leave the last suite running")
    parser.add_argument("--out", help="write the drills' numbers here as JSON")
    args = parser.parse_args()
    flavours = ["v2", "v1"] if args.compose == "both" else [args.compose]
    rows = []
    try:
        for i, flavour in enumerate(flavours):
            rows += run(flavour, args.drills and i == 0)
            if not args.keep or i + 1 < len(flavours):
                Compose(flavour)("down", "-v", timeout=300)
    except (Failure, subprocess.TimeoutExpired) as failure:
        print(f"engine smoke test FAILED: {failure}", file=sys.stderr)
        for service in ("api-gateway", "note-service", "user-service", "nacos", "mysql"):
            out = subprocess.run(COMPOSE[flavour] + ["-p", PROJECT, "logs", "--no-color", "--tail", "30", service],
                                 cwd=ROOT, capture_output=True, text=True)
            print(out.stdout[-4000:], file=sys.stderr)
        if not args.keep:
            Compose(flavour)("down", "-v", timeout=300, check=False)
        return 1
    if args.out:
        with open(args.out, "w") as out:
            json.dump(rows, out, indent=1)
    log("engine smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
