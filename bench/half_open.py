"""Half-sent requests against api-gateway builds, side by side.

For each gateway binary given: start it alone on port 0 (its services need
not run: nothing here reaches them), read its RSS, open N connections that
each send a request line and part of a header and then nothing more, read
its RSS a second later, wait until WAIT seconds after the last connection
opened, and count the connections the gateway still holds open; then its
RSS again, and whether /ping still answers on a new connection.

  scripts/py bench/half_open.py BEFORE_BINARY AFTER_BINARY [--connections 3000] [--wait 35]

Prints one Markdown table row per binary (docs/benchmarks.md).
"""

import argparse
import errno
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HALF_SENT = b"GET /v1/note/query HTTP/1.1\r\nHost: gateway\r\nX-Slow: "


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def start(binary, workdir):
    addr_file = os.path.join(workdir, "addr.json")
    env = dict(os.environ)
    env.update({
        "EASYNOTE_HTTP_ADDR": "127.0.0.1:0",
        "EASYNOTE_ADDR_FILE": addr_file,
        # Static discovery to nothing: no request here reaches a service.
        "EASYNOTE_USER_ADDRS": "127.0.0.1:9",
        "EASYNOTE_NOTE_ADDRS": "127.0.0.1:9",
        "RUST_LOG": "error",
        "OTEL_SDK_DISABLED": "true",
    })
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(workdir, "gateway.log"), "w"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with open(addr_file) as f:
                addr = json.load(f)["http"]
            if ping(addr):
                return proc, addr
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    proc.kill()
    sys.exit(f"{binary} did not start; see {workdir}/gateway.log")


def ping(addr):
    try:
        with urllib.request.urlopen(f"http://{addr}/ping", timeout=5) as reply:
            return reply.status == 200
    except OSError:
        return False


def still_open(sock):
    """True while the peer has neither closed nor reset the connection (a
    connection refused with an answer is read to its end first)."""
    try:
        while True:
            if sock.recv(65536, socket.MSG_DONTWAIT) == b"":
                return False
    except BlockingIOError:
        return True
    except OSError as err:
        if err.errno in (errno.ECONNRESET, errno.EPIPE):
            return False
        raise


def measure(binary, connections, wait):
    with tempfile.TemporaryDirectory() as workdir:
        proc, addr = start(binary, workdir)
        try:
            host, port = addr.rsplit(":", 1)
            time.sleep(1)
            before = rss_mb(proc.pid)
            socks = []
            for _ in range(connections):
                sock = socket.create_connection((host, int(port)))
                sock.sendall(HALF_SENT)
                socks.append(sock)
            opened = time.monotonic()
            time.sleep(1)
            holding = rss_mb(proc.pid)
            time.sleep(max(0.0, opened + wait - time.monotonic()))
            left = sum(still_open(s) for s in socks)
            after = rss_mb(proc.pid)
            answers = ping(addr)
            for sock in socks:
                sock.close()
            return before, holding, after, left, answers
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--wait", type=float, default=35.0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    print(f"| build | RSS before | RSS 1 s after opening {args.connections} | "
          f"RSS {args.wait:.0f} s after | still open after {args.wait:.0f} s | /ping then |")
    print("|---|---|---|---|---|---|")
    for binary in args.binaries:
        before, holding, after, left, answers = measure(binary, args.connections, args.wait)
        print(f"| `{binary}` | {before:.1f} MB | {holding:.1f} MB | {after:.1f} MB | "
              f"{left} of {args.connections} | {'200' if answers else 'no answer'} |", flush=True)


if __name__ == "__main__":
    main()
