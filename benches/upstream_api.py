"""Upstream's freezer-api 19.0.0 (PyPI) under gunicorn with SQLAlchemy on SQLite, set up in a
work folder and started on a free loopback port: shared by the benchmark (benches/api.py) and
the tests that run our clients against upstream's API (tests/service/).

Two ways to authenticate, as upstream's paste pipeline allows:
  * without keystonemiddleware (`keystone=None`): the API trusts the identity headers
    keystonemiddleware would set (X-Identity-Status: Confirmed, X-Project-Id, X-User-Id,
    X-Roles); a request without them is 401. What the benchmark measures (it favours upstream).
  * with keystonemiddleware (`keystone=Keystone(...)`): the `authtoken` filter validates every
    X-Auth-Token against that Keystone v3 with a service user, as upstream is deployed.

Only the standard library; the virtual environment must hold `freezer-api==19.0.0` and
`gunicorn` (`ensure_venv` installs them from PyPI when missing).
"""
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ["freezer-api==19.0.0", "gunicorn"]


class UpstreamError(RuntimeError):
    """Upstream's API could not be set up or started; the message holds its log's tail."""


@dataclass
class Keystone:
    """The Keystone keystonemiddleware validates tokens against, and its service user (who
    must be allowed to validate other users' tokens: admin or service role)."""
    auth_url: str
    username: str
    password: str
    project_name: str


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def venv_ready(venv):
    venv = Path(venv)
    return (venv / "bin" / "gunicorn").exists() and (venv / "bin" / "freezer-manage").exists()


def ensure_venv(venv):
    """Makes `venv` and installs upstream's API and gunicorn from PyPI when missing (~30 s)."""
    venv = Path(venv)
    if not venv_ready(venv):
        print(f"  installing {' and '.join(PACKAGES)} from PyPI ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q",
                        "--disable-pip-version-check", *PACKAGES], check=True)
    return venv


def _private(path, text):
    path.write_text(text)
    path.chmod(0o600)


def _configure(venv, work, keystone):
    paste = next(venv.glob("etc/freezer/freezer-paste.ini")).read_text()
    if keystone is None:
        paste = paste.replace("versionsNegotiator authtoken context", "versionsNegotiator context")
    (work / "paste.ini").write_text(paste)
    conf = (f"[DEFAULT]\nlog_file = {work / 'freezer-api-app.log'}\n"
            f"[storage]\ndriver = sqlalchemy\nbackend = sqlalchemy\n"
            f"[database]\nconnection = sqlite:///{work / 'upstream.db'}\n"
            f"[paste_deploy]\nconfig_file = {work / 'paste.ini'}\n")
    if keystone is not None:
        conf += (f"[keystone_authtoken]\nwww_authenticate_uri = {keystone.auth_url}\n"
                 f"auth_url = {keystone.auth_url}\nauth_type = password\n"
                 f"username = {keystone.username}\npassword = {keystone.password}\n"
                 f"project_name = {keystone.project_name}\n"
                 "user_domain_name = Default\nproject_domain_name = Default\n"
                 "service_token_roles_required = false\n")
    # The service user's password is in it: the owner's only.
    _private(work / "freezer-api.conf", conf)
    return work / "freezer-api.conf"


def _tail(log):
    try:
        return Path(log).read_text(errors="replace")[-3000:]
    except OSError as e:
        return f"(no log: {e})"


class UpstreamApi:
    """A running upstream freezer-api; `stop()` ends it (also as a context manager)."""

    def __init__(self, proc, base, log, work):
        self.proc = proc
        self.base = base
        self.log = log
        self.work = work

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def logs(self):
        return _tail(self.log) + "\n" + _tail(self.work / "freezer-api-app.log")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start(venv, work, workers=1, keystone=None, timeout=60):
    """Configures upstream's API in `work` (its SQLite database created with `freezer-manage db
    sync`), starts it under gunicorn with `workers` sync workers, and waits until it answers.
    Raises UpstreamError, with the log's tail, when it cannot start."""
    venv, work = Path(venv), Path(work)
    if not venv_ready(venv):
        raise UpstreamError(f"{venv} holds no freezer-api and gunicorn "
                            f"(pip install {' '.join(PACKAGES)})")
    work.mkdir(parents=True, exist_ok=True)
    conf = _configure(venv, work, keystone)
    sync = subprocess.run([str(venv / "bin" / "freezer-manage"), "--config-file", str(conf),
                           "db", "sync"], capture_output=True, text=True)
    if sync.returncode != 0:
        raise UpstreamError(f"freezer-manage db sync failed:\n{sync.stdout}{sync.stderr}")
    (work / "upstream_wsgi.py").write_text(
        "import sys\n"
        f"sys.argv = ['freezer-api', '--config-file', {str(conf)!r}]\n"
        "from freezer_api.service import initialize_app\n"
        "application = initialize_app()\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = work / "upstream.log"
    proc = subprocess.Popen(
        [str(venv / "bin" / "gunicorn"), "-w", str(workers), "-b", f"127.0.0.1:{port}",
         "--chdir", str(work), "--log-level", "warning", "upstream_wsgi:application"],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    api = UpstreamApi(proc, base, log, work)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise UpstreamError(f"upstream freezer-api (gunicorn) exited with "
                                f"{proc.returncode}; its log:\n{api.logs()}")
        try:
            with urllib.request.urlopen(base + "/", timeout=1):
                return api
        except urllib.error.HTTPError:
            return api  # it answers (a 401 without credentials is an answer)
        except OSError:
            time.sleep(0.1)
    api.stop()
    raise UpstreamError(f"upstream freezer-api did not answer at {base} within {timeout} s; "
                        f"its log:\n{api.logs()}")


def trusted_headers(project, user="bench", roles="member"):
    """The identity headers upstream trusts when it runs without keystonemiddleware."""
    return {"X-Identity-Status": "Confirmed", "X-Project-Id": project, "X-User-Id": user,
            "X-Roles": roles, "Accept": "application/json", "Content-Type": "application/json"}

