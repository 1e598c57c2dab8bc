"""freezer_py.run_job: a job document from Python, its reports, and bad documents."""
import json
import os
import signal
import threading
import time

import pytest

import freezer_py


def backup_job(data, repo, **extra):
    return {
        "job_id": "py-job-1",
        "client_id": "test_node1",
        "job_actions": [
            {"freezer_action": {"action": "backup", "path_to_backup": str(data),
                                "backup_name": "py", "hostname": "node1", **extra},
             "max_retries": 1, "max_retries_interval": 1},
            {"freezer_action": {"action": "exec", "command": "printf '%s' 'done here'"}},
        ],
        "action_defaults": {"container": str(repo)},
    }


def test_a_job_runs_each_action_and_reports(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n")
    reports = freezer_py.run_job(backup_job(data, tmp_path / "repo"))
    assert [r["action"] for r in reports] == ["backup", "exec"]
    assert all(r["complete"] and r["attempts"] == 1 and not r["cancelled"] for r in reports)
    meta = reports[0]["backup_metadata"]
    assert meta["job_id"] == "py-job-1"
    assert meta["hostname"] == "node1" and meta["backup_name"] == "py"
    assert meta["total_fs_files"] == 1
    assert meta["container"] == str(tmp_path / "repo")
    assert reports[1]["stdout_tail"] == "done here"
    # The same document as a JSON string.
    again = freezer_py.run_job(json.dumps(backup_job(data, tmp_path / "repo")))
    assert again[0]["snapshot"]["level"] == 1


def test_a_failing_action_is_reported_not_raised(tmp_path):
    reports = freezer_py.run_job({"job_actions": [
        {"freezer_action": {"action": "exec", "command": "sh -c 'exit 4'"}, "mandatory": True},
        {"freezer_action": {"action": "exec", "command": "true"}},
    ]})
    assert len(reports) == 1, "a mandatory failure stops the job"
    assert "exited with status 4" in reports[0]["error"]
    assert reports[0]["complete"] is False


def test_exec_can_be_refused(tmp_path):
    reports = freezer_py.run_job(
        {"job_actions": [{"freezer_action": {"action": "exec", "command": "true"}}]},
        allow_exec=False)
    assert "--disable-exec" in reports[0]["error"]


@pytest.mark.parametrize("doc, field", [
    ('{"job_actions": [', "malformed JSON"),
    ({"job_actions": [{"freezer_action": {"action": "exec", "command": "true", "comand": "x"}}]},
     "job_actions[0].freezer_action.comand"),
    ({"job_actions": [{"freezer_action": {"action": "exec", "command": "true"}}],
      "session_tag": "one"}, "session_tag"),
    ({"job_actions": [{"freezer_action": {"action": "exec", "command": "true"},
                       "max_retries": [1]}]}, "job_actions[0].max_retries"),
    ({"job_actions": [{"freezer_action": {"action": "exec", "command": "echo 'open"}}]},
     "command"),
    ({"job_actions": []}, "job_actions"),
])
def test_bad_documents_raise_naming_the_field(doc, field):
    with pytest.raises(freezer_py.BadInputError) as e:
        freezer_py.run_job(doc)
    assert field in str(e.value)


def test_unknown_names_can_be_allowed(tmp_path):
    doc = {"job_actions": [{"freezer_action": {"action": "exec", "command": "true",
                                               "comand": "x"}}]}
    reports = freezer_py.run_job(doc, allow_unknown_options=True)
    assert reports[0]["complete"]
    assert any("comand" in w for w in reports[0]["warnings"])


def test_not_a_document():
    with pytest.raises(ValueError):
        freezer_py.run_job(42)


def test_ctrl_c_cancels_the_running_action(tmp_path):
    pidfile = tmp_path / "pid"
    doc = {"job_actions": [{"freezer_action": {
        "action": "exec", "command": f"sh -c 'echo $$ > {pidfile}; exec sleep 30'"}}]}
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        freezer_py.run_job(doc)
    assert time.monotonic() - started < 5
    pid = int(pidfile.read_text())
    for _ in range(50):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split()[2] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"sleep {pid} still runs")
