"""Helpers of the freezer-tempest-plugin agent tests, ported to plain pytest.

Upstream: openstack/freezer-tempest-plugin, freezer_tempest_plugin/tests/freezer/agent/base.py
and freezer_tempest_plugin/common.py (Temp_Tree). What tempest gave those tests is replaced:
no Keystone, no tempest; the OS_* variables they export are set to dummies (a compatible agent
must not need a cloud for local storage), and `freezer-agent` is found on PATH as upstream's
tests find it, pointing at this project's binary (FREEZER_AGENT_BIN, default
target/debug/freezer-agent).
"""

import json
import os
import shutil
import subprocess
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def agent_binary():
    """The freezer-agent under test; a missing one fails the test loudly."""
    path = os.environ.get("FREEZER_AGENT_BIN", os.path.join(ROOT, "target", "debug", "freezer-agent"))
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"freezer-agent not found at {path}: build it (cargo build -p freezer-cli) or set FREEZER_AGENT_BIN")
    return os.path.abspath(path)


def require(program):
    """A program the tests run (file, diff): missing, the test fails, never skips."""
    if shutil.which(program) is None:
        pytest.fail(f"{program} is not installed: the tempest agent tests need it")


class TempTree:
    """A temporary folder, optionally filled with random files (upstream's Temp_Tree)."""

    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="__freezer_")
        self.files = []

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)

    def add_random_data(self, ndir=5, nfile=5, size=1024):
        def create_file(folder):
            handle, name = tempfile.mkstemp(dir=folder)
            with os.fdopen(handle, "wb") as f:
                f.write(os.urandom(size))
            self.files.append(os.path.relpath(name, self.path))

        for _ in range(nfile):
            create_file(self.path)
        for _ in range(ndir):
            sub = tempfile.mkdtemp(dir=self.path)
            for _ in range(nfile):
                create_file(sub)


def load_metadata(path):
    with open(path, "rb") as f:
        return json.load(f)


class AgentTest:
    """What base.BaseFreezerTest gives each test: an environment, a storage tree, backups."""

    backup_name = "backup_test"

    @pytest.fixture(autouse=True)
    def _agent_setup(self, tmp_path):
        binary = agent_binary()
        bindir = tmp_path / "bin"
        bindir.mkdir()
        os.symlink(binary, bindir / "freezer-agent")
        env = dict(os.environ)
        # What get_environ() exports from tempest's primary credentials: dummies here.
        env.update({
            "OS_PASSWORD": "dummy-password",
            "OS_USERNAME": "dummy-user",
            "OS_PROJECT_NAME": "dummy-project",
            "OS_PROJECT_DOMAIN_NAME": "Default",
            "OS_USER_DOMAIN_NAME": "Default",
            "OS_AUTH_URL": env.get("OS_AUTH_URL", "http://127.0.0.1:1/identity/v3"),
        })
        env["PATH"] = f"{bindir}:/usr/local/bin:{env.get('PATH', '')}"
        self.environ = env
        self.storage = TempTree()
        self.source_trees = []
        self.backup_count = 0
        yield
        for tree in self.source_trees:
            tree.cleanup()
        self.storage.cleanup()

    def run_subprocess(self, args, fail_message):
        proc = subprocess.run(args, capture_output=True, env=self.environ, text=True)
        assert proc.returncode == 0, f"{fail_message} Output: {proc.stdout}. Error: {proc.stderr}"
        return proc

    def create_local_backup(self, hostname=None, compression=None, consistency_check=None,
                            incremental=True, always_level=None, restart_always_level=None,
                            max_level=None):
        """A backup of a new random tree into self.storage; returns the metadata file's path."""
        metadata_path = os.path.join(self.storage.path, f"metadata-{self.backup_count}.json")
        self.backup_count += 1
        tree = TempTree()
        tree.add_random_data()
        self.source_trees.append(tree)
        args = [
            "freezer-agent",
            "--path-to-backup", tree.path,
            "--container", self.storage.path,
            "--backup-name", self.backup_name,
            "--storage", "local",
            "--metadata-out", metadata_path,
        ]
        if hostname:
            args += ["--hostname", hostname]
        if compression:
            args += ["--compression", compression]
        if consistency_check:
            args += ["--consistency-check"]
        if incremental:
            if always_level is not None:
                args += ["--always-level", str(always_level)]
            if max_level is not None:
                args += ["--max-level", str(max_level)]
            if restart_always_level:
                args += ["--restart-always-level", str(restart_always_level)]
        else:
            args += ["--noincremental"]
        self.run_subprocess(args, "Test backup to local storage.")
        return metadata_path
