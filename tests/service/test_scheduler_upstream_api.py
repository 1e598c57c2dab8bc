"""Our scheduler (`freezer scheduler --api URL`) against upstream's freezer-api 19.0.0 from PyPI,
deployed as upstream deploys it: gunicorn, SQLAlchemy on SQLite, and keystonemiddleware's
`authtoken` validating every token against a Keystone v3. The Keystone here is our own
`freezer api serve`, used only for its standalone identity (/identity/v3): our scheduler logs
in to it, and keystonemiddleware validates the scheduler's token with it.

A job is created through upstream's API over plain HTTP (a local backup every 2 s); the test
then checks what upstream's API holds: the scheduler's registered client, the job's state,
result and times as the scheduler wrote them back, the backup metadata the scheduler posted,
and a `stop` event sent through upstream's API being obeyed (status `stop`, event cleared, no
more backups).

test.sh makes upstream's virtual environment (target/upstream-api, `freezer-api==19.0.0
gunicorn`) and passes it in UPSTREAM_API_VENV; our binary comes from FREEZER_RS_BIN. When
either is missing or upstream's API does not start, the test fails: it is never skipped.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benches"))
import upstream_api  # noqa: E402  (benches/upstream_api.py: shared with the benchmark)

OURS = pathlib.Path(os.environ.get("FREEZER_RS_BIN", ROOT / "target/debug/freezer"))
UPSTREAM_VENV = pathlib.Path(os.environ.get("UPSTREAM_API_VENV", ROOT / "target/upstream-api"))

PROJECT = "alpha-project-id"
ALICE_PW = "alice-upstream-secret-1"
SERVICE_PW = "freezer-service-secret-1"
CLIENT_ID = f"{PROJECT}_node-up"


def wait(what, check, timeout, logs=lambda: ""):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    pytest.fail(f"{what}: not within {timeout} s (last seen: {last!r})\n{logs()}")


def identity(tmp):
    """Our `freezer api serve`, for its /identity/v3 only; (process, URL, log path)."""
    if not os.access(OURS, os.X_OK):
        pytest.fail(f"our freezer binary is missing ({OURS}); build it (cargo build -p freezer-cli)")
    users = [
        {"user": "alice", "password": ALICE_PW, "project": "alpha", "project_id": PROJECT,
         "roles": ["member"]},
        {"user": "freezer", "password": SERVICE_PW, "project": "service", "roles": ["service"]},
    ]
    users_file = tmp / "users.json"
    users_file.write_text(json.dumps(users))
    users_file.chmod(0o600)
    port = upstream_api.free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / "identity.log"
    proc = subprocess.Popen(
        [str(OURS), "api", "serve", "--listen", f"127.0.0.1:{port}",
         "--database", f"sqlite:{tmp / 'identity.db'}", "--users", str(users_file),
         "--token-key", str(tmp / "token.key")],
        stdout=open(log, "w"), stderr=subprocess.STDOUT)

    def up():
        if proc.poll() is not None:
            pytest.fail(f"our identity exited with {proc.returncode}:\n{log.read_text()}")
        try:
            return requests.get(f"{url}/healthcheck", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    wait("our identity answers", up, 30, log.read_text)
    return proc, url, log


def login(auth_url):
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "alice", "domain": {"name": "Default"}, "password": ALICE_PW}}}}}
    r = requests.post(f"{auth_url}/auth/tokens", json=body, timeout=10)
    assert r.status_code == 201, r.text
    return r.headers["X-Subject-Token"]


class Upstream:
    """Upstream's API as alice, with a real token through keystonemiddleware."""

    def __init__(self, base, token):
        self.v2 = f"{base}/v2/{PROJECT}"
        self.headers = {"X-Auth-Token": token, "Accept": "application/json"}

    def call(self, method, path, body=None, want=200):
        r = requests.request(method, f"{self.v2}{path}", headers=self.headers,
                             data=None if body is None else json.dumps(body), timeout=10)
        assert r.status_code == want, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else {}


