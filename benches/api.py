#!/usr/bin/env python3
"""The freezer-api benchmark: our `freezer api serve` (SQLite, every request authenticated by a
token) against upstream's freezer-api 19.0.0 from PyPI (gunicorn, SQLite), on the same machine,
in one run, with the same load generator (`api_load`, Rust, N concurrent keep-alive clients).

    python3 benches/api.py                       # 10 s per measurement, 50 clients
    python3 benches/api.py --seconds 5 --concurrency 50 --jobs 20 --json-out r.json

Two request shapes, each against a database holding `--jobs` jobs of one registered client:
  job-list     GET  /v2/{project}/jobs/?limit=10     (what every scheduler polls)
  backup-post  POST /v2/{project}/backups/           (what every scheduler sends after a backup)

Upstream runs as its docs deploy it, under gunicorn (`--upstream-workers`, default one sync
worker per core) with SQLAlchemy on SQLite, but WITHOUT keystonemiddleware: it trusts the
identity headers (X-Identity-Status: Confirmed, X-Project-Id, X-Roles) that keystonemiddleware
would set, so it pays nothing for authentication. Ours validates a real token on every request.
That favours upstream; the ratios are a floor.

Printed: requests per second, p50/p99 latency, error responses, the API process's peak memory
(VmHWM; upstream: the sum over gunicorn's master and workers), ratios, and the targets (rate at
least 10x upstream's, p99 under 20 ms, memory under 50 MiB, zero errors) with PASS/FAIL. Exit 0
whatever the numbers; 2 when something failed to start. Only the standard library is used; the
upstream virtual environment is made in the work folder (about 30 s, PyPI).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import upstream_api  # benches/upstream_api.py, beside this script

ROOT = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None, timeout=10):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", "Accept": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def wait_up(url, proc, what, log):
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}; its log:\n{log.read_text()[-3000:]}")
        try:
            http("GET", url, timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{what} did not answer at {url} within 60 s; its log:\n{log.read_text()[-3000:]}")


def rss_kib(pid, field):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_pids(pid):
    """pid and its descendants (gunicorn's workers)."""
    out = [pid]
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.extend(tree_pids(int(p.name)))
    return out


def peak_mib(pid):
    return sum(rss_kib(p, "VmHWM") for p in tree_pids(pid)) / 1024


def load(tool, url, headers, method="GET", body=None, args=None):
    cmd = [str(tool), "--url", url, "--method", method, "--concurrency", str(args.concurrency),
           "--seconds", str(args.seconds), "--warmup", "1"]
    for k, v in headers.items():
        cmd += ["--header", f"{k}: {v}"]
    if body is not None:
        cmd += ["--body", json.dumps(body)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def backup_body(i=0):
    return {"container": "/srv/backups", "hostname": "node1", "backup_name": "etc",
            "time_stamp": 1700000000 + i, "curr_backup_level": 0, "level": 0,
            "path_to_backup": "/etc", "mode": "fs", "storage": "local", "action": "backup",
            "backup_size_compressed": 1048576, "backup_size_uncompressed": 4194304,
            "total_fs_files": 1234, "total_directories": 56, "encrypted": True}


def job_body(client_id, i):
    return {"description": f"job {i}", "client_id": client_id,
            "job_schedule": {"schedule_interval": "1 days"},
            "job_actions": [{"freezer_action": {
                "action": "backup", "mode": "fs", "backup_name": f"etc{i}",
                "path_to_backup": "/etc", "container": "/srv/backups", "storage": "local"},
                "max_retries": 3, "max_retries_interval": 10}]}


def populate(base, project, headers, jobs):
    client_id = f"{project}_node1"
    s, _, b = http("POST", f"{base}/v2/{project}/clients/",
                   {"client_id": client_id, "hostname": "node1"}, headers)
    if s != 201:
        sys.exit(f"client register answered {s}: {b[:500]!r}")
    for i in range(jobs):
        s, _, b = http("POST", f"{base}/v2/{project}/jobs/", job_body(client_id, i), headers)
        if s != 201:
            sys.exit(f"job create answered {s}: {b[:500]!r}")


def measure(name, base, project, headers, pid, tool, args):
    rows = {}
    rows["job-list"] = load(tool, f"{base}/v2/{project}/jobs/?limit=10", headers, args=args)
    rows["backup-post"] = load(tool, f"{base}/v2/{project}/backups/", headers, "POST",
                               backup_body(), args=args)
    mem = peak_mib(pid)
    for r in rows.values():
        r["peak_mib"] = mem
    print(f"  {name}: job-list {rows['job-list']['rps']:.0f}/s p99 "
          f"{rows['job-list']['p99_ms']:.1f} ms, backup-post {rows['backup-post']['rps']:.0f}/s "
          f"p99 {rows['backup-post']['p99_ms']:.1f} ms, peak {mem:.1f} MiB", flush=True)
    return rows


def run_ours(work, args, tool):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    users = work / "users.json"
    users.write_text(json.dumps([{"user": "bench", "password": "bench-password",
                                  "project": "bench", "roles": ["member"]}]))
    users.chmod(0o600)
    log = work / "ours.log"
    proc = subprocess.Popen(
        [str(args.freezer), "api", "serve", "--listen", f"127.0.0.1:{port}",
         "--database", f"sqlite:{work / 'ours.db'}", "--users", str(users),
         "--token-key", str(work / "token.key")],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        wait_up(base + "/", proc, "freezer api serve", log)
        s, h, b = http("POST", f"{base}/identity/v3/auth/tokens", {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "bench", "domain": {"id": "default"}, "password": "bench-password"}}},
            "scope": {"project": {"name": "bench", "domain": {"id": "default"}}}}})
        if s != 201:
            sys.exit(f"our identity endpoint answered {s}: {b[:500]!r}")
        token = h.get("X-Subject-Token") or h.get("x-subject-token")
        project = json.loads(b)["token"]["project"]["id"]
        headers = {"X-Auth-Token": token, "Accept": "application/json",
                   "Content-Type": "application/json"}
        populate(base, project, headers, args.jobs)
        return measure("ours", base, project, headers, proc.pid, tool, args)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def run_upstream(work, args, tool):
    venv = upstream_api.ensure_venv(
        Path(args.upstream_venv) if args.upstream_venv else work / "upstream-venv")
    try:
        api = upstream_api.start(venv, work, workers=args.upstream_workers, keystone=None)
    except upstream_api.UpstreamError as e:
        sys.exit(str(e))
    with api:
        project = "bench"
        headers = upstream_api.trusted_headers(project)
        populate(api.base, project, headers, args.jobs)
        return measure("upstream", api.base, project, headers, api.proc.pid, tool, args)


