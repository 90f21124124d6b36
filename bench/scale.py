"""Notes at scale (issue 24): `easy-note-bench scale` against the
all-in-one on SQLite and on MySQL/MariaDB.

For each backend a fresh database and a fresh `easy-note` (release build,
development settings, no TLS between its parts: one process) are started;
the bench registers one owner, loads their notes straight into the
database and times the query route at each size (see bench/src/scale.rs).
A second run loads 9,999 other owners with 100 notes each and times an
owner of 100 notes among them. Deadlines are lifted (RULES below) so that
the slow paths are timed, not cut off.

  scripts/py bench/scale.py                                  sqlite and mysql, 10k/100k/1M
  scripts/py bench/scale.py --backends sqlite --sizes 10000,100000
  scripts/py bench/scale.py --binary path/to/earlier/easy-note --label before

Results: bench/results/<UTC time>-scale/<backend>[.users].json and a table
on stdout. MySQL: EASYNOTE_BENCH_MYSQL_URL (default
mysql://root@127.0.0.1:3306/test; its user creates databases).
"""

import argparse
import datetime
import os
import subprocess
import tempfile

import suite  # scripts/suite.py (on PYTHONPATH through scripts/py)

JWT_SECRET = "scale-bench-secret-0123456789abcdef0123456789"

# The default deadlines (3 s a request, 1 s a call) would answer the slow
# paths (a deep offset at 1M notes, MariaDB's scans) 503 and end the run:
# lifted to 60 s, one attempt a call, so that every path is timed.
RULES = """{
  "gateway": {"timeouts_ms": {"*": 60000}},
  "clients": {"easy-note-note": {"*": {"timeout_ms": 60000, "retry": {"max_attempts": 1}}},
              "easy-note-user": {"*": {"timeout_ms": 60000, "retry": {"max_attempts": 1}}}}
}
"""


def measure(workdir, backend, binary, bench, label, sizes, others, out_dir):
    group = suite.Group(os.path.join(workdir, f"{label}-{backend}-{'users' if others else 'one'}"))
    os.makedirs(group.workdir)
    if backend == "sqlite":
        database = f"sqlite://{group.workdir}/easy-note.db"
    else:
        url = os.environ.get("EASYNOTE_BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
        database = suite.recreate_database(url, "easynote_bench_scale")
    rules = os.path.join(group.workdir, "rules.json")
    with open(rules, "w") as f:
        f.write(RULES)
    env = {"PATH": os.environ.get("PATH", ""), "RUST_LOG": "warn", "EASYNOTE_JWT_SECRET": JWT_SECRET,
           "EASYNOTE_DATABASE_URL": database, "EASYNOTE_GOVERNANCE_FILE": rules}
    try:
        _, addrs = suite.start_service(group, "easy-note", "all", env, binary=binary)
        name = f"{backend}{'.users' if others else ''}"
        argv = [bench, "scale", "--url", f"http://{addrs['http']}", "--database-url", database,
                "--sizes", sizes, "--label", f"{label}/{name}", "--out", os.path.join(out_dir, f"{label}.{name}.json")]
        if others:
            argv += ["--other-users", str(others), "--notes-each", "100"]
        subprocess.run(argv, check=True)
    finally:
        group.stop_all()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,mysql")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--mysql-sizes", help="sizes on MySQL (default: --sizes)")
    parser.add_argument("--other-users", type=int, default=9999, help="0: skip the many-owners run")
    parser.add_argument("--build", default=suite.RELEASE,
                        help="directory of easy-note and easy-note-bench (default: the release build)")
    parser.add_argument("--binary", help="the easy-note to measure (default: the one in --build)")
    parser.add_argument("--label", default="after")
    args = parser.parse_args()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = os.path.join(suite.ROOT, "bench", "results", f"{stamp}-scale")
    os.makedirs(out_dir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="easy-note-scale-")
    print("label/backend | notes | first page | deep offset | deep cursor | rare search | common search | create | db size")
    for backend in args.backends.split(","):
        sizes = args.mysql_sizes if backend == "mysql" and args.mysql_sizes else args.sizes
        binary = os.path.abspath(args.binary or os.path.join(args.build, "easy-note"))
        bench = os.path.abspath(os.path.join(args.build, "easy-note-bench"))
        measure(workdir, backend, binary, bench, args.label, sizes, 0, out_dir)
        if args.other_users:
            measure(workdir, backend, binary, bench, args.label, "100", args.other_users, out_dir)
    print(f"results in {out_dir}")


if __name__ == "__main__":
    main()
