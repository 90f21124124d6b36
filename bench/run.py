#!/usr/bin/env python3
"""Every benchmark scenario side by side, in one go, on the release build.

Each scenario starts its processes fresh (on a fresh database), records how
long they take to become ready and their idle memory, drives them with
`easy-note-bench run`, then records peak memory (VmHWM) and CPU seconds of
every process from /proc and stops them with SIGTERM. Results go to
bench/results/<UTC time>/ as one JSON file per load run plus summary.json;
unless --smoke, the table and chart of docs/benchmarks.md are regenerated
from them (docs/benchmarks.svg).

  bench/run.sh            full run (about 10 minutes on 2 cores)
  bench/run.sh --smoke    every scenario for a second or two at low load (CI)

Scenarios (the services are the ones users run; only the settings differ):
  baseline           easy-note-bench baseline: the same SQL in one process, no RPC
  all-in-one         `easy-note` on SQLite (the README's first command)
  three-processes    user-service, note-service, api-gateway on SQLite, static discovery
  mysql              the same on MySQL/MariaDB (EASYNOTE_BENCH_MYSQL_URL, default the local server)
  otlp-export        three processes exporting every span to an OTLP/gRPC receiver
  otlp-sampled       the same with 10% of traces sampled (parentbased_traceidratio)
  otel-off           three processes with OTEL_SDK_DISABLED=true
  nacos              three processes finding each other through rnacos
"""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release")
SUITE = os.path.join(RELEASE, "easy-note")
BENCH = os.path.join(RELEASE, "easy-note-bench")
RECEIVER = os.path.join(RELEASE, "examples", "otlp-receiver")
TICKS = os.sysconf("SC_CLK_TCK")
JWT_SECRET = "bench-jwt-secret-0123456789abcdef0123456789"

# Ports of their own, so a suite running on the defaults is left alone.
HTTP, USER, NOTE, NACOS, OTLP = 18080, 18889, 18888, 18848, 14317