def build(args):
    tool = ROOT / "target" / "release" / "api_load"
    if not args.freezer.exists() or not tool.exists():
        print("  building target/release/{freezer,api_load} ...", flush=True)
        subprocess.run(["cargo", "build", "--release", "-p", "freezer-cli", "-p",
                        "freezer-benches", "--bin", "freezer", "--bin", "api_load"],
                       cwd=ROOT, check=True)
    return tool


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=10, help="jobs in the database before measuring")
    ap.add_argument("--freezer", type=Path, default=ROOT / "target" / "release" / "freezer")
    ap.add_argument("--upstream-venv", help="reuse a virtual environment holding freezer-api")
    ap.add_argument("--upstream-workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--skip-upstream", action="store_true")
    ap.add_argument("--work", help="work folder (default: a new one under /tmp, deleted)")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    tool = build(args)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="freezer-api-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"freezer-api benchmark: {args.concurrency} clients, {args.seconds:g} s per shape, "
          f"{args.jobs} jobs stored, {os.cpu_count()} cores shared by server and client")
    result = {"ours": run_ours(work, args, tool)}
    if not args.skip_upstream:
        up = work / "upstream"
        up.mkdir(exist_ok=True)
        result["upstream"] = run_upstream(up, args, tool)
    print()
    print("| shape | server | req/s | p50 ms | p99 ms | errors | peak MiB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for shape in ("job-list", "backup-post"):
        for server, rows in result.items():
            r = rows[shape]
            print(f"| {shape} | {server} | {r['rps']:.0f} | {r['p50_ms']:.2f} | "
                  f"{r['p99_ms']:.2f} | {r['errors']} | {r['peak_mib']:.1f} |")
    print()
    for shape in ("job-list", "backup-post"):
        o = result["ours"][shape]
        checks = [(f"{shape}: p99 under 20 ms at {args.concurrency} clients", o["p99_ms"] < 20),
                  (f"{shape}: zero error responses (ours)", o["errors"] == 0),
                  (f"{shape}: peak memory under 50 MiB", o["peak_mib"] < 50)]
        if "upstream" in result:
            u = result["upstream"][shape]
            ratio = o["rps"] / u["rps"] if u["rps"] else float("inf")
            print(f"{shape}: {ratio:.1f}x upstream's rate")
            checks.append((f"{shape}: at least 10x upstream's rate", ratio >= 10))
        for what, ok in checks:
            print(f"  {'PASS' if ok else 'FAIL'}  {what}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
