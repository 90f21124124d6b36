"""What the scripts share: child processes, waiting for them, and the
things they start (the services on port 0, rnacos, MySQL databases).

bench/run.py, bench/scale.py, deploy/compose-smoke.py, scripts/run-doc.py
and scripts/schemathesis.py import it by name (scripts/py puts this
directory on PYTHONPATH). Python 3 standard library only.

- `Group`: the children of one run, each in a process group of its own with
  its output in a log file; stopped with SIGTERM, a bounded wait, then
  SIGKILL, the exit code returned.
- `wait_for`: the one wait. It fails when the time is up or when any child
  of the run exits first, and its message ends with the tail of every
  child's log.
- `start_service`: an Easy-Note process on port 0. It reads the addresses
  the process bound from `EASYNOTE_ADDR_FILE` and waits until the process
  is ready, so no port is chosen here and bound later by someone else.
- `start_rnacos`: rnacos as the tests start it, through the test kit's
  `rnacos-fixture` (rnacos cannot bind port 0: Nacos clients look for gRPC
  at HTTP port + 1000; the fixture picks the pair and retries).
- `printed_addr`, `http_ok`, `recreate_database` / `drop_database`.
"""

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release")
EASY_NOTE = os.path.join(RELEASE, "easy-note")
OTLP_RECEIVER = os.path.join(RELEASE, "otlp-receiver")
RNACOS_FIXTURE = os.path.join(RELEASE, "rnacos-fixture")

# What each `easy-note` role writes to EASYNOTE_ADDR_FILE, and the variable
# that sets each of those listen addresses.
LISTEN_VARS = {
    "user-service": {"user_grpc": "EASYNOTE_GRPC_ADDR"},
    "note-service": {"note_grpc": "EASYNOTE_GRPC_ADDR"},
    "api-gateway": {"http": "EASYNOTE_HTTP_ADDR"},
    "all": {"http": "EASYNOTE_HTTP_ADDR", "user_grpc": "EASYNOTE_USER_GRPC_ADDR",
            "note_grpc": "EASYNOTE_NOTE_GRPC_ADDR"},
}

# What a check may raise while the thing it checks is not up yet.
NOT_YET = (OSError, ValueError, KeyError, http.client.HTTPException)


class Failure(Exception):
    """What a script waited for did not happen. `summary` says what; `logs`
    holds the tail of every child's log."""

    def __init__(self, summary, logs=""):
        super().__init__(summary + (f"\n{logs}" if logs else ""))
        self.summary, self.logs = summary, logs


class Child:
    """A started process in a process group of its own (so that signals
    reach whatever it starts), its stdout and stderr in `log`."""

    def __init__(self, name, argv, log, env=None, cwd=None):
        self.name, self.argv, self.log = name, argv, log
        self.started = time.monotonic()
        self.ready_at = None  # set by whoever waits until it is ready
        self.stopped = False  # stopped on purpose: its exit is no failure
        self.killed = False  # did not stop in time and got SIGKILL
        with open(log, "w") as out:
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    @property
    def pid(self):
        return self.proc.pid

    def exit_code(self):
        """The exit code, or None while it runs."""
        return self.proc.poll()

    def send(self, sig):
        """Sends `sig` to its process group, if it still runs."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout=30, sig=signal.SIGTERM):
        """`sig`, then up to `timeout` seconds, then SIGKILL; the exit code
        (negative: the signal that ended it)."""
        return stop_all([self], timeout, sig)[0][1]

    def output(self):
        with open(self.log, errors="replace") as log:
            return log.read()

    def tail(self, chars=3000):
        return self.output()[-chars:]

    def state(self):
        code = self.proc.poll()
        if code is None:
            return "running"
        return f"exited {code}" + (" (stopped)" if self.stopped else "")


def stop_all(children, timeout=30, sig=signal.SIGTERM):
    """Signals every child at once, then waits for all of them within one
    `timeout`; the stragglers get SIGKILL. [(child, exit code)], in order."""
    children = list(children)
    for child in children:
        child.stopped = True
        child.send(sig)
    deadline = time.monotonic() + timeout
    codes = []
    for child in children:
        try:
            code = child.proc.wait(timeout=max(0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.killed = True
            child.send(signal.SIGKILL)
            code = child.proc.wait()
        codes.append((child, code))
    return codes


def logs(children, chars=3000):
    """The tail of every child's log, one section each."""
    return "\n".join(f"----- {c.name} ({c.state()}; {c.log}) -----\n{c.tail(chars)}" for c in children)


