"""Runs the shell code blocks of a Markdown document, as written, in order.

Only blocks preceded by an annotation comment run; the others are prose.

    <!-- run -->                              the next ```sh block runs; it must exit 0
    <!-- run: expect=TEXT|TEXT reject=TEXT --> ...and its output must (not) contain each TEXT
    <!-- run: background ready=URL name=N --> the next block starts in the background (a
                                             terminal of its own); the following steps wait
                                             until URL answers 200
    <!-- run: stop name=N -->                 background block N (default: the latest) gets
                                             Ctrl-C (SIGINT) and must exit cleanly

All foreground blocks share one bash session (variables carry over), run
with `set -euo pipefail` from the repository root. Background blocks run in
a process group of their own, stopped at the end. The environment may be
adjusted by the caller (e.g. EASYNOTE_DATABASE_URL to keep data out of the
checkout); the commands are never rewritten.

usage: scripts/py scripts/run-doc.py FILE [--timeout SECONDS] [--dry-run] [--skip-background]
"""

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time

import suite  # scripts/suite.py (beside this script)

ANNOTATION = re.compile(r"<!--\s*run(?::\s*(?P<args>.*?))?\s*-->")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")


def parse(path):
    """The steps of the document: (kind, options, code, line)."""
    lines = open(path, encoding="utf-8").read().splitlines()
    steps, pending, i = [], None, 0
    while i < len(lines):
        match = ANNOTATION.search(lines[i])
        if match:
            options = {}
            for word in shlex.split(match.group("args") or ""):
                key, _, value = word.partition("=")
                options[key] = value
            if "stop" in options or (match.group("args") or "").startswith("stop"):
                steps.append(("stop", options, "", i + 1))
            else:
                pending = (options, i + 1)
            i += 1
            continue
        fence = FENCE.match(lines[i])
        if fence and pending is not None:
            body, j = [], i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                body.append(lines[j])
                j += 1
            options, line = pending
            kind = "background" if "background" in options else "run"
            steps.append((kind, options, "\n".join(body) + "\n", line))
            pending, i = None, j + 1
            continue
        i += 1
    if pending is not None:
        sys.exit(f"{path}:{pending[1]}: annotation without a code block after it")
    return steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--timeout", type=float, default=1800, help="bound on the whole document")
    parser.add_argument("--dry-run", action="store_true", help="list the steps only")
    parser.add_argument(
        "--skip-background",
        action="store_true",
        help="skip background and stop steps: run the rest against servers already running",
    )
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    steps = parse(args.file)
    if args.skip_background:
        steps = [step for step in steps if step[0] == "run"]
    if not steps:
        sys.exit(f"{args.file}: no annotated blocks")
    if args.dry_run:
        for kind, options, code, line in steps:
            print(f"{args.file}:{line}: {kind} {options}\n{code}")
        return 0

    deadline = time.time() + args.timeout
    workdir = tempfile.mkdtemp(prefix="run-doc-")
    state = os.path.join(workdir, "state.sh")
    open(state, "w").close()
    backgrounds = suite.Group(workdir)  # one child per background step, named after its line
    names = {}  # name -> Child

    def stop_all():
        suite.stop_all([child for child in backgrounds.children if not child.stopped], timeout=20)

    def fail(line, message, output=""):
        stop_all()
        print(backgrounds.logs(chars=4000), file=sys.stderr)
        if output:
            print(output[-6000:], file=sys.stderr)
        sys.exit(f"FAILED {args.file}:{line}: {message}")

    try:
        for kind, options, code, line in steps:
            print(f"==> {args.file}:{line} ({kind})", flush=True)
            if kind == "stop":
                if not backgrounds.children:
                    fail(line, "nothing to stop")
                name = options.get("name")
                if name and name not in names:
                    fail(line, f"no background step named {name!r}")
                child = names[name] if name else backgrounds.children[-1]
                status = child.stop(timeout=60, sig=signal.SIGINT)
                if child.killed:
                    fail(line, "did not stop within 60 s of Ctrl-C")
                if status != 0:
                    fail(line, f"stopped with exit status {status}")
                continue
            if kind == "background":
                child = backgrounds.spawn(
                    f"background-line{line}",
                    ["bash", "-c", f"set -euo pipefail\nsource {shlex.quote(state)}\n{code}"],
                    cwd=root,
                )
                if options.get("name"):
                    names[options["name"]] = child
                ready = options.get("ready")
                if ready:
                    try:
                        backgrounds.wait_for(f"{ready} answering 200", lambda: suite.http_ok(ready),
                                             timeout=max(1, deadline - time.time()), interval=0.5)
                    except suite.Failure as failure:
                        fail(line, failure.summary)
                continue
            # A foreground step: run it with the variables of the steps before,
            # then keep the variables it set for the steps after.
            script = (
                "set -euo pipefail\n"
                f"source {shlex.quote(state)}\n"
                f"{code}\n"
                f"declare -p | grep -E '^declare -[-x]+ [A-Za-z_][A-Za-z0-9_]*=' "
                f"| grep -vE ' (BASH|SHELL|PWD|OLDPWD|SHLVL|_)[A-Za-z_]*=' > {shlex.quote(state)}.next || true\n"
            )
            try:
                result = subprocess.run(
                    ["bash", "-c", script],
                    cwd=root,
                    capture_output=True,
                    text=True,
                    timeout=max(1, deadline - time.time()),
                )
            except subprocess.TimeoutExpired:
                fail(line, "timed out")
            output = result.stdout + result.stderr
            print(output, end="" if output.endswith("\n") else "\n")
            if result.returncode != 0:
                fail(line, f"exit status {result.returncode}", output)
            for text in filter(None, options.get("expect", "").split("|")):
                if text not in output:
                    fail(line, f"output lacks {text!r}", output)
            for text in filter(None, options.get("reject", "").split("|")):
                if text in output:
                    fail(line, f"output contains {text!r}", output)
            if os.path.exists(state + ".next"):
                os.replace(state + ".next", state)
    finally:
        stop_all()
    label = re.sub(r"\W", "", os.path.splitext(os.path.basename(args.file))[0]) or "doc"
    print(f"{label}: {len(steps)} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
