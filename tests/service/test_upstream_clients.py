"""Upstream's own clients against our API: python-freezerclient 6.5.0 (the `freezer` CLI of
OpenStack) and upstream's freezer-scheduler (PyPI freezer 19.0.0), both unmodified, logging in
through the API's standalone identity (`OS_AUTH_URL=http://HOST:PORT/identity/v3`).

Each command is checked against what the API then holds, read back over HTTP with a token.
test.sh installs both packages in their own virtual environments (both name a console script
`freezer`) and passes their paths in FREEZER_CLIENT_BIN and FREEZER_SCHEDULER_BIN.
"""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
OURS = pathlib.Path(os.environ.get("FREEZER_RS_BIN", ROOT / "target/debug/freezer"))
CLIENT = os.environ.get("FREEZER_CLIENT_BIN")
SCHEDULER = os.environ.get("FREEZER_SCHEDULER_BIN")
NOCLOUD = ROOT / "tests/upstream/nocloud"

PASSWORDS = {
    "alice": "alice-secret-1",
    "carol": "carol-secret-1",
    "bob": "bob-secret-1",
    "root": "root-secret-1",
}


def need(path, what):
    # A missing tool fails loudly: these tests are never skipped.
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"{what} is missing ({path!r}); run ./test.sh, which installs it")
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    def __init__(self, url, log):
        self.url = url
        self.log = log
        self.auth_url = f"{url}/identity/v3"
        self._tokens = {}

    def login(self, user):
        if user not in self._tokens:
            body = {
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {
                                "name": user,
                                "domain": {"name": "Default"},
                                "password": PASSWORDS[user],
                            }
                        },
                    },
                    "scope": {
                        "project": {
                            "name": PROJECTS[user],
                            "domain": {"name": "Default"},
                        }
                    },
                }
            }
            r = requests.post(f"{self.auth_url}/auth/tokens", json=body, timeout=10)
            assert r.status_code == 201, r.text
            self._tokens[user] = (
                r.headers["X-Subject-Token"],
                r.json()["token"]["project"]["id"],
            )
        return self._tokens[user]

    def project(self, user):
        return self.login(user)[1]

    def get(self, user, path):
        token, project = self.login(user)
        r = requests.get(
            f"{self.url}/v2/{project}/{path}",
            headers={"X-Auth-Token": token, "Accept": "application/json"},
            timeout=10,
        )
        return r

    def post(self, user, path, body):
        token, project = self.login(user)
        return requests.post(
            f"{self.url}/v2/{project}/{path}",
            headers={"X-Auth-Token": token},
            json=body,
            timeout=10,
        )


