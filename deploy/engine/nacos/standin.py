"""Stand-in for nacos/nacos-server:v2.4.3: rnacos behind Nacos's HTTP API.

rnacos (the Nacos-compatible registry the tests use) serves the services'
gRPC on 9848 and the naming and configuration API on 18848. This program
answers on 8848 what rnacos lacks, and passes everything else through:

    GET  /nacos/v1/console/health/readiness      200 once rnacos answers
    POST /nacos/v1/auth/users/admin              the admin's password, once
    POST /nacos/v1/auth/login                    users of this stand-in
    POST /nacos/v1/auth/users, /roles, /permissions   recorded (admin token)
    GET  /nacos/prometheus/namespaceId/{ns}/service/{name}
                                                 Prometheus HTTP SD targets

Users, roles and permissions are kept in the data volume (data/standin),
so a `down` then `up` keeps the passwords and a `down -v` forgets them, as
Nacos's own database does. A login that matches a user returns an access
token of rnacos's own admin, which rnacos then checks on every gRPC and
HTTP call, so a wrong password or no login is refused as Nacos would.
Permissions are recorded, never enforced: least privilege is not proven
here. rnacos 0.8 sometimes panics in its raft apply on a first start (every
request then answers "Mailbox has closed"); that is noticed and rnacos is
started again, from an empty data directory again when this was its first
start and it has not answered a readiness check yet (the half-applied start
can leave it without its admin, refusing every login for good; nothing
else is stored yet).

Reads NACOS_AUTH_ENABLE, as the image does; the Java options are ignored.
"""

import hashlib
import http.server
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HOME = "/home/nacos"
DATA = os.path.join(HOME, "data")
STATE = os.path.join(DATA, "standin")
RNACOS = "http://127.0.0.1:18848"
AUTH = os.environ.get("NACOS_AUTH_ENABLE", "false").lower() == "true"
LOCK = threading.Lock()


def log(*args):
    print("nacos-standin:", *args, file=sys.stderr, flush=True)


def load(name, default):
    try:
        with open(os.path.join(STATE, name)) as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def save(name, value):
    path = os.path.join(STATE, name)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.replace(path + ".tmp", path)


def hashed(password, salt):
    return hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), 100_000).hex()


class Rnacos:
    """rnacos as a child process, restarted when it panics or dies."""

    def __init__(self):
        os.makedirs(STATE, exist_ok=True)
        # rnacos's own admin: known only inside this container.
        admin = load("rnacos-admin.json", None)
        if admin is None:
            admin = {"username": "standin-admin", "password": secrets.token_hex(16)}
            save("rnacos-admin.json", admin)
        self.admin = admin
        self.child = None
        self.broken = threading.Event()
        # A first start (no data yet) that has not answered a readiness
        # check: a panic then leaves nothing worth keeping.
        self.fresh = not os.listdir(os.path.join(DATA, "rnacos")) if os.path.isdir(
            os.path.join(DATA, "rnacos")) else True
        self.answered = False

    def start(self):
        env = dict(os.environ, RNACOS_HTTP_PORT="18848", RNACOS_GRPC_PORT="9848",
                   RNACOS_HTTP_CONSOLE_PORT="0", RNACOS_SDK_HOST="0.0.0.0",
                   RNACOS_DATA_DIR=os.path.join(DATA, "rnacos"), RUST_LOG="warn")
        if AUTH:
            env.update(RNACOS_ENABLE_OPEN_API_AUTH="true",
                       RNACOS_INIT_ADMIN_USERNAME=self.admin["username"],
                       RNACOS_INIT_ADMIN_PASSWORD=self.admin["password"])
        self.broken.clear()
        self.child = subprocess.Popen(["/usr/local/bin/rnacos"], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, errors="replace")
        threading.Thread(target=self.watch, args=(self.child,), daemon=True).start()

    def watch(self, child):
        for line in child.stdout:
            sys.stderr.write(line)
            if "panicked" in line:
                self.broken.set()
        self.broken.set()

    def supervise(self):
        while True:
            self.start()
            while not self.broken.wait(1):
                if self.mailbox_closed():
                    self.broken.set()
            log("rnacos panicked or exited; starting it again")
            self.child.kill()
            self.child.wait()
            if self.fresh and not self.answered:
                log("its first start never answered: starting it from an empty data directory")
                shutil.rmtree(os.path.join(DATA, "rnacos"), ignore_errors=True)
            time.sleep(1)

    def mailbox_closed(self):
        try:
            self.request("GET", "/nacos/v1/ns/instance/list?serviceName=standin-probe", token=True)
        except urllib.error.HTTPError as err:
            return b"Mailbox" in err.read()
        except OSError:
            return False
        return False

    def token(self):
        body = urllib.parse.urlencode(self.admin).encode()
        with urllib.request.urlopen(RNACOS + "/nacos/v1/auth/login", body, timeout=5) as response:
            return json.load(response)["accessToken"]

    def request(self, method, path, body=None, headers=None, token=False):
        if token and AUTH:
            path += ("&" if "?" in path else "?") + "accessToken=" + urllib.parse.quote(self.token())
        req = urllib.request.Request(RNACOS + path, data=body, method=method, headers=headers or {})
        return urllib.request.urlopen(req, timeout=10)