class Process:
    """A started process, with its /proc readings."""

    def __init__(self, name, argv, env, workdir):
        self.name = name
        self.log = os.path.join(workdir, f"{name}.log")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=open(self.log, "w"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.ready_ms = None
        self.idle_rss_mb = None

    def status_mb(self, field):
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        return None

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                return "killed"
        return self.proc.returncode

    def tail(self):
        return open(self.log, errors="replace").read()[-3000:]


def wait_until(what, check, proc=None, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.proc.returncode}:\n{proc.tail()}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{what}: not within {timeout}s")


def http_ok(url):
    with urllib.request.urlopen(url, timeout=1) as response:
        return response.status == 200


def grpc_ready(service, env):
    """The binaries' own probe: `easy-note <service> healthcheck`."""
    return subprocess.run([SUITE, service, "healthcheck"], env=env, capture_output=True).returncode == 0


class Scenario:
    """Processes of one scenario and what they measured."""

    def __init__(self, name, title, workdir):
        self.name, self.title = name, title
        self.workdir = os.path.join(workdir, name)
        os.makedirs(self.workdir)
        self.services = []  # Processes we measure
        self.helpers = []   # rnacos, the OTLP receiver: not measured
        self.runs = []

    def base_env(self, **extra):
        env = {"PATH": os.environ.get("PATH", ""), "RUST_LOG": "info", "EASYNOTE_JWT_SECRET": JWT_SECRET,
               "EASYNOTE_ENV": "production"}
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def start(self, name, argv, env, ready):
        process = Process(name, argv, env, self.workdir)
        self.services.append(process)
        wait_until(f"{name} ready", ready, process)
        process.ready_ms = (time.monotonic() - process.started) * 1000
        return process

    def helper(self, name, argv, env, ready):
        process = Process(name, argv, env, self.workdir)
        self.helpers.append(process)
        wait_until(f"{name} ready", ready, process)

    def settle(self):
        """Idle memory, a second after everything is ready."""
        time.sleep(1)
        for process in self.services:
            process.idle_rss_mb = process.status_mb("VmRSS")

    def load(self, label, args, out_dir, smoke):
        out = os.path.join(out_dir, f"{self.name}.{label}.json")
        argv = [BENCH, "run", "--url", f"http://127.0.0.1:{HTTP}", "--label", f"{self.name}/{label}",
                "--out", out, *args]
        if smoke:
            argv += ["--users", "4", "--notes", "4", "--duration", "2s", "--warmup", "1s"]
        print(f"\n--- {self.title}: {label}", flush=True)
        subprocess.run(argv, check=True)
        with open(out) as result:
            self.runs.append(json.load(result))

    def finish(self):
        processes = []
        for process in self.services:
            processes.append({
                "name": process.name,
                "ready_ms": round(process.ready_ms, 1),
                "idle_rss_mb": round(process.idle_rss_mb, 1),
                "peak_rss_mb": round(process.status_mb("VmHWM"), 1),
                "cpu_s": round(process.cpu_seconds(), 2),
            })
        failures = []
        for process in reversed(self.services):
            code = process.stop()
            if code != 0:
                failures.append(f"{process.name} exited {code} on SIGTERM:\n{process.tail()}")
        for process in self.helpers:
            process.stop()
        if failures:
            raise RuntimeError("\n".join(failures))
        return {"name": self.name, "title": self.title, "processes": processes, "runs": self.runs}

    def abort(self):
        for process in self.services + self.helpers:
            process.stop()


def three_processes(scenario, database, extra):
    """user-service, note-service and api-gateway, in dependency order."""
    user_env = scenario.base_env(EASYNOTE_GRPC_ADDR=f"127.0.0.1:{USER}", EASYNOTE_DATABASE_URL=database("user"), **extra)
    scenario.start("user-service", [SUITE, "user-service"], user_env, lambda: grpc_ready("user-service", user_env))
    note_env = scenario.base_env(EASYNOTE_GRPC_ADDR=f"127.0.0.1:{NOTE}", EASYNOTE_DATABASE_URL=database("note"),
                                 EASYNOTE_USER_ADDRS=f"127.0.0.1:{USER}", **extra)
    scenario.start("note-service", [SUITE, "note-service"], note_env, lambda: grpc_ready("note-service", note_env))
    gateway_env = scenario.base_env(EASYNOTE_HTTP_ADDR=f"127.0.0.1:{HTTP}", EASYNOTE_USER_ADDRS=f"127.0.0.1:{USER}",
                                    EASYNOTE_NOTE_ADDRS=f"127.0.0.1:{NOTE}", **extra)
    scenario.start("api-gateway", [SUITE, "api-gateway"], gateway_env,
                   lambda: http_ok(f"http://127.0.0.1:{HTTP}/readyz"))


def mysql_database(url, name):
    """A fresh database on the MySQL server of `url` (whose user may create databases)."""
    match = re.match(r"mysql://([^:@/]+)(?::([^@/]*))?@([^:/]+)(?::(\d+))?/", url)
    if not match:
        raise RuntimeError(f"EASYNOTE_BENCH_MYSQL_URL {url!r} is not mysql://user[:password]@host[:port]/db")
    user, password, host, port = match.groups()
    argv = ["mariadb" if shutil.which("mariadb") else "mysql", "--protocol=tcp", f"-h{host}", f"-P{port or 3306}",
            f"-u{user}", "-e", f"DROP DATABASE IF EXISTS `{name}`; CREATE DATABASE `{name}`;"]
    if password:
        argv.insert(-2, f"-p{password}")
    subprocess.run(argv, check=True)
    return re.sub(r"/[^/?]*(\?.*)?$", f"/{name}", url)


def scenarios(args, workdir):
    """(name, title, start, loads): what runs, in order."""
    query = ["--mix", "query=1"]
    closed = ["--concurrency", "4" if args.smoke else "32"]
    opened = ["--rate", "50" if args.smoke else "1000"]
    sqlite = lambda scenario: lambda name: f"sqlite://{scenario.workdir}/{name}.db"  # noqa: E731
    full_loads = [("query", query + closed), ("mix", closed)]

    def baseline(s):
        s.start("baseline", [BENCH, "baseline"],
                s.base_env(EASYNOTE_HTTP_ADDR=f"127.0.0.1:{HTTP}", EASYNOTE_DATABASE_URL=sqlite(s)("baseline")),
                lambda: http_ok(f"http://127.0.0.1:{HTTP}/readyz"))

    def all_in_one(s):
        s.start("easy-note", [SUITE], s.base_env(
            EASYNOTE_HTTP_ADDR=f"127.0.0.1:{HTTP}", EASYNOTE_USER_GRPC_ADDR=f"127.0.0.1:{USER}",
            EASYNOTE_NOTE_GRPC_ADDR=f"127.0.0.1:{NOTE}", EASYNOTE_DATABASE_URL=sqlite(s)("easy-note")),
            lambda: http_ok(f"http://127.0.0.1:{HTTP}/readyz"))

    def on_mysql(s):
        url = os.environ.get("EASYNOTE_BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
        three_processes(s, lambda name: mysql_database(url, f"easynote_bench_{name}"), {})

    def otlp(s, sampling=None):
        s.helper("otlp-receiver", [RECEIVER, f"127.0.0.1:{OTLP}"], {"PATH": os.environ.get("PATH", "")},
                 lambda: "listening" in open(os.path.join(s.workdir, "otlp-receiver.log")).read())
        three_processes(s, sqlite(s), {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{OTLP}",
                                       "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", **(sampling or {})})

    def nacos(s):
        rnacos = os.environ.get("RNACOS_BIN") or shutil.which("rnacos") or os.path.expanduser("~/.cargo/bin/rnacos")
        s.helper("rnacos", [rnacos], {"PATH": os.environ.get("PATH", ""), "RUST_LOG": "warn",
                                      "RNACOS_DATA_DIR": os.path.join(s.workdir, "rnacos"),
                                      "RNACOS_HTTP_PORT": str(NACOS), "RNACOS_GRPC_PORT": str(NACOS + 1000),
                                      "RNACOS_HTTP_CONSOLE_PORT": "0"},
                 lambda: http_ok(f"http://127.0.0.1:{NACOS}/nacos/v1/ns/instance/list?serviceName=probe"))
        three_processes(s, sqlite(s), {"EASYNOTE_REGISTRY": "nacos", "NACOS_SERVER_ADDR": f"127.0.0.1:{NACOS}",
                                       "NACOS_CACHE_DIR": os.path.join(s.workdir, "nacos-cache"),
                                       "EASYNOTE_DEREGISTER_GRACE": "0s"})

    return [
        ("baseline", "no-RPC baseline (SQLite)", baseline, full_loads),
        ("all-in-one", "all-in-one, SQLite", all_in_one, full_loads + [("query-open", query + opened)]),
        ("three-processes", "3 processes, SQLite, static", lambda s: three_processes(s, sqlite(s), {}), full_loads),
        ("mysql", "3 processes, MySQL (MariaDB)", on_mysql, full_loads),
        ("otlp-export", "3 processes, OTLP export on", otlp, [("query", query + closed)]),
        ("otlp-sampled", "3 processes, OTLP export, 10% sampled", lambda s: otlp(s, {
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}),
         [("query", query + closed)]),
        ("otel-off", "3 processes, OTEL_SDK_DISABLED", lambda s: three_processes(s, sqlite(s), {"OTEL_SDK_DISABLED": "true"}),
         [("query", query + closed)]),
        ("nacos", "3 processes, Nacos (rnacos)", nacos, [("query", query + closed)]),
    ]


def git_commit():
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    # What a run writes itself (results, the page and chart) does not count.
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":!bench/results", ":!docs/benchmarks.md", ":!docs/benchmarks.svg"],
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return (result.stdout.strip() or "unknown") + ("+changes" if dirty else "")


def machine():
    cpu = "unknown CPU"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(open("/proc/meminfo").readline().split()[1]) / 1024 / 1024
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Linux {os.uname().release}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a second or two per run at low load; docs untouched")
    parser.add_argument("--only", help="comma-separated scenario names")
    args = parser.parse_args()
    for binary in (SUITE, BENCH, RECEIVER):
        if not os.path.exists(binary):
            sys.exit(f"{binary} is missing: build with bench/run.sh (cargo build --release --locked ...)")

    stamp = datetime.datetime.now(datetime.timezone.utc)
    out_dir = tempfile.mkdtemp(prefix="easy-note-bench-") if args.smoke else \
        os.path.join(ROOT, "bench", "results", stamp.strftime("%Y%m%dT%H%M%SZ"))
    os.makedirs(out_dir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="easy-note-bench-work-")
    only = set(args.only.split(",")) if args.only else None
    results = []
    for name, title, start, loads in scenarios(args, workdir):
        if only and name not in only:
            continue
        scenario = Scenario(name, title, workdir)
        try:
            start(scenario)
            scenario.settle()
            for label, load_args in loads:
                scenario.load(label, load_args, out_dir, args.smoke)
            results.append(scenario.finish())
        except BaseException:
            scenario.abort()
            raise
    summary = {"date": stamp.strftime("%Y-%m-%d %H:%M UTC"), "commit": git_commit(), "machine": machine(),
               "smoke": args.smoke, "scenarios": results}
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nresults: {out_dir}")
    if not args.smoke:
        import report  # bench/report.py, beside this file
        report.publish(summary, os.path.join(ROOT, "docs"))
    print(f"bench: {sum(len(s['runs']) for s in results)} runs in {len(results)} scenarios, 0 failed")


if __name__ == "__main__":
    main()