def wait_for(what, check, timeout=60, procs=(), interval=0.1):
    """Calls `check` until it returns something true, and returns that.
    Fails (`Failure`) after `timeout` seconds, or as soon as one of `procs`
    exits without having been stopped; either way the message holds the
    tail of every child's log. Exceptions of `check` listed in NOT_YET
    count as "not yet"."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        for child in procs:
            if not child.stopped and child.exit_code() is not None:
                raise Failure(f"{what}: {child.name} exited with {child.exit_code()} first", logs(procs))
        try:
            value = check()
            if value:
                return value
        except NOT_YET as err:
            last_error = err
        if time.monotonic() >= deadline:
            hint = f" (last error: {last_error})" if last_error else ""
            raise Failure(f"{what}: not within {timeout:g}s{hint}", logs(procs))
        time.sleep(interval)


class Group:
    """The children of one run, their logs in `workdir`."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.children = []

    def spawn(self, name, argv, env=None, cwd=None):
        """Starts `argv` with exactly `env` (None: this process's), logging to
        `<workdir>/<name>.log`."""
        child = Child(name, argv, os.path.join(self.workdir, f"{name}.log"), env=env,
                      cwd=self.workdir if cwd is None else cwd)
        self.children.append(child)
        return child

    def wait_for(self, what, check, timeout=60, interval=0.1):
        """`wait_for` over every child of this group."""
        return wait_for(what, check, timeout, self.children, interval)

    def logs(self, chars=3000):
        return logs(self.children, chars)

    def stop_all(self, timeout=30):
        """Stops every child still running, the last started first:
        [(child, exit code)]."""
        return [stop_all([child], timeout)[0] for child in reversed(self.children) if not child.stopped]