RN = Rnacos()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else (
            json.dumps(body) if content_type == "application/json" else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def form(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urllib.parse.urlsplit(self.path)
        fields = dict(urllib.parse.parse_qsl(url.query))
        fields.update(urllib.parse.parse_qsl(raw.decode()))
        return url.path, fields, raw

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_PUT(self):
        self.route("PUT")

    def do_DELETE(self):
        self.route("DELETE")

    def route(self, method):
        path, fields, raw = self.form()
        try:
            if path == "/nacos/v1/console/health/readiness":
                RN.request("GET", "/nacos/v1/ns/instance/list?serviceName=standin-probe", token=True).read()
                RN.answered = True
                return self.reply(200, "OK", "text/plain")
            if path.startswith("/nacos/v1/auth/"):
                return self.auth(method, path[len("/nacos/v1/auth/"):], fields)
            if path.startswith("/nacos/prometheus/namespaceId/"):
                return self.prometheus(path)
            return self.forward(method, raw)
        except (OSError, urllib.error.URLError) as err:
            return self.reply(503, f"rnacos is not answering: {err}", "text/plain")

    def auth(self, method, what, fields):
        with LOCK:
            users = load("users.json", {})
            if what == "users/admin" and method == "POST":
                if "nacos" in users:
                    return self.reply(409, "have admin user cannot use it", "text/plain")
                salt = secrets.token_hex(8)
                users["nacos"] = {"salt": salt, "hash": hashed(fields.get("password", ""), salt), "admin": True}
                save("users.json", users)
                return self.reply(200, {"username": "nacos", "password": "(as given)"})
            if what == "login" and method == "POST":
                user = users.get(fields.get("username", ""))
                if not user or hashed(fields.get("password", ""), user["salt"]) != user["hash"]:
                    return self.reply(403, "user not found!", "text/plain")
                token = RN.token()
                tokens = load("tokens.json", {})
                tokens[token] = fields["username"]
                save("tokens.json", tokens)
                return self.reply(200, {"accessToken": token, "tokenTtl": 18000,
                                        "globalAdmin": bool(user.get("admin"))})
            caller = load("tokens.json", {}).get(fields.get("accessToken", ""))
            if not caller or not users.get(caller, {}).get("admin"):
                return self.reply(403, "authorization failed!", "text/plain")
            if what == "users" and method == "POST":
                name = fields.get("username", "")
                if not name or name in users:
                    return self.reply(400, f"user '{name}' already exist!", "text/plain")
                salt = secrets.token_hex(8)
                users[name] = {"salt": salt, "hash": hashed(fields.get("password", ""), salt)}
                save("users.json", users)
                return self.reply(200, {"code": 200, "message": "create user ok!"})
            if what in ("roles", "permissions") and method == "POST":
                grants = load("grants.json", [])
                grants.append({what: fields})
                save("grants.json", grants)
                return self.reply(200, {"code": 200, "message": f"add {what} ok!"})
            return self.reply(404, f"the stand-in does not serve {method} /nacos/v1/auth/{what}", "text/plain")

    def prometheus(self, path):
        parts = path.split("/")  # '', nacos, prometheus, namespaceId, ns, service, name
        if len(parts) != 7 or parts[5] != "service":
            return self.reply(404, "not found", "text/plain")
        query = urllib.parse.urlencode({"serviceName": parts[6], "namespaceId": parts[4]})
        hosts = json.load(RN.request("GET", "/nacos/v1/ns/instance/list?" + query, token=True))["hosts"]
        targets = [{"targets": [f"{h['ip']}:{h['port']}"],
                    "labels": {"__meta_clusterName": h.get("clusterName", ""), "__meta_serviceName": parts[6]}}
                   for h in hosts if h.get("healthy", True)]
        return self.reply(200, targets)

    def forward(self, method, raw):
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        try:
            response = RN.request(method, self.path, body=raw if raw else None, headers=headers)
        except urllib.error.HTTPError as err:
            response = err
        body = response.read()
        return self.reply(response.status, body, response.headers.get("Content-Type", "text/plain"))


def main():
    threading.Thread(target=RN.supervise, daemon=True).start()
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 8848), Handler)
    log(f"serving on 8848 (rnacos on 18848 and gRPC 9848), auth {'on' if AUTH else 'off'}")
    try:
        server.serve_forever()
    finally:
        RN.child.terminate()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main()
