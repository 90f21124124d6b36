"""Turns a bench/run.py summary into the tables of docs/benchmarks.md and
the chart docs/benchmarks.svg. Also usable alone, to regenerate the docs
from a saved run:

  scripts/py bench/render_docs.py bench/results/<time>/summary.json
"""

import html
import json
import os
import sys

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
SERVICES_TARGET_PEAK_MB, SERVICES_TARGET_IDLE_MB = 40, 15


def login_capacity(summary):
    """The login capacity the overload runs are judged against: the mean of
    the closed-loop runs before them (scenario overload) and after them
    (overload-capacity), when both ran; (req/s, the runs)."""
    runs = [run for run in (run_of(summary, "overload", "login-capacity"),
                            run_of(summary, "overload-capacity", "login-capacity")) if run]
    if not runs:
        return None, runs
    return sum(run["ok_throughput_rps"] for run in runs) / len(runs), runs


def run_of(summary, scenario, label):
    """The scenario's run of `label`; of several (rounds), the median by throughput."""
    for s in summary["scenarios"]:
        if s["name"] == scenario:
            runs = sorted((run for run in s["runs"] if run["label"] == f"{scenario}/{label}"),
                          key=lambda run: run["throughput_rps"])
            if runs:
                return runs[(len(runs) - 1) // 2]
    return None


def rounds_of(summary, scenario, label):
    """Throughputs of every round of a run, for the table."""
    for s in summary["scenarios"]:
        if s["name"] == scenario:
            return [run["throughput_rps"] for run in s["runs"] if run["label"] == f"{scenario}/{label}"]
    return []


def fmt(value, digits=2):
    return "–" if value is None else f"{value:,.{digits}f}"


def percentiles(latency_ms):
    """The p50 … max cells of a latency table row."""
    return " | ".join(fmt(latency_ms[key]) for key in ("p50", "p90", "p99", "p999", "max"))


def errors(run):
    return ", ".join(f"{k}: {v}" for k, v in run["errors_by_kind"].items()) or "0"


def targets(summary):
    """(target, measured, met) rows for the issue's targets on this machine."""
    rows = []
    open_loop = run_of(summary, "all-in-one", "query-open")
    if open_loop:
        p99 = open_loop["latency_ms"]["p99"]
        rows.append(("query p99 < 10 ms at 1,000 req/s open-loop, all-in-one SQLite",
                     f"p99 {p99:.2f} ms at {open_loop['throughput_rps']:,.0f} req/s", p99 < 10))
    base = run_of(summary, "baseline", "query")
    for scenario, floor in (("all-in-one", 0.6), ("three-processes", 0.55)):
        suite = run_of(summary, scenario, "query")
        if base and suite:
            ratio = suite["throughput_rps"] / base["throughput_rps"]
            rows.append((f"query throughput >= {floor}x the no-RPC baseline ({scenario})", f"{ratio:.2f}x",
                         ratio >= floor))
    for target, scenario, reference, limit in (
            ("default settings (no exporter) vs OpenTelemetry off, all-in-one: within 3%",
             "all-in-one", "all-in-one-otel-off", 0.03),
            ("default settings (no exporter) vs OpenTelemetry off, 3 processes: within 3%",
             "three-processes", "otel-off", 0.03),
            ("every span exported over OTLP vs OpenTelemetry off: within 15%", "otlp-export", "otel-off", 0.15),
            ("10% of traces sampled and exported vs OpenTelemetry off: within 5%",
             "otlp-sampled", "otel-off", 0.05),
            ("Nacos vs static discovery costs < 3% throughput", "nacos", "three-processes", 0.03),
            ("governance with the default rules vs governance off costs < 3%",
             "all-in-one", "governance-off", 0.03)):
        run, ref = run_of(summary, scenario, "query"), run_of(summary, reference, "query")
        if run and ref:
            cost = 1 - run["throughput_rps"] / ref["throughput_rps"]
            rows.append((target, f"{-cost * 100:+.1f}%", cost < limit))
    tls, plain = run_of(summary, "three-processes", "query"), run_of(summary, "three-processes-plaintext", "query")
    if tls and plain:
        cost = 1 - tls["throughput_rps"] / plain["throughput_rps"]
        rows.append(("mutual TLS on every gRPC hop vs plaintext, 3 processes (no target)",
                     f"{-cost * 100:+.1f}%", None))
    capacity, _ = login_capacity(summary)
    for scenario, what, goal in (("overload", "with fixed limits", ">= 90% of capacity served, bounded p99"),
                                 ("overload-off", "governance off", "(no target)"),
                                 ("overload-adaptive", "adaptive concurrency",
                                  ">= 95% served, p99 of successes < 100 ms, no limit tuned")):
        run = run_of(summary, scenario, "login-overload")
        if capacity and run:
            share = run["ok_throughput_rps"] / capacity
            p99 = run["ok_latency_ms"]["p99"]
            met = {"overload": share >= 0.9, "overload-off": None,
                   "overload-adaptive": share >= 0.95 and p99 < 100}[scenario]
            rows.append((f"logins at 3x capacity, {what}: {goal}",
                         f"{share * 100:.0f}% served, p99 of successes {p99:,.0f} ms", met))
    # Per service: the processes of the three-process scenarios (the
    # all-in-one holds all three services in one process).
    services = [p for s in summary["scenarios"] for p in s["processes"]
                if p["name"] in ("user-service", "note-service", "api-gateway")]
    if services:
        peak = max(p["peak_rss_mb"] for p in services)
        idle = max(p["idle_rss_mb"] for p in services)
        ready = max(p["ready_ms"] for p in services)
        rows.append((f"each service < {SERVICES_TARGET_PEAK_MB} MB RSS at peak load", f"max {peak:.1f} MB",
                     peak < SERVICES_TARGET_PEAK_MB))
        rows.append((f"each service < {SERVICES_TARGET_IDLE_MB} MB RSS idle", f"max {idle:.1f} MB",
                     idle < SERVICES_TARGET_IDLE_MB))
        rows.append(("ready in < 1 s from start", f"max {ready:.0f} ms", ready < 1000))
    return rows


def markdown(summary):
    out = [f"Run of {summary['date']}, commit `{summary['commit']}`, on {summary['machine']}.", ""]
    out += ["**Where we stand against the targets** (query-path ratios from each scenario's median round; "
            "on 2 shared cores, differences of a few percent between runs are still noise, so read the "
            "3% and 5% rows with that in mind):", "",
            "| target | measured | met |", "|---|---|---|"]
    verdict = {True: "yes", False: "**no**", None: "(reference)"}
    out += [f"| {t} | {m} | {verdict[ok]} |" for t, m, ok in targets(summary)]

    base = run_of(summary, "baseline", "query")
    out += ["", "**Query path**, closed-loop (first page of 10 notes, with author names; each scenario "
            "run in every round, started afresh; the median round is shown, the rounds' req/s beside it):", "",
            "| scenario | concurrency | req/s | rounds | vs baseline | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms "
            "| errors |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary["scenarios"]:
        run = run_of(summary, s["name"], "query")
        if run:
            ratio = f"{run['throughput_rps'] / base['throughput_rps']:.2f}x" if base else "–"
            rounds = " / ".join(f"{rps:,.0f}" for rps in rounds_of(summary, s["name"], "query"))
            out.append(f"| {s['title']} | {run['concurrency']} | {run['throughput_rps']:,.0f} | {rounds} | {ratio} | "
                       f"{percentiles(run['latency_ms'])} | {errors(run)} |")

    out += ["", "**Default mix** (80% query, 10% create, 5% update, 5% login), closed-loop:", "",
            "| scenario | req/s | p50 ms | p99 ms | query p99 | create p99 | update p99 | login p99 | errors |",
            "|---|---|---|---|---|---|---|---|---|"]
    for s in summary["scenarios"]:
        run = run_of(summary, s["name"], "mix")
        if run:
            per = {op: v["latency_ms"]["p99"] for op, v in run["per_op"].items()}
            out.append(f"| {s['title']} | {run['throughput_rps']:,.0f} | {fmt(run['latency_ms']['p50'])} | "
                       f"{fmt(run['latency_ms']['p99'])} | {fmt(per.get('query'))} | {fmt(per.get('create'))} | "
                       f"{fmt(per.get('update'))} | {fmt(per.get('login'))} | {errors(run)} |")

    open_loop = run_of(summary, "all-in-one", "query-open")
    if open_loop:
        out += ["", f"**Open-loop**, all-in-one, query at {open_loop['rate']:,} req/s scheduled (latency from each "
                "request's scheduled start, so queueing counts):", "",
                "| achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | late starts | errors |",
                "|---|---|---|---|---|---|---|---|",
                f"| {open_loop['throughput_rps']:,.0f} | {percentiles(open_loop['latency_ms'])} | "
                f"{open_loop['late_starts']} | {errors(open_loop)} |"]

    capacity, capacity_runs = login_capacity(summary)
    overloads = [(s["title"], run_of(summary, s["name"], "login-overload")) for s in summary["scenarios"]]
    overloads = [(title, run) for title, run in overloads if run]
    if capacity and overloads:
        measured = " and ".join(f"{run['ok_throughput_rps']:,.0f}" for run in capacity_runs)
        out += ["", f"**Overload**, all-in-one, logins only: capacity {capacity:,.0f} req/s (closed-loop at "
                f"concurrency {capacity_runs[0]['concurrency']}, below the shedding limits, before and after "
                f"the overload runs: {measured}), then open-loop at three times the first "
                "(latency from each request's scheduled start):", "",
                "| scenario | offered req/s | served req/s | of capacity | p50 ms (served) | p99 ms (served) | "
                "p99 ms (all) | answers |", "|---|---|---|---|---|---|---|---|"]
        for title, run in overloads:
            served = run["ok_throughput_rps"]
            out.append(f"| {title} | {run['rate']:,} | {served:,.0f} | "
                       f"{served / capacity * 100:.0f}% | {fmt(run['ok_latency_ms']['p50'])} | "
                       f"{fmt(run['ok_latency_ms']['p99'])} | {fmt(run['latency_ms']['p99'])} | {errors(run)} |")

    out += ["", "**Processes** (ready: from spawn to answering its health check; idle: RSS a second later; "
            "peak: VmHWM after all the scenario's runs; CPU: user + system seconds over the scenario):", "",
            "| scenario | process | ready ms | idle RSS MB | peak RSS MB | CPU s |", "|---|---|---|---|---|---|"]
    for s in summary["scenarios"]:
        for p in s["processes"]:
            out.append(f"| {s['title']} | {p['name']} | {p['ready_ms']:.0f} | {p['idle_rss_mb']:.1f} | "
                       f"{p['peak_rss_mb']:.1f} | {p['cpu_s']:.1f} |")
    out += ["", "![Query throughput as a share of the no-RPC baseline against the targets, and CPU per 1,000 requests by process](benchmarks.svg)"]
    return "\n".join(out)


# The query-path throughput targets as a share of the no-RPC baseline.
RATIO_TARGETS = {"all-in-one": 0.6, "three-processes": 0.55}
PROCESS_COLORS = {"api-gateway": "#4c78a8", "note-service": "#f58518", "user-service": "#54a24b",
                  "easy-note": "#b279a2", "baseline": "#9d9d9d"}


def query_rows(summary):
    """(title, name, closed-loop query run) of every scenario with one, baseline first."""
    rows = [(s["title"], s["name"], run_of(summary, s["name"], "query")) for s in summary["scenarios"]]
    return [row for row in rows if row[2]]


def cpu_per_1000(scenario):
    """{process: CPU ms per 1,000 requests} over all the scenario's runs (preparation
    and warm-up included, so an upper bound)."""
    requests = sum(run["requests"] for run in scenario["runs"])
    return {p["name"]: p["cpu_s"] * 1000 / requests * 1000 for p in scenario["processes"]} if requests else {}


def svg(summary):
    """Two panels: query throughput as a share of the no-RPC baseline, with
    the targets marked; and CPU per 1,000 requests, stacked by process."""
    rows = query_rows(summary)
    base = next((run for _, name, run in rows if name == "baseline"), None)
    label_w, bar_w, row_h = 260, 400, 22
    ratio_rows = [(title, name, run) for title, name, run in rows if name != "baseline"] if base else []
    # Only scenarios made of the query rounds alone compare: the others
    # also ran the mix or an open-loop run, whose CPU is in their totals.
    cpu_rows = [(s["title"], cpu_per_1000(s)) for s in summary["scenarios"]
                if s["runs"] and all(run["label"].endswith("/query") for run in s["runs"])]
    top1 = 64
    top2 = top1 + row_h * len(ratio_rows) + 80
    width, height = label_w + bar_w + 150, top2 + row_h * len(cpu_rows) + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="10" y="20" font-size="14" font-weight="bold">Benchmarks of {html.escape(summary["date"])}, '
             f'commit {html.escape(summary["commit"])}</text>']
    if ratio_rows:
        scale = max(1.0, max(run["throughput_rps"] / base["throughput_rps"] for _, _, run in ratio_rows))
        parts.append(f'<text x="10" y="{top1 - 22}" font-weight="bold">Query throughput as a share of the no-RPC '
                     f'baseline ({base["throughput_rps"]:,.0f} req/s), closed loop; dashed: the targets</text>')
        for i, (title, name, run) in enumerate(ratio_rows):
            y = top1 + i * row_h
            ratio = run["throughput_rps"] / base["throughput_rps"]
            target = RATIO_TARGETS.get(name)
            color = "#9d9d9d" if target is None else ("#54a24b" if ratio >= target else "#e45756")
            w = ratio / scale * bar_w
            parts.append(f'<text x="10" y="{y + 14}">{html.escape(title)}</text>'
                         f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="14" fill="{color}"/>'
                         f'<text x="{label_w + bar_w + 8}" y="{y + 14}" font-size="11">{ratio:.2f}x '
                         f'({run["throughput_rps"]:,.0f} req/s)</text>')
        bottom = top1 + row_h * len(ratio_rows)
        for i, (name, target) in enumerate(RATIO_TARGETS.items()):
            x = label_w + target / scale * bar_w
            parts.append(f'<line x1="{x:.1f}" y1="{top1 - 4}" x2="{x:.1f}" y2="{bottom}" '
                         f'stroke="black" stroke-dasharray="4 3"/>'
                         f'<text x="{x:.1f}" y="{bottom + 14 + i * 13}" font-size="10" text-anchor="middle">'
                         f'{target:.2f}x target: {html.escape(name)}</text>')
        parts.append(f'<text x="10" y="{bottom + 14}" font-size="10">green: target met; red: not met; '
                     'grey: no target</text>')
    if cpu_rows:
        scale = max(sum(cpu.values()) for _, cpu in cpu_rows) or 1
        parts.append(f'<text x="10" y="{top2 - 22}" font-weight="bold">CPU ms per 1,000 requests, by process '
                     '(scenarios of the three query rounds alone; preparation included)</text>')
        shown = [name for name in PROCESS_COLORS if any(name in cpu for _, cpu in cpu_rows)]
        for i, name in enumerate(shown):
            parts.append(f'<rect x="{label_w + i * 95}" y="{top2 - 14}" width="10" height="10" '
                         f'fill="{PROCESS_COLORS[name]}"/><text x="{label_w + i * 95 + 14}" y="{top2 - 5}" '
                         f'font-size="10">{name}</text>')
        for i, (title, cpu) in enumerate(cpu_rows):
            y = top2 + 6 + i * row_h
            x = label_w
            parts.append(f'<text x="10" y="{y + 14}">{html.escape(title)}</text>')
            for name, ms in sorted(cpu.items(), key=lambda item: list(PROCESS_COLORS).index(item[0])
                                   if item[0] in PROCESS_COLORS else 99):
                w = ms / scale * bar_w
                parts.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="14" '
                             f'fill="{PROCESS_COLORS.get(name, "#333")}"><title>{html.escape(name)}: '
                             f'{ms:.0f} ms</title></rect>')
                x += w
            parts.append(f'<text x="{x + 4:.1f}" y="{y + 14}" font-size="11">{sum(cpu.values()):,.0f}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def publish(summary, docs_dir):
    path = os.path.join(docs_dir, "benchmarks.md")
    text = open(path, encoding="utf-8").read()
    if BEGIN not in text or END not in text:
        sys.exit(f"{path} lacks the {BEGIN} … {END} markers")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{head}{BEGIN}\n{markdown(summary)}\n{END}{tail}")
    with open(os.path.join(docs_dir, "benchmarks.svg"), "w", encoding="utf-8") as f:
        f.write(svg(summary))
    print(f"updated {path} and benchmarks.svg")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    publish(json.load(open(sys.argv[1])), os.path.join(root, "docs"))