def http_ok(url, timeout=2):
    """Whether GET `url` answers 200."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status == 200


def printed_addr(group, child, pattern, timeout=30):
    """The `host:port` a child prints once it listens: group 1 of `pattern`
    (a regular expression) in its log."""
    def check():
        match = re.search(pattern, child.output())
        return match and match.group(1)
    return group.wait_for(f"{child.name} printing its address ({pattern})", check, timeout, interval=0.01)


def start_service(group, name, role, env, args=None, probe=None, binary=EASY_NOTE, timeout=60, interval=0.01):
    """Starts `binary args…` (by default `easy-note <role>`) with `env` and
    waits until it is ready: (child, {"http"|"user_grpc"|"note_grpc":
    "host:port"}).

    Listen addresses `env` leaves unset are 127.0.0.1:0. The bound ones are
    read from the file the process writes to `EASYNOTE_ADDR_FILE`. Ready
    means that `probe` (a health-check command line, run with `env` and the
    bound listen addresses) exits 0. The default probe is GET /readyz for
    roles that serve HTTP and `easy-note <role> healthcheck` for the gRPC
    services. `interval`: how often to look (ready times are measured
    from `child.started` to `child.ready_at`)."""
    listen = LISTEN_VARS[role]
    env = dict(env)
    for var in listen.values():
        env.setdefault(var, "127.0.0.1:0")
    path = os.path.join(group.workdir, f"{name}.addrs.json")
    if os.path.exists(path):
        os.remove(path)
    env["EASYNOTE_ADDR_FILE"] = path
    if args is None:
        args = [] if role == "all" else [role]
    child = group.spawn(name, [binary, *args], env)

    def reported():
        with open(path) as written:
            addrs = json.load(written)
        return addrs if all(key in addrs for key in listen) else None
    addrs = group.wait_for(f"{name} writing its addresses to EASYNOTE_ADDR_FILE", reported, timeout, interval)

    probe_env = dict(env, **{var: addrs[key] for key, var in listen.items()})
    probe_env.pop("EASYNOTE_ADDR_FILE")
    if probe is not None:
        ready = lambda: subprocess.run(probe, env=probe_env, capture_output=True).returncode == 0  # noqa: E731
        how = " ".join(os.path.basename(part) for part in probe)
    elif "http" in addrs:
        ready = lambda: http_ok(f"http://{addrs['http']}/readyz", timeout=1)  # noqa: E731
        how = f"GET http://{addrs['http']}/readyz"
    else:
        command = [binary, role, "healthcheck"]
        ready = lambda: subprocess.run(command, env=probe_env, capture_output=True).returncode == 0  # noqa: E731
        how = f"easy-note {role} healthcheck"
    group.wait_for(f"{name} ready ({how})", ready, timeout, interval)
    child.ready_at = time.monotonic()
    return child, addrs


# --- rnacos -----------------------------------------------------------------

def rnacos_bin():
    """The rnacos binary, as scripts/tools.sh finds it (RNACOS_BIN, PATH,
    ~/.cargo/bin), or installs it when missing: one place for the shell
    scripts and these."""
    found = subprocess.run(
        ["bash", "-c", 'source "$1" && ensure_rnacos >&2 && printf %s "$RNACOS_BIN"', "bash",
         os.path.join(ROOT, "scripts", "tools.sh")],
        stdout=subprocess.PIPE, text=True)
    path = found.stdout
    if found.returncode != 0 or not os.path.isfile(path):
        raise Failure("rnacos could not be found or installed (scripts/tools.sh; RNACOS_BIN, PATH, "
                      "~/.cargo/bin, else cargo install --locked rnacos)")
    os.environ["RNACOS_BIN"] = path  # found once per process
    return path


def start_rnacos(group, name="rnacos", auth=None, timeout=150):
    """rnacos as the tests start it (testkit/src/bin/rnacos-fixture.rs, on
    testkit's fixture: a free pair of loopback ports, HTTP p and gRPC
    p + 1000, its own data directory, a failed start retried): (child, HTTP
    port). With `auth` (username, password), its open API and gRPC want a
    login and that user is its admin."""
    env = {"PATH": os.environ.get("PATH", ""), "RNACOS_BIN": rnacos_bin()}
    args = []
    if auth:
        env.update(NACOS_USERNAME=auth[0], NACOS_PASSWORD=auth[1])
        args.append("--auth")
    child = group.spawn(name, [RNACOS_FIXTURE, *args], env)
    addr = printed_addr(group, child, r"listening on (\S+)", timeout)
    return child, int(addr.rsplit(":", 1)[1])


def nacos_login(port, username, password):
    """An access token of the registry on `port` (its /nacos/v1/auth/login)."""
    body = urllib.parse.urlencode({"username": username, "password": password}).encode()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/nacos/v1/auth/login", body,
                                timeout=2) as response:
        return json.load(response)["accessToken"]


def nacos_instances(port, service, token=None):
    """The instances of `service` that the registry on `port` lists (with
    an access token of nacos_login, when the registry wants a login)."""
    url = f"http://127.0.0.1:{port}/nacos/v1/ns/instance/list?serviceName={service}"
    if token:
        url += f"&accessToken={urllib.parse.quote(token)}"
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.load(response).get("hosts", [])


# --- MySQL ------------------------------------------------------------------

MYSQL_URL = re.compile(r"mysql://([^:@/]+)(?::([^@/]*))?@([^:/]+)(?::(\d+))?/")


def mysql(url, sql):
    """Runs `sql` with the mariadb (or mysql) client as the user of `url`
    (mysql://user[:password]@host[:port]/…)."""
    match = MYSQL_URL.match(url)
    if not match:
        raise Failure(f"{url!r} is not mysql://user[:password]@host[:port]/db")
    user, password, host, port = match.groups()
    argv = ["mariadb" if shutil.which("mariadb") else "mysql", "--protocol=tcp", f"-h{host}",
            f"-P{port or 3306}", f"-u{user}"]
    if password:
        argv.append(f"-p{password}")
    subprocess.run([*argv, "-e", sql], check=True)


def recreate_database(url, name, charset=None):
    """Drops database `name` if it exists and creates it afresh on the
    server of `url`, whose user may create databases; the URL of the new
    database. `charset`: e.g. "utf8mb4 COLLATE utf8mb4_unicode_ci"."""
    create = f"CREATE DATABASE `{name}`" + (f" CHARACTER SET {charset}" if charset else "")
    mysql(url, f"DROP DATABASE IF EXISTS `{name}`; {create};")
    return re.sub(r"/[^/?]*(\?.*)?$", f"/{name}", url)


def drop_database(url, name):
    mysql(url, f"DROP DATABASE IF EXISTS `{name}`;")
