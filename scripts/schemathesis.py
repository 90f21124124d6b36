"""The gateway's OpenAPI document (/openapi.json) against a live suite, with
schemathesis: generated requests on every route, within a time budget.

  scripts/py scripts/schemathesis.py [--max-time SECONDS]   (default 120)

The release `easy-note` runs as deployed: production mode, mutual TLS
between its services (certificates and a JWT key from `easy-note
dev-certs`), on a fresh SQLite database. A user is registered and logged
in; schemathesis gets the token and checks that
  - no request gets a 5xx (not_a_server_error),
  - every answer's status, content type, headers and body are the ones the
    document gives for that route (status_code_conformance,
    content_type_conformance, response_headers_conformance,
    response_schema_conformance),
  - a route that needs the token refuses a request without it or with a
    wrong one (ignored_auth).
`POST /v1/user/logout` revokes the token it is given, so it is driven last,
in a short run of its own with a second token, after the other routes.
Then the suite must stop cleanly on SIGTERM.

schemathesis is pinned in scripts/requirements.txt, which scripts/py
installs on first use. Exit code 0 only when every check passed.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request

import suite  # scripts/suite.py (beside this script)

# Driven in a run of its own (it revokes the run's token), for this long.
LOGOUT = "/v1/user/logout"
LOGOUT_TIME = 15
CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "ignored_auth"]


def schemathesis():
    """The schemathesis executable: scripts/requirements.txt pins it, and
    scripts/py runs this script in the virtualenv that has it."""
    exe = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    if not os.path.exists(exe):
        sys.exit(f"{exe} is missing: run this script as `scripts/py scripts/schemathesis.py`")
    return exe


def post(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-time", type=int, default=120, help="schemathesis's time budget in seconds")
    args = parser.parse_args()
    if not os.path.exists(suite.EASY_NOTE):
        sys.exit(f"{suite.EASY_NOTE} is missing: cargo build --release --locked --workspace")
    exe = schemathesis()

    workdir = tempfile.mkdtemp(prefix="easy-note-schemathesis-")
    certs = os.path.join(workdir, "certs")
    subprocess.run([suite.EASY_NOTE, "dev-certs", "--out", certs, "--all-in-one", "--jwt-secret"], check=True,
                   stdout=subprocess.DEVNULL)
    env = {
        "PATH": os.environ.get("PATH", ""), "RUST_LOG": "warn", "EASYNOTE_ENV": "production",
        "EASYNOTE_DATABASE_URL": f"sqlite://{workdir}/easy-note.db",
        "EASYNOTE_JWT_SECRET_FILE": os.path.join(certs, "jwt-secret"),
        "EASYNOTE_TLS_CA": os.path.join(certs, "ca.pem"),
        "EASYNOTE_TLS_CERT": os.path.join(certs, "easy-note.pem"),
        "EASYNOTE_TLS_KEY": os.path.join(certs, "easy-note.key"),
    }
    group = suite.Group(workdir)
    try:
        child, addrs = suite.start_service(group, "easy-note", "all", env)
        base = f"http://{addrs['http']}"
        credentials = {"username": "schemathesis", "password": "generated-requests"}
        post(f"{base}/v1/user/register", credentials)
        token = post(f"{base}/v1/user/login", credentials)["data"]["token"]
        # One worker: with two, hypothesis describing its strategies from
        # two threads at once trips CPython 3.11's `ast` ("AST constructor
        # recursion depth mismatch"), a runtime error of the tool itself.
        # Logout revokes the token every other route is driven with, so it
        # gets a run of its own, last, with a token of its own.
        runs = [(["--exclude-path", LOGOUT], args.max_time, token),
                (["--include-path", LOGOUT], LOGOUT_TIME,
                 post(f"{base}/v1/user/login", credentials)["data"]["token"])]
        result = None
        for selection, max_time, run_token in runs:
            command = [exe, "run", f"{base}/openapi.json", "--checks", ",".join(CHECKS),
                       *selection, "--max-time", str(max_time), "--workers", "1", "--seed", "1",
                       "--header", f"Authorization: Bearer {run_token}"]
            print("schemathesis run", f"{base}/openapi.json", "--checks", ",".join(CHECKS),
                  *selection, "--max-time", max_time, flush=True)
            # Without scripts/py's PYTHONPATH: there, this file would stand
            # in for the schemathesis package.
            tool_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            result = subprocess.run(command, cwd=workdir, env=tool_env)  # its own files (.schemathesis/) go there
            if result.returncode != 0:
                break
        stopped = [(c.name, code) for c, code in group.stop_all() if code != 0]
        if stopped:
            print(f"schemathesis: the suite did not stop cleanly: {stopped}\n{child.tail()}", file=sys.stderr)
            sys.exit(1)
        if result.returncode != 0:
            print(f"schemathesis: failed (exit {result.returncode}); the suite's log:\n{child.tail()}",
                  file=sys.stderr)
            sys.exit(result.returncode)
        print("schemathesis: every check passed")
    finally:
        group.stop_all()


if __name__ == "__main__":
    main()
