"""Upstream's freezer-scheduler (PyPI freezer==19.0.0) runs a job with this project's
freezer-agent, in its no-API mode: the job file in the jobs folder is read at start, the
scheduler writes the action as an INI `[action]` section and runs
`freezer-agent --metadata-out - --config <file>` found on PATH, and parses its stdout as the
backup metadata. The backup must then restore with our agent.

Needs upstream's venv (FREEZER_UPSTREAM_VENV, default target/upstream-agent:
`python3 -m venv target/upstream-agent && target/upstream-agent/bin/pip install freezer==19.0.0`);
missing, the test fails.
"""

import json
import os
import signal
import subprocess
import time

import pytest

from agent_base import ROOT, TempTree, agent_binary, require


def test_upstream_scheduler_runs_our_agent(tmp_path):
    require("diff")
    venv = os.environ.get("FREEZER_UPSTREAM_VENV", os.path.join(ROOT, "target", "upstream-agent"))
    scheduler = os.path.join(venv, "bin", "freezer-scheduler")
    if not os.path.isfile(scheduler):
        pytest.fail(f"upstream's freezer-scheduler not found at {scheduler}: install freezer==19.0.0 in {venv}")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(agent_binary(), bindir / "freezer-agent")
    src = TempTree()
    src.add_random_data(ndir=2, nfile=3)
    storage = tmp_path / "storage"
    restored = tmp_path / "restored"
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    job = {
        "job_id": "agent-compat-1",
        "description": "our agent under upstream's scheduler",
        "job_actions": [{
            "freezer_action": {
                "action": "backup",
                "mode": "fs",
                "path_to_backup": src.path,
                "backup_name": "sched",
                "container": str(storage),
                "storage": "local",
                "engine_name": "native",
            },
            "max_retries": 0,
        }],
        "job_schedule": {},
    }
    (jobs / "job_agent-compat-1.conf").write_text(json.dumps(job))
    env = dict(os.environ)
    env["PATH"] = f"{bindir}:{env.get('PATH', '')}"
    env.update({"OS_AUTH_URL": "http://127.0.0.1:1/v3", "OS_USERNAME": "u", "OS_PASSWORD": "p",
                "OS_PROJECT_NAME": "p", "HOME": str(tmp_path)})
    log = tmp_path / "scheduler.log"
    proc = subprocess.Popen(
        [scheduler, "--no-api", "--no-daemon", "-f", str(jobs), "-i", "1",
         "--capabilities-supported-engines", "tar,native", "--log-file", str(log), "start"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.time() + 60
        done = False
        while time.time() < deadline and proc.poll() is None:
            text = log.read_text() if log.exists() else ""
            if "returned success exit code" in text or "failed after" in text:
                done = True
                break
            time.sleep(0.5)
        text = log.read_text() if log.exists() else ""
        assert done, f"the job did not finish in 60 s; scheduler log:\n{text}"
        assert "Job agent-compat-1 action backup returned success exit code" in text, text
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    r = subprocess.run(
        [str(bindir / "freezer-agent"), "--action", "restore", "--restore-abs-path", str(restored),
         "--container", str(storage), "--storage", "local", "--backup-name", "sched",
         "--engine", "native"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    d = subprocess.run(["diff", "-r", "-q", src.path, str(restored)], capture_output=True, text=True)
    assert d.returncode == 0, d.stdout + d.stderr
    src.cleanup()
