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
  all-in-one-otel-off  the same with OTEL_SDK_DISABLED=true
  three-processes    user-service, note-service, api-gateway on SQLite, static discovery
  three-processes-plaintext  the same with internal gRPC in plaintext (EASYNOTE_INSECURE_INTERNAL)
  mysql              the same on MySQL/MariaDB (EASYNOTE_BENCH_MYSQL_URL, default the local server)
  otlp-export        three processes exporting every span to an OTLP/gRPC receiver
  otlp-sampled       the same with 10% of traces sampled (parentbased_traceidratio)
  otel-off           three processes with OTEL_SDK_DISABLED=true
  nacos              three processes finding each other through rnacos
  governance-off     the all-in-one with EASYNOTE_GOVERNANCE=off (against all-in-one's default rules)
  overload           the all-in-one's login capacity closed-loop, then logins open-loop at 3x it
  overload-off       the same offered load with EASYNOTE_GOVERNANCE=off (no shedding)
  overload-adaptive  the same offered load with adaptive concurrency at the edge (gateway.adaptive)
                     and instead of user-service's fixed in-flight limits, every setting its default
  overload-capacity  the login capacity measured again after them: the overload runs are judged
                     against the mean of the two (it drifts by several percent in minutes here)
  *-before           with EASYNOTE_BENCH_BEFORE=<an earlier easy-note binary>: all-in-one and
                     three processes on that build, to compare builds in one run

Every suite process runs in production mode, so internal gRPC is mutual TLS
with certificates `easy-note dev-certs` writes once per run (all but
three-processes-plaintext), and the default governance rules with one change, in a
rules file (EASYNOTE_GOVERNANCE_FILE): the per-IP login limit is lifted,
because the load generator is one address. The per-user limit stays.
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import suite  # scripts/suite.py (on PYTHONPATH through scripts/py)

ROOT = suite.ROOT
SUITE = suite.EASY_NOTE
BENCH = os.path.join(suite.RELEASE, "easy-note-bench")
RECEIVER = suite.OTLP_RECEIVER
BEFORE = os.environ.get("EASYNOTE_BENCH_BEFORE")
TICKS = os.sysconf("SC_CLK_TCK")
# A random key (production refuses patterned ones), public because it is here.
JWT_SECRET = "598897a2c26f72c4f431f77955642d0b9e1447dd2b1a2aafacade9c1b9083a93"
# The default rules without the per-IP login limit (one load generator is
# one address); the per-user limit of the defaults is kept.
BENCH_RULES = {"gateway": {"rate_limits": [{"route": "*", "key": "user", "per_second": 100, "burst": 200}]}}
# The overload runs measure shedding, not rate limits: none at all (a login
# has no user, so the per-user limit would key it by address).
NO_RATE_LIMITS = {"gateway": {"rate_limits": []}}
# Adaptive concurrency at the gateway's edge (per route) and instead of
# user-service's fixed limits (256, and 16 for CheckUser): a service entry
# the document gives replaces the default one, so no number is tuned here.
ADAPTIVE = {"gateway": {"rate_limits": [], "adaptive": {}}, "servers": {"easy-note-user": {"adaptive": {}}}}
RULES_FOR = {"overload": NO_RATE_LIMITS, "overload-off": NO_RATE_LIMITS, "overload-adaptive": ADAPTIVE,
             "overload-capacity": NO_RATE_LIMITS}
# Each role's certificate (easy-note dev-certs file stems); the all-in-one's
# holds all three names.
CERT_FOR = {"all": "easy-note", "api-gateway": "easy-note-gateway",
            "user-service": "easy-note-user", "note-service": "easy-note-note"}
PLAINTEXT = {"EASYNOTE_INSECURE_INTERNAL": "true"}


def status_mb(child, field):
    """A memory figure of /proc/<pid>/status (VmRSS, VmHWM), in MB."""
    with open(f"/proc/{child.pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return None


def cpu_seconds(child):
    with open(f"/proc/{child.pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


class Scenario:
    """Processes of one scenario and what they measured."""

    def __init__(self, name, title, workdir, certs):
        self.name, self.title, self.certs = name, title, certs
        rules = RULES_FOR.get(name, BENCH_RULES)
        self.group = suite.Group(os.path.join(workdir, name))
        self.workdir = self.group.workdir
        os.makedirs(self.workdir)
        self.rules = os.path.join(self.workdir, "rules.json")
        with open(self.rules, "w") as f:
            json.dump(rules, f)
        self.services = []  # children we measure; rnacos and the OTLP receiver are not
        self.idle_rss_mb = {}
        self.url = None  # the gateway's (or baseline's) base URL
        self.runs = []

    def base_env(self, **extra):
        env = {"PATH": os.environ.get("PATH", ""), "RUST_LOG": "info", "EASYNOTE_JWT_SECRET": JWT_SECRET,
               "EASYNOTE_ENV": "production", "EASYNOTE_GOVERNANCE_FILE": self.rules,
               # The login floor the rules cannot lift, lifted here for the
               # same reason as the rules' login limit: one generator, one address.
               "EASYNOTE_LOGIN_RATE_PER_SECOND": "1000000", "EASYNOTE_LOGIN_RATE_BURST": "1000000"}
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def service(self, name, role, env, binary=SUITE):
        """An Easy-Note process on port 0, measured; its bound addresses.
        Mutual TLS with the role's certificate unless the env says plaintext."""
        if env.get("EASYNOTE_INSECURE_INTERNAL") != "true":
            stem = os.path.join(self.certs, CERT_FOR[role])
            env = {**env, "EASYNOTE_TLS_CERT": f"{stem}.pem", "EASYNOTE_TLS_KEY": f"{stem}.key",
                   "EASYNOTE_TLS_CA": os.path.join(self.certs, "ca.pem")}
        child, addrs = suite.start_service(self.group, name, role, env, binary=binary)
        self.services.append(child)
        if "http" in addrs:
            self.url = f"http://{addrs['http']}"
        return addrs

    def settle(self):
        """Idle memory, a second after everything is ready."""
        time.sleep(1)
        for child in self.services:
            self.idle_rss_mb[child.name] = status_mb(child, "VmRSS")

    def load(self, label, args, out_dir, smoke, suffix=None):
        if callable(args):  # arguments that depend on an earlier run
            args = args(self)
        out = os.path.join(out_dir, f"{self.name}.{label}{'.' + suffix if suffix else ''}.json")
        argv = [BENCH, "run", "--url", self.url, "--label", f"{self.name}/{label}", "--out", out, *args]
        if smoke:
            # Enough users that the per-user rate limit of the rules
            # (BENCH_RULES) leaves the short runs unthrottled.
            argv += ["--users", "32", "--notes", "4", "--duration", "2s", "--warmup", "1s"]
        print(f"\n--- {self.title}: {label}", flush=True)
        subprocess.run(argv, check=True)
        with open(out) as result:
            self.runs.append(json.load(result))

    def finish(self):
        processes = []
        for child in self.services:
            processes.append({
                "name": child.name,
                "ready_ms": round((child.ready_at - child.started) * 1000, 1),
                "idle_rss_mb": round(self.idle_rss_mb[child.name], 1),
                "peak_rss_mb": round(status_mb(child, "VmHWM"), 1),
                "cpu_s": round(cpu_seconds(child), 2),
            })
        failures = [f"{child.name} exited {code} on SIGTERM:\n{child.tail()}"
                    for child, code in self.group.stop_all() if child in self.services and code != 0]
        if failures:
            raise RuntimeError("\n".join(failures))
        return {"name": self.name, "title": self.title, "processes": processes, "runs": self.runs}

    def abort(self):
        self.group.stop_all()


def three_processes(scenario, database, extra, binary=SUITE):
    """user-service, note-service and api-gateway, in dependency order, each
    given the addresses the ones before it bound."""
    user = scenario.service("user-service", "user-service",
                            scenario.base_env(EASYNOTE_DATABASE_URL=database("user"), **extra), binary)["user_grpc"]
    note = scenario.service("note-service", "note-service", scenario.base_env(
        EASYNOTE_DATABASE_URL=database("note"), EASYNOTE_USER_ADDRS=user, **extra), binary)["note_grpc"]
    scenario.service("api-gateway", "api-gateway",
                     scenario.base_env(EASYNOTE_USER_ADDRS=user, EASYNOTE_NOTE_ADDRS=note, **extra), binary)


def scenarios(args, workdir):
    """(name, title, start, loads): what runs, in order."""
    # Closed-loop query runs are short and repeated (--rounds): the median
    # of three 10-second runs is steadier than one long run.
    query = ["--mix", "query=1"] + ([] if args.smoke else ["--duration", "10s", "--warmup", "2s"])
    closed = ["--concurrency", "4" if args.smoke else "32"]
    opened = ["--rate", "50" if args.smoke else "1000"]
    sqlite = lambda scenario: lambda name: f"sqlite://{scenario.workdir}/{name}.db"  # noqa: E731
    full_loads = [("query", query + closed), ("mix", closed)]

    def baseline(s):
        # easy-note-bench baseline prints the address it bound instead of
        # writing EASYNOTE_ADDR_FILE.
        child = s.group.spawn("baseline", [BENCH, "baseline"], s.base_env(
            EASYNOTE_HTTP_ADDR="127.0.0.1:0", EASYNOTE_DATABASE_URL=sqlite(s)("baseline")))
        s.services.append(child)
        s.url = "http://" + suite.printed_addr(s.group, child, r"listening on http://(\S+)")
        s.group.wait_for("baseline ready", lambda: suite.http_ok(f"{s.url}/readyz", timeout=1), interval=0.01)
        child.ready_at = time.monotonic()

    def all_in_one(s, binary=SUITE, **extra):
        s.service("easy-note", "all", s.base_env(EASYNOTE_DATABASE_URL=sqlite(s)("easy-note"), **extra), binary)

    # Overload: the login path (argon2id, the suite's most expensive) driven
    # open-loop at three times the capacity measured closed-loop below the
    # shedding limits, with the default rules, then the same offered rate
    # with governance off. Logins only, from one address (see BENCH_RULES).
    login = ["--mix", "login=1"]
    login_capacity = login + ["--concurrency", "2" if args.smoke else "8"]
    capacity = {}

    def measure_capacity(s):
        capacity["rps"] = s.runs[-1]["ok_throughput_rps"]
        return login + ["--rate", str(max(1, round(3 * capacity["rps"])))]

    def same_offer(s):
        if "rps" not in capacity:
            sys.exit("overload-off needs the overload scenario's capacity: run both")
        return login + ["--rate", str(max(1, round(3 * capacity["rps"])))]

    def on_mysql(s):
        url = os.environ.get("EASYNOTE_BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
        three_processes(s, lambda name: suite.recreate_database(url, f"easynote_bench_{name}"), {})

    def otlp(s, sampling=None):
        receiver = s.group.spawn("otlp-receiver", [RECEIVER, "127.0.0.1:0"], {"PATH": os.environ.get("PATH", "")})
        addr = suite.printed_addr(s.group, receiver, r"listening on (\S+)")
        three_processes(s, sqlite(s), {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{addr}",
                                       "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", **(sampling or {})})

    def nacos(s):
        _, port = suite.start_rnacos(s.group)
        three_processes(s, sqlite(s), {"EASYNOTE_REGISTRY": "nacos", "NACOS_SERVER_ADDR": f"127.0.0.1:{port}",
                                       "NACOS_CACHE_DIR": os.path.join(s.workdir, "nacos-cache"),
                                       "EASYNOTE_DEREGISTER_GRACE": "0s"})

    # An earlier build of `easy-note` to compare with, side by side in this
    # run (EASYNOTE_BENCH_BEFORE=path/to/easy-note, with its commit in
    # EASYNOTE_BENCH_BEFORE_LABEL): the query path, all-in-one and three
    # processes, default settings.
    before = []
    if BEFORE:
        label = os.environ.get("EASYNOTE_BENCH_BEFORE_LABEL", "earlier build")
        before = [
            ("all-in-one-before", f"all-in-one, SQLite ({label})",
             lambda s: all_in_one(s, binary=BEFORE), [("query", query + closed)]),
            ("three-processes-before", f"3 processes, SQLite, static ({label})",
             lambda s: three_processes(s, sqlite(s), {}, binary=BEFORE), [("query", query + closed)]),
        ]

    return before + [
        ("baseline", "no-RPC baseline (SQLite)", baseline, full_loads),
        ("all-in-one", "all-in-one, SQLite", all_in_one, full_loads + [("query-open", query + opened)]),
        ("all-in-one-otel-off", "all-in-one, OTEL_SDK_DISABLED",
         lambda s: all_in_one(s, OTEL_SDK_DISABLED="true"), [("query", query + closed)]),
        ("three-processes", "3 processes, SQLite, static", lambda s: three_processes(s, sqlite(s), {}), full_loads),
        ("three-processes-plaintext", "3 processes, internal gRPC in plaintext",
         lambda s: three_processes(s, sqlite(s), PLAINTEXT), [("query", query + closed)]),
        ("mysql", "3 processes, MySQL (MariaDB)", on_mysql, full_loads),
        ("otlp-export", "3 processes, OTLP export on", otlp, [("query", query + closed)]),
        ("otlp-sampled", "3 processes, OTLP export, 10% sampled", lambda s: otlp(s, {
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}),
         [("query", query + closed)]),
        ("otel-off", "3 processes, OTEL_SDK_DISABLED", lambda s: three_processes(s, sqlite(s), {"OTEL_SDK_DISABLED": "true"}),
         [("query", query + closed)]),
        ("nacos", "3 processes, Nacos (rnacos)", nacos, [("query", query + closed)]),
        ("governance-off", "all-in-one, governance off", lambda s: all_in_one(s, EASYNOTE_GOVERNANCE="off"),
         [("query", query + closed)]),
        ("overload", "all-in-one, logins, default rules", all_in_one,
         [("login-capacity", login_capacity), ("login-overload", measure_capacity)]),
        ("overload-off", "all-in-one, logins, governance off", lambda s: all_in_one(s, EASYNOTE_GOVERNANCE="off"),
         [("login-overload", same_offer)]),
        ("overload-adaptive", "all-in-one, logins, adaptive concurrency", all_in_one,
         [("login-overload", same_offer)]),
        ("overload-capacity", "all-in-one, logins, capacity again", all_in_one,
         [("login-capacity", login_capacity)]),
    ]


def run_scenario(scenario, start, loads, out_dir, smoke, suffix=None):
    """Starts a scenario, runs its loads, stops it: its result."""
    try:
        start(scenario)
        scenario.settle()
        for label, load_args in loads:
            scenario.load(label, load_args, out_dir, smoke, suffix)
        return scenario.finish()
    except BaseException:
        scenario.abort()
        raise


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
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the closed-loop query runs (the docs report the median; default 3)")
    args = parser.parse_args()
    if args.smoke:
        args.rounds = 1
    for binary in (SUITE, BENCH, RECEIVER):
        if not os.path.exists(binary):
            sys.exit(f"{binary} is missing: build with bench/run.sh (cargo build --release --locked ...)")

    stamp = datetime.datetime.now(datetime.timezone.utc)
    out_dir = tempfile.mkdtemp(prefix="easy-note-bench-") if args.smoke else \
        os.path.join(ROOT, "bench", "results", stamp.strftime("%Y%m%dT%H%M%SZ"))
    os.makedirs(out_dir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="easy-note-bench-work-")
    certs = os.path.join(workdir, "certs")
    subprocess.run([SUITE, "dev-certs", "--out", certs, "--all-in-one"], check=True, stdout=subprocess.DEVNULL)
    only = set(args.only.split(",")) if args.only else None
    plan = [entry for entry in scenarios(args, workdir) if not only or entry[0] in only]
    results = []
    for name, title, start, loads in plan:
        results.append(run_scenario(Scenario(name, title, workdir, certs), start, loads, out_dir, args.smoke))
    # Further rounds of the closed-loop query runs, each scenario started
    # afresh, so that a drift of the machine's speed during the run shows
    # in every scenario alike: the docs report each scenario's median.
    for round_no in range(2, args.rounds + 1):
        for (name, title, start, loads), result in zip(plan, results):
            query = [(label, load_args) for label, load_args in loads if label == "query"]
            if not query:
                continue
            scenario = Scenario(name, title, os.path.join(workdir, f"round-{round_no}"), certs)
            again = run_scenario(scenario, start, query, out_dir, args.smoke, suffix=f"round-{round_no}")
            result["runs"].extend(again["runs"])
    summary = {"date": stamp.strftime("%Y-%m-%d %H:%M UTC"), "commit": git_commit(), "machine": machine(),
               "smoke": args.smoke, "scenarios": results}
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nresults: {out_dir}")
    if not args.smoke:
        import render_docs  # bench/render_docs.py, beside this file
        render_docs.publish(summary, os.path.join(ROOT, "docs"))
    print(f"bench: {sum(len(s['runs']) for s in results)} runs in {len(results)} scenarios, 0 failed")


if __name__ == "__main__":
    main()
