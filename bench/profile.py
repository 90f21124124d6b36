"""Where the query path's CPU goes: CPU time per request at a fixed load,
and a `perf` profile of it by component.

Each scenario named (bench/run.py's names and set-ups) is started as
bench/run.py starts it. Queries are then sent open-loop at --rate: after
the load generator has prepared its users and notes and warmed up for 2 s,
`perf record` samples every process of the scenario for --seconds, and the
processes' user + system time over that window (from /proc) is divided by
the requests scheduled in it. The load generator and any receiver are not
counted. The samples are grouped by component (TLS, HTTP/2 and gRPC,
protobuf, tracing and OpenTelemetry, SQLite, allocation and copying, the
async runtime, the kernel, the rest) and shown as shares and as CPU ms per
request.

  scripts/py bench/profile.py                          baseline, all-in-one, all-in-one-otel-off, three-processes
  scripts/py bench/profile.py --only all-in-one,otlp-export --rate 1000 --seconds 10
  scripts/py bench/profile.py --smoke                  one scenario at 100 req/s for a second (CI)

Needs the release build (bench/run.sh builds it) and `perf` (Debian's
linux-perf) with perf_event_paranoid <= 2. Results go to
bench/results/<UTC time>-profile/profile.json; a table is printed.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import run  # bench/run.py (beside this script)

# Components, first match wins, on "dso symbol" of each perf line.
COMPONENTS = [
    ("kernel: scheduling and wake-ups",
     r"^\[kernel\S*\] (finish_task_switch|_raw_spin_unlock|__schedule|schedule|futex|__futex|try_to_wake_up|"
     r"irqentry|__rseq|rseq|pick_next|enqueue_|dequeue_|update_curr|select_task|ttwu|psi_|switch_|__switch)"),
    ("kernel: network and other system calls", r"^\[kernel"),
    ("TLS (rustls, AES-GCM)", r"rustls|ring_core|aws_lc|aes_|gcm_|chacha|poly1305|sha256|x25519|\bring::"),
    ("HTTP/2, HTTP/1 and gRPC framing", r"\bh2::|hyper|tonic::|\bhttp::|httparse|tower::|axum::|\bbytes::"),
    ("protobuf", r"prost::|encode_raw|merge_field|encoded_len"),
    ("tracing and OpenTelemetry", r"tracing|opentelemetry|sharded_slab"),
    ("SQLite and sqlx", r"sqlite|sqlx|pcache|btree|moveTo|Vdbe"),
    ("JSON", r"serde_json|serde::"),
    ("allocation and copying", r"malloc|free|realloc|calloc|_int_|unlink_chunk|__rdl_|memmove|memcpy|memset|memcmp|alloc::"),
    ("async runtime", r"tokio::|mio::|parking_lot|futures_|pthread|syscall|epoll|flume::|::park|Mutex|clock_gettime|Instant>::now"),
]
LINE = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[.\]\s+(.*)$")


def components(report):
    """Shares (percent of samples) per component from `perf report --sort
    dso,sym`, and the lines that matched none (largest first)."""
    shares = {name: 0.0 for name, _ in COMPONENTS}
    shares["other"] = 0.0
    unmatched = []
    for line in report.splitlines():
        match = LINE.match(line)
        if not match:
            continue
        share, dso, symbol = float(match[1]), match[2], match[3]
        text = f"{dso} {symbol}"
        for name, pattern in COMPONENTS:
            if re.search(pattern, text):
                shares[name] += share
                break
        else:
            shares["other"] += share
            unmatched.append(line.strip())
    return shares, unmatched


def profile(name, title, start, args, workdir, certs, out_dir):
    scenario = run.Scenario(name, title, workdir, certs)
    try:
        start(scenario)
        scenario.settle()
        out = os.path.join(out_dir, f"{name}.json")
        bench = subprocess.Popen(
            [run.BENCH, "run", "--url", scenario.url, "--label", f"{name}/profile", "--out", out,
             "--mix", "query=1", "--rate", str(args.rate), "--warmup", "2s",
             "--duration", f"{args.seconds + 1}s", "--quiet"],
            stderr=subprocess.PIPE, text=True)
        log = []
        for line in bench.stderr:
            log.append(line)
            if line.startswith("prepared "):
                print(line, end="", flush=True)
                break
        rest = threading.Thread(target=lambda: log.extend(bench.stderr), daemon=True)
        rest.start()
        time.sleep(2)  # the load generator's warm-up
        data = os.path.join(workdir, f"{name}.perf.data")
        pids = ",".join(str(child.pid) for child in scenario.services)
        before = sum(run.cpu_seconds(child) for child in scenario.services)
        subprocess.run(["perf", "record", "-q", "-F", "499", "-p", pids, "-o", data,
                        "--", "sleep", str(args.seconds)], check=True, stderr=subprocess.DEVNULL)
        cpu = sum(run.cpu_seconds(child) for child in scenario.services) - before
        if bench.wait() != 0:
            raise RuntimeError(f"{name}: the load generator failed:\n{''.join(log)}")
        with open(out) as f:
            result = json.load(f)
        if result["errors"] or result["late_starts"]:
            raise RuntimeError(f"{name}: {result['errors']} errors, {result['late_starts']} late starts "
                               f"at {args.rate} req/s: lower --rate")
        report = subprocess.run(
            ["perf", "report", "-i", data, "--no-children", "--sort", "dso,sym", "--stdio", "-q",
             "--percent-limit", "0.01"], check=True, capture_output=True, text=True).stdout
        os.remove(data)
        cpu_ms = cpu * 1000 / (args.rate * args.seconds)
        shares, other = components(report)
        scenario.finish()
        return {"name": name, "title": title, "rate": args.rate, "seconds": args.seconds,
                "cpu_ms_per_request": round(cpu_ms, 4),
                "components": {k: {"share_pct": round(v, 1), "ms_per_request": round(cpu_ms * v / 100, 4)}
                               for k, v in shares.items()},
                "top_symbols": [line.strip() for line in report.splitlines() if LINE.match(line)][:25],
                "top_other_symbols": other[:25]}
    except BaseException:
        scenario.abort()
        raise


def table(results):
    names = [name for name, _ in COMPONENTS] + ["other"]
    head = "| component | " + " | ".join(r["title"] for r in results) + " |"
    lines = [head, "|---|" + "---|" * len(results)]
    lines.append("| **CPU ms per request** | " + " | ".join(f"**{r['cpu_ms_per_request']:.3f}**" for r in results) + " |")
    for name in names:
        cells = [f"{r['components'][name]['ms_per_request']:.3f} ({r['components'][name]['share_pct']:.0f}%)"
                 for r in results]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="baseline,all-in-one,all-in-one-otel-off,three-processes",
                        help="comma-separated scenario names (bench/run.py's)")
    parser.add_argument("--rate", type=int, default=1200, help="queries per second, open-loop (default 1200)")
    parser.add_argument("--seconds", type=int, default=10, help="length of the profiled window (default 10)")
    parser.add_argument("--smoke", action="store_true",
                        help="the all-in-one at 100 req/s for 1 s, results in a temporary directory (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.only, args.rate, args.seconds = "all-in-one", 100, 1
    for binary in (run.SUITE, run.BENCH, run.RECEIVER):
        if not os.path.exists(binary):
            sys.exit(f"{binary} is missing: build with bench/run.sh (cargo build --release --locked ...)")
    if not shutil.which("perf"):
        sys.exit("perf is missing (Debian: apt-get install linux-perf)")
    stamp = datetime.datetime.now(datetime.timezone.utc)
    out_dir = tempfile.mkdtemp(prefix="easy-note-profile-out-") if args.smoke else \
        os.path.join(run.ROOT, "bench", "results", stamp.strftime("%Y%m%dT%H%M%SZ") + "-profile")
    os.makedirs(out_dir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="easy-note-profile-")
    certs = os.path.join(workdir, "certs")
    subprocess.run([run.SUITE, "dev-certs", "--out", certs, "--all-in-one"], check=True, stdout=subprocess.DEVNULL)
    wanted = args.only.split(",")
    plan = {entry[0]: entry for entry in run.scenarios(argparse.Namespace(smoke=False), workdir)}
    unknown = [name for name in wanted if name not in plan]
    if unknown:
        sys.exit(f"unknown scenarios: {', '.join(unknown)} (known: {', '.join(plan)})")
    results = []
    for name in wanted:
        _, title, start, _ = plan[name]
        print(f"--- {title}: {args.rate} req/s for {args.seconds}s under perf", flush=True)
        results.append(profile(name, title, start, args, workdir, certs, out_dir))
    summary = {"date": stamp.strftime("%Y-%m-%d %H:%M UTC"), "commit": run.git_commit(), "machine": run.machine(),
               "results": results}
    with open(os.path.join(out_dir, "profile.json"), "w") as f:
        json.dump(summary, f, indent=2)
    shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(table(results))
    print(f"\nresults: {out_dir}")


if __name__ == "__main__":
    main()