def test_our_scheduler_runs_jobs_of_upstreams_api(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n" * 100)
    (src / "sub" / "b.bin").write_bytes(os.urandom(4096))
    repo = tmp_path / "repo"
    stopped = []
    ident, ident_url, ident_log = identity(tmp_path)
    stopped.append(ident)
    auth_url = f"{ident_url}/identity/v3"
    sched = None
    try:
        keystone = upstream_api.Keystone(auth_url=auth_url, username="freezer",
                                         password=SERVICE_PW, project_name="service")
        try:
            up = upstream_api.start(UPSTREAM_VENV, tmp_path / "upstream", workers=1,
                                    keystone=keystone)
        except upstream_api.UpstreamError as e:
            pytest.fail(f"upstream freezer-api did not start: {e}")
        stopped.append(up)
        api = Upstream(up.base, login(auth_url))
        # keystonemiddleware refuses a request without a valid token.
        r = requests.get(f"{api.v2}/jobs", headers={"X-Auth-Token": "not-a-token"}, timeout=10)
        assert r.status_code == 401, r.text

        env = {
            "PATH": os.environ["PATH"], "HOME": str(tmp_path),
            "OS_AUTH_URL": auth_url, "OS_USERNAME": "alice", "OS_PASSWORD": ALICE_PW,
            "OS_PROJECT_NAME": "alpha", "OS_USER_DOMAIN_NAME": "Default",
            "OS_PROJECT_DOMAIN_NAME": "Default", "RUST_LOG": "info",
        }
        sched_log = tmp_path / "scheduler.log"
        sched = subprocess.Popen(
            [str(OURS), "scheduler", "--api", up.base, "--client-id", CLIENT_ID,
             "--poll-interval", "1"],
            env=env, stdout=open(sched_log, "w"), stderr=subprocess.STDOUT)

        def logs():
            return (f"--- scheduler:\n{sched_log.read_text()[-4000:]}\n"
                    f"--- upstream:\n{up.logs()}")

        # The scheduler registered its client in upstream's API.
        def registered():
            assert sched.poll() is None, f"the scheduler exited with {sched.returncode}\n{logs()}"
            clients = api.call("GET", "/clients?limit=100")["clients"]
            return [c for c in clients if c["client"]["client_id"] == CLIENT_ID]

        client = wait("the client registered", registered, 20, logs)[0]["client"]
        assert client["hostname"], client
        assert "backup" in client["supported_actions"], client

        job_id = api.call("POST", "/jobs", {
            "client_id": CLIENT_ID,
            "description": "our scheduler, upstream's API",
            "job_schedule": {"schedule_interval": "2 seconds"},
            "job_actions": [{"freezer_action": {
                "action": "backup", "mode": "fs", "storage": "local",
                "container": str(repo), "path_to_backup": str(src), "backup_name": "upb"},
                "max_retries": 1, "max_retries_interval": 1}],
        }, want=201)["job_id"]

        def backups():
            found = api.call("GET", "/backups?limit=100")["backups"]
            return [b for b in found if b["backup_metadata"].get("job_id") == job_id]

        # Two runs, each leaving its metadata in upstream's API.
        got = wait("two backups listed by upstream's API", lambda: len(backups()) >= 2 and backups(),
                   30, logs)
        meta = got[0]["backup_metadata"]
        assert (meta["backup_name"], meta["container"], meta["mode"]) == \
            ("upb", str(repo), "fs"), meta
        assert meta["hostname"] and meta["snapshot_id"], meta
        assert isinstance(meta["time_stamp"], int) and meta["time_stamp"] > 0, meta
        assert got[0]["status"] == "available", got[0]

        # The job's state as the scheduler wrote it back (between two runs).
        def between_runs():
            j = api.call("GET", f"/jobs/{job_id}")
            s = j["job_schedule"]
            return j if s.get("status") == "scheduled" and s.get("result") else None

        job = wait("the job scheduled again after a run", between_runs, 15, logs)
        s = job["job_schedule"]
        assert s["result"] == "success", job
        assert s["time_started"] > 0 and s["time_ended"] >= s["time_started"], job
        assert s.get("event", "") in ("", None), job
        assert job["client_id"] == CLIENT_ID, job

        # A stop event through upstream's API: obeyed, cleared, no more runs.
        assert api.call("POST", f"/jobs/{job_id}/event", {"stop": None},
                        want=202)["result"] == "success"

        def stopped_job():
            j = api.call("GET", f"/jobs/{job_id}")
            s = j["job_schedule"]
            return j if s.get("status") == "stop" and s.get("event", "") in ("", None) else None

        wait("the stop obeyed", stopped_job, 15, logs)
        time.sleep(1)  # a run under way when the stop came ends and reports first
        count = len(backups())
        time.sleep(5)
        assert len(backups()) == count, "backups after the stop\n" + logs()
        assert api.call("GET", f"/jobs/{job_id}")["job_schedule"]["status"] == "stop"

        sched.send_signal(signal.SIGTERM)
        assert sched.wait(20) == 0, logs()
        text = sched_log.read_text() + ident_log.read_text()
        assert ALICE_PW not in text and SERVICE_PW not in text
        assert api.headers["X-Auth-Token"] not in text
    finally:
        if sched is not None and sched.poll() is None:
            sched.kill()
        for p in reversed(stopped):
            if isinstance(p, upstream_api.UpstreamApi):
                p.stop()
            else:
                p.terminate()
                p.wait(10)