PROJECTS = {"alice": "alpha", "carol": "alpha", "bob": "beta", "root": "admin"}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    need(str(OURS), "the freezer binary (cargo build)")
    d = tmp_path_factory.mktemp("api")
    users = [
        {"user": "alice", "password": PASSWORDS["alice"], "project": "alpha", "roles": ["member"]},
        {"user": "carol", "password": PASSWORDS["carol"], "project": "alpha", "roles": ["reader"]},
        {"user": "bob", "password": PASSWORDS["bob"], "project": "beta", "roles": ["member"]},
        {"user": "root", "password": PASSWORDS["root"], "project": "admin", "roles": ["admin"]},
    ]
    users_file = d / "users.json"
    users_file.write_text(json.dumps(users))
    users_file.chmod(0o600)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(d / "api.log", "w")
    proc = subprocess.Popen(
        [
            str(OURS), "api", "serve",
            "--listen", f"127.0.0.1:{port}",
            "--database", f"sqlite:{d / 'api.db'}",
            "--users", str(users_file),
            "--token-key", str(d / "token.key"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 30
    while True:
        try:
            if requests.get(f"{url}/healthcheck", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            log.flush()
            pytest.fail("the API did not start:\n" + (d / "api.log").read_text())
        time.sleep(0.1)
    yield Api(url, d / "api.log")
    proc.terminate()
    assert proc.wait(timeout=10) == 0, (d / "api.log").read_text()
    # No password and no token reached the log.
    text = (d / "api.log").read_text()
    for p in PASSWORDS.values():
        assert p not in text


def cli(api, user, *args, password=None, check=True):
    """Runs python-freezerclient's `freezer` as `user`; returns the parsed JSON output."""
    client = need(CLIENT, "python-freezerclient's freezer CLI")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "OS_AUTH_URL": api.auth_url,
        "OS_USERNAME": user,
        "OS_PASSWORD": password or PASSWORDS[user],
        "OS_PROJECT_NAME": PROJECTS[user],
        "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_NAME": "Default",
    }
    r = subprocess.run([client, *args], env=env, capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, f"freezer {' '.join(args)}: {r.stderr}{r.stdout}"
    return r


def as_json(r):
    return json.loads(r.stdout)


def write(tmp_path, name, doc):
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return str(p)


def register(api, tmp_path, user, host):
    client_id = f"{api.project(user)}_{host}"
    f = write(tmp_path, f"client-{host}.json", {
        "client_id": client_id,
        "hostname": host,
        "description": f"{host} of {user}",
    })
    out = as_json(cli(api, user, "client-register", "--file", f, "-f", "json"))
    return client_id, out


JOB = {
    "description": "nightly etc",
    "job_actions": [
        {
            "freezer_action": {
                "action": "backup",
                "mode": "fs",
                "backup_name": "etc",
                "path_to_backup": "/etc/hostname",
                "container": "/tmp/freezer-test-container",
                "storage": "local",
            },
            "max_retries": 2,
            "max_retries_interval": 1,
        }
    ],
    "job_schedule": {"schedule_interval": "1 days"},
}


def test_client_register_then_show_list_and_delete(api, tmp_path):
    client_id, _ = register(api, tmp_path, "alice", "node-a")
    held = api.get("alice", f"clients/{client_id}")
    assert held.status_code == 200, held.text
    assert held.json()["client"]["client_id"] == client_id
    assert held.json()["client"]["hostname"] == "node-a"
    shown = as_json(cli(api, "alice", "client-show", client_id, "-f", "json"))
    assert client_id in json.dumps(shown)
    listed = as_json(cli(api, "alice", "client-list", "-f", "json"))
    assert client_id in json.dumps(listed)
    # Another project neither sees nor reaches it.
    assert client_id not in json.dumps(as_json(cli(api, "bob", "client-list", "-f", "json")))
    assert api.get("bob", f"clients/{client_id}").status_code == 404


def test_job_create_list_show_and_events(api, tmp_path):
    client_id, _ = register(api, tmp_path, "alice", "node-j")
    f = write(tmp_path, "job.json", JOB)
    created = as_json(cli(api, "alice", "job-create", "--file", f, "--client", client_id, "-f", "json"))
    job_id = created.get("Job ID") or created.get("job_id")
    assert job_id, created
    held = api.get("alice", f"jobs/{job_id}")
    assert held.status_code == 200, held.text
    job = held.json()
    assert job["client_id"] == client_id
    assert job["description"] == "nightly etc"
    assert job["job_actions"][0]["freezer_action"]["backup_name"] == "etc"
    assert job["job_schedule"]["schedule_interval"] == "1 days"
    assert job["job_schedule"]["time_created"] > 0
    listed = cli(api, "alice", "job-list", "-f", "json").stdout
    assert job_id in listed
    shown = cli(api, "alice", "job-show", job_id, "-f", "json").stdout
    assert job_id in shown
    for event in ("start", "stop", "abort"):
        cli(api, "alice", f"job-{event}", job_id)
        now = api.get("alice", f"jobs/{job_id}").json()
        assert now["job_schedule"]["event"] == event, now
    # Bob (another project) cannot see, start or delete it.
    assert job_id not in cli(api, "bob", "job-list", "-f", "json").stdout
    r = cli(api, "bob", "job-start", job_id, check=False)
    assert r.returncode != 0
    assert api.get("alice", f"jobs/{job_id}").json()["job_schedule"]["event"] == "abort"
    # Carol (a reader of the same project) reads but cannot write.
    assert job_id in cli(api, "carol", "job-list", "-f", "json").stdout
    r = cli(api, "carol", "job-stop", job_id, check=False)
    assert r.returncode != 0
    r = cli(api, "carol", "job-create", "--file", f, "--client", client_id, check=False)
    assert r.returncode != 0
    assert "allowed" in (r.stderr + r.stdout).lower() or "403" in (r.stderr + r.stdout)


def test_action_create_is_held(api, tmp_path):
    f = write(tmp_path, "action.json", {
        "freezer_action": {"action": "backup", "backup_name": "docs", "path_to_backup": "/usr/share/doc",
                           "container": "/tmp/c", "storage": "local", "mode": "fs"},
        "max_retries": 3,
        "max_retries_interval": 7,
    })
    out = cli(api, "alice", "action-create", "--file", f, "-f", "json")
    created = as_json(out)
    action_id = created.get("Action ID") or created.get("action_id")
    assert action_id, created
    held = api.get("alice", f"actions/{action_id}").json()
    assert held["freezer_action"]["backup_name"] == "docs"
    assert held["max_retries"] == 3
    assert held["max_retries_interval"] == 7
    assert action_id in cli(api, "alice", "action-list", "-f", "json").stdout
    assert api.get("bob", f"actions/{action_id}").status_code == 404


def test_session_create_add_job_and_start(api, tmp_path):
    client_id, _ = register(api, tmp_path, "alice", "node-s")
    job_id = api.post("alice", "jobs", dict(JOB, client_id=client_id)).json()["job_id"]
    f = write(tmp_path, "session.json", {
        "description": "together",
        "schedule": {"schedule_interval": "2 days"},
        "hold_off": 5,
    })
    created = as_json(cli(api, "alice", "session-create", "--file", f, "-f", "json"))
    session_id = created.get("Session ID") or created.get("session_id")
    assert session_id, created
    cli(api, "alice", "session-add-job", "--session-id", session_id, "--job-id", job_id)
    session = api.get("alice", f"sessions/{session_id}").json()
    assert job_id in session["jobs"], session
    job = api.get("alice", f"jobs/{job_id}").json()
    assert job["session_id"] == session_id
    assert job["job_schedule"]["schedule_interval"] == "2 days"
    tag = session["session_tag"]
    cli(api, "alice", "session-start", "--session-id", session_id, "--job-id", job_id, "--job-tag", str(tag))
    session = api.get("alice", f"sessions/{session_id}").json()
    assert session["session_tag"] == tag + 1, session
    assert session["status"] == "running"
    assert session["jobs"][job_id]["status"] == "running"


def test_backup_list_shows_posted_metadata(api, tmp_path):
    meta = {"container": "/tmp/c", "hostname": "node-b", "backup_name": "etc",
            "curr_backup_level": 0, "time_stamp": 1764900000, "path_to_backup": "/etc"}
    r = api.post("alice", "backups", meta)
    assert r.status_code == 201, r.text
    backup_id = r.json()["backup_id"]
    # Its table (`-f json` fails inside python-freezerclient 6.5.0 itself: it cannot write the
    # datetime it makes of `time_stamp` as JSON).
    listed = cli(api, "alice", "backup-list").stdout
    assert backup_id in listed
    assert "node-b" in listed
    assert backup_id not in cli(api, "bob", "backup-list").stdout


def test_a_wrong_password_is_refused(api):
    r = cli(api, "alice", "job-list", password="not-her-password", check=False)
    assert r.returncode != 0
    assert "not-her-password" not in r.stderr + r.stdout


def test_upstream_scheduler_registers_and_runs_a_job(api, tmp_path):
    scheduler = need(SCHEDULER, "upstream's freezer-scheduler")
    agent = pathlib.Path(scheduler).with_name("freezer-agent")
    need(str(agent), "upstream's freezer-agent")
    host = "sched-node"
    client_id = f"{api.project('alice')}_{host}"
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("hello from the upstream scheduler\n")
    container = tmp_path / "container"
    jobs_dir = tmp_path / "jobs.d"
    jobs_dir.mkdir()
    env = {
        "PATH": f"{agent.parent}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "PYTHONPATH": str(NOCLOUD),
        "OS_AUTH_URL": api.auth_url,
        "OS_USERNAME": "alice",
        "OS_PASSWORD": PASSWORDS["alice"],
        "OS_PROJECT_NAME": "alpha",
        "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_NAME": "Default",
    }
    log = open(tmp_path / "scheduler.log", "w")
    proc = subprocess.Popen(
        [scheduler, "--scheduler-no-daemon", "-c", client_id, "-f", str(jobs_dir), "-i", "1", "start"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )
    try:
        deadline = time.time() + 60
        while api.get("alice", f"clients/{client_id}").status_code != 200:
            assert proc.poll() is None, (tmp_path / "scheduler.log").read_text()
            assert time.time() < deadline, "the scheduler never registered:\n" + (tmp_path / "scheduler.log").read_text()
            time.sleep(0.5)
        job = {
            "description": "upstream scheduler run",
            "client_id": client_id,
            "job_actions": [{
                "freezer_action": {"action": "backup", "mode": "fs", "backup_name": "up",
                                   "path_to_backup": str(data), "container": str(container),
                                   "storage": "local"},
                "max_retries": 1, "max_retries_interval": 1,
            }],
            "job_schedule": {},
        }
        r = api.post("alice", "jobs", job)
        assert r.status_code == 201, r.text
        job_id = r.json()["job_id"]
        seen = set()
        deadline = time.time() + 90
        while True:
            doc = api.get("alice", f"jobs/{job_id}").json()
            status = doc["job_schedule"].get("status")
            seen.add(status)
            if status == "completed":
                break
            assert proc.poll() is None, (tmp_path / "scheduler.log").read_text()
            assert time.time() < deadline, f"job never completed ({seen}):\n" + (tmp_path / "scheduler.log").read_text()
            time.sleep(0.5)
        assert doc["job_schedule"]["result"] == "success", doc
        backups = api.get("alice", "backups?limit=100").json()["backups"]
        assert any(b["backup_metadata"].get("backup_name") == "up" for b in backups), backups
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
