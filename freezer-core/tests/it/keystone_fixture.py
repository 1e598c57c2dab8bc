"""A real Keystone (Debian's `keystone` package) on loopback, for the swift tests.

Usage: python3 keystone_fixture.py DIR PORT SWIFT_PORT ADMIN_PASSWORD USER_PASSWORD

Sets up a SQLite database (db_sync, bootstrap), fernet keys, a project `freezer-test` with a
user `freezer` (role `member`) and an `object-store` service whose endpoints point at the Swift
proxy on SWIFT_PORT (RegionOne, public and internal) and at a closed port (RegionTwo), then
serves Keystone's own WSGI application. It writes DIR/ready when it answers, and appends the
user name of every POST /v3/auth/tokens to DIR/token-requests.log.
"""

import base64
import io
import json
import os
import subprocess
import sys
import threading
import urllib.request
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

base, port, swift_port, admin_pw, user_pw = sys.argv[1:6]
port = int(port)
sys.argv = sys.argv[:1]
url = "http://127.0.0.1:%d/v3" % port
conf = os.path.join(base, "keystone.conf")
with open(conf, "w") as f:
    f.write(
        "[DEFAULT]\nuse_stderr = true\n"
        "[database]\nconnection = sqlite:///%(b)s/keystone.db\n"
        "[token]\nprovider = fernet\n"
        "[fernet_tokens]\nkey_repository = %(b)s/fernet-keys\n"
        "[fernet_receipts]\nkey_repository = %(b)s/fernet-receipts\n"
        "[credential]\nkey_repository = %(b)s/credential-keys\n" % {"b": base}
    )
# What `keystone-manage fernet_setup` and `credential_setup` write: a staged key 0 and a
# primary key 1, in folders only the owner reads.
for d in ("fernet-keys", "fernet-receipts", "credential-keys"):
    path = os.path.join(base, d)
    os.makedirs(path, mode=0o700, exist_ok=True)
    for name in ("0", "1"):
        with open(os.path.join(path, name), "wb") as f:
            f.write(base64.urlsafe_b64encode(os.urandom(32)))
        os.chmod(os.path.join(path, name), 0o600)


def manage(*args):
    subprocess.run(
        ["keystone-manage", "--config-file", conf, *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(base, "keystone-manage.log"), "a"),
    )


manage("db_sync")
manage(
    "bootstrap",
    "--bootstrap-password", admin_pw,
    "--bootstrap-admin-url", url,
    "--bootstrap-public-url", url,
    "--bootstrap-internal-url", url,
    "--bootstrap-region-id", "RegionOne",
)
# Readers must not block writers: one connection may sit in a read transaction.
import sqlite3  # noqa: E402

db = sqlite3.connect(os.path.join(base, "keystone.db"))
db.execute("PRAGMA journal_mode=WAL")
db.close()

os.environ["OS_KEYSTONE_CONFIG_FILES"] = conf
from keystone.server.wsgi import initialize_public_application  # noqa: E402

keystone = initialize_public_application()
log = os.path.join(base, "token-requests.log")
lock = threading.Lock()


def app(environ, start_response):
    """Keystone, noting who asks for a token."""
    if environ["REQUEST_METHOD"] == "POST" and environ["PATH_INFO"].endswith("/auth/tokens"):
        n = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(n)
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            who = json.loads(body)["auth"]["identity"]["password"]["user"].get("name", "?")
        except Exception:
            who = "?"
        with lock, open(log, "a") as f:
            f.write(who + "\n")
    return keystone(environ, start_response)


class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


server = make_server("127.0.0.1", port, app, server_class=Server, handler_class=Quiet)


def call(method, path, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, method=method, data=data)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    with urllib.request.urlopen(req) as r:
        text = r.read()
        return r.headers, json.loads(text) if text else None


def setup():
    h, _ = call("POST", "/auth/tokens", {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"name": "Default"}, "password": admin_pw}}},
        "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}})
    t = h["X-Subject-Token"]
    _, p = call("POST", "/projects", {"project": {"name": "freezer-test", "domain_id": "default"}}, t)
    _, u = call("POST", "/users", {"user": {
        "name": "freezer", "domain_id": "default", "password": user_pw}}, t)
    _, roles = call("GET", "/roles?name=member", None, t)
    call("PUT", "/projects/%s/users/%s/roles/%s" % (
        p["project"]["id"], u["user"]["id"], roles["roles"][0]["id"]), None, t)
    _, s = call("POST", "/services", {"service": {"type": "object-store", "name": "swift"}}, t)
    call("POST", "/regions", {"region": {"id": "RegionTwo"}}, t)
    good = "http://127.0.0.1:%s/v1/AUTH_$(project_id)s" % swift_port
    for region, interface, endpoint in [
        ("RegionOne", "public", good),
        ("RegionOne", "internal", good),
        ("RegionTwo", "public", "http://127.0.0.1:1/v1/AUTH_$(project_id)s"),
    ]:
        call("POST", "/endpoints", {"endpoint": {
            "service_id": s["service"]["id"], "interface": interface,
            "region_id": region, "url": endpoint}}, t)
    with open(os.path.join(base, "ready.tmp"), "w") as f:
        json.dump({"project_id": p["project"]["id"], "user_id": u["user"]["id"]}, f)
    os.rename(os.path.join(base, "ready.tmp"), os.path.join(base, "ready"))


def setup_or_stop():
    try:
        setup()
    except BaseException as e:
        with open(os.path.join(base, "failed"), "w") as f:
            f.write(repr(e))
        os._exit(1)


threading.Thread(target=setup_or_stop, daemon=True).start()
server.serve_forever()
