#!/usr/bin/env python3
"""Backups to remote storages on loopback: freezer-rs against restic, and the tee.

    python3 benches/remote.py [--runs 3] [--size-mb 256] [--work DIR] [--keep-work] [--freezer PATH]
                              [--json-out FILE] [--markdown-out FILE] [--quick] [--no-swift]

One invocation makes the corpus (benches/corpus.py, seed 1) and starts, on 127.0.0.1,
the same servers the tests use: s3s-fs (S3, signatures checked), Debian's sshd (SFTP) and,
unless --no-swift, Debian's Swift proxy with tempauth. In each run it measures, with a fresh
encrypted repository per tool and target:

  s3 backup / restore      freezer and restic, the first backup of the corpus to S3 and a
                           full restore from it
  sftp backup / restore    the same over SFTP (restic runs the system's ssh client)
  tee                      freezer's first backup to one local folder, then to four storages
                           at once (local + s3 + sftp + swift; without swift, a second local
                           folder takes its place)

Each restore is compared with the corpus (contents, modes, mtimes, links). Both tools use
their defaults (freezer zstd level 1, restic "auto"). Medians of the runs are printed as
ratios; the targets of issue 3 are backup <= 0.6x and restore <= 0.7x restic's wall time, and
the four-storage tee <= 1.5x the single local backup.

Exit code 0 when every command worked, 2 when one failed (its logs stay in WORK/logs).
Only the Python standard library is used.
"""

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the runner, the tools' settings and the restore check)
from compare import CORPUS_PY, PASSPHRASE, REPO_ROOT, CommandFailed, Runner, say  # noqa: E402

S3_KEY, S3_SECRET = "bench-key", "bench-secret-not-a-secret"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, name, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{name} exited with {proc.returncode} at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{name} did not listen on port {port} within {timeout} s")


class Servers:
    """The servers of one invocation; stopped at exit."""

    def __init__(self, work):
        self.work = work
        self.procs = []

    def spawn(self, name, cmd, port, **kw):
        log = open(os.path.join(self.work, "logs", f"server-{name}.log"), "wb")
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, **kw)
        self.procs.append(p)
        wait_port(port, p, name)
        return p

    def stop(self):
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)

    def s3(self):
        tool = shutil.which("s3s-fs") or os.path.join(REPO_ROOT, "target", "tools", "bin", "s3s-fs")
        if not os.access(tool, os.X_OK):
            subprocess.run(["cargo", "install", "s3s-fs", "--version", "0.14.1", "--features", "binary", "--locked",
                            "--root", os.path.join(REPO_ROOT, "target", "tools")], check=True)
        data = os.path.join(self.work, "s3-data")
        os.makedirs(data)
        port = free_port()
        self.spawn("s3s-fs", [tool, "--host", "127.0.0.1", "--port", str(port), "--access-key", S3_KEY,
                              "--secret-key", S3_SECRET, data], port)
        self.s3_endpoint = f"http://127.0.0.1:{port}"

    def sshd(self):
        if not os.access("/usr/sbin/sshd", os.X_OK):
            compare.subprocess.run(["apt-get", "install", "-y", "openssh-server"], check=True,
                                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        d = os.path.join(self.work, "ssh")
        os.makedirs(d, mode=0o700)
        for k in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(d, k)], check=True)
        shutil.copy(os.path.join(d, "client_key.pub"), os.path.join(d, "authorized_keys"))
        port = free_port()
        with open(os.path.join(d, "sshd_config"), "w") as f:
            f.write(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n"
                    f"AuthorizedKeysFile {d}/authorized_keys\nUsePAM no\nStrictModes no\n"
                    "Subsystem sftp internal-sftp\nPermitRootLogin prohibit-password\nLogLevel ERROR\n"
                    "MaxStartups 100\n")
        kind, key = open(os.path.join(d, "host_key.pub")).read().split()[:2]
        with open(os.path.join(d, "known_hosts"), "w") as f:
            f.write(f"[127.0.0.1]:{port} {kind} {key}\n")
        os.makedirs("/run/sshd", exist_ok=True)
        self.spawn("sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", os.path.join(d, "sshd_config")], port)
        self.ssh_port, self.ssh_dir = port, d
        self.ssh_key = os.path.join(d, "client_key")
        self.known_hosts = os.path.join(d, "known_hosts")

    def swift(self):
        """Debian's Swift proxy with tempauth, as freezer-core/tests/it/servers.rs starts it."""
        for b in ("swift-proxy-server", "swift-object-server", "memcached"):
            if shutil.which(b) is None and not os.access(f"/usr/bin/{b}", os.X_OK):
                subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "swift", "swift-proxy",
                                "swift-object", "swift-account", "swift-container", "python3-swiftclient",
                                "memcached"], check=True, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
                break
        root = os.path.join(self.work, "swift")
        etc, dev = os.path.join(root, "etc"), os.path.join(root, "srv")
        os.makedirs(etc)
        os.makedirs(os.path.join(dev, "d1"))
        ports = {k: free_port() for k in ("memcached", "account", "container", "object", "proxy")}
        self.spawn("memcached", ["memcached", "-u", "root", "-l", "127.0.0.1", "-p", str(ports["memcached"]),
                                 "-U", "0"], ports["memcached"])
        with open(os.path.join(etc, "swift.conf"), "w") as f:
            f.write("[swift-hash]\nswift_hash_path_suffix = bench\nswift_hash_path_prefix = bench\n"
                    "[storage-policy:0]\nname = gold\ndefault = yes\n")
        for ring in ("account", "container", "object"):
            builder = os.path.join(etc, f"{ring}.builder")
            subprocess.run(["swift-ring-builder", builder, "create", "10", "1", "1"], check=True,
                           stdout=subprocess.DEVNULL)
            subprocess.run(["swift-ring-builder", builder, "add", f"r1z1-127.0.0.1:{ports[ring]}/d1", "1"],
                           check=True, stdout=subprocess.DEVNULL)
            subprocess.run(["swift-ring-builder", builder, "rebalance"], stdout=subprocess.DEVNULL)
            conf = os.path.join(etc, f"{ring}-server.conf")
            with open(conf, "w") as f:
                f.write(f"[DEFAULT]\nbind_ip = 127.0.0.1\nbind_port = {ports[ring]}\nworkers = 0\n"
                        f"mount_check = false\ndevices = {dev}\nswift_dir = {etc}\nuser = root\n"
                        f"log_level = WARNING\n[pipeline:main]\npipeline = {ring}-server\n"
                        f"[app:{ring}-server]\nuse = egg:swift#{ring}\n")
                if ring == "container":
                    f.write("[container-sync]\n")
            self.spawn(f"swift-{ring}", [f"swift-{ring}-server", conf], ports[ring],
                       env=dict(os.environ, SWIFT_DIR=etc))
        conf = os.path.join(etc, "proxy-server.conf")
        with open(conf, "w") as f:
            f.write(f"[DEFAULT]\nbind_ip = 127.0.0.1\nbind_port = {ports['proxy']}\nworkers = 0\n"
                    f"swift_dir = {etc}\nuser = root\nlog_level = WARNING\n"
                    "[pipeline:main]\npipeline = catch_errors gatekeeper healthcheck proxy-logging cache "
                    "listing_formats bulk tempurl tempauth copy slo dlo proxy-logging proxy-server\n"
                    "[app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n"
                    "[filter:tempauth]\nuse = egg:swift#tempauth\nuser_bench_bench = benchkey .admin\n"
                    f"[filter:cache]\nuse = egg:swift#memcache\nmemcache_servers = 127.0.0.1:{ports['memcached']}\n"
                    "[filter:catch_errors]\nuse = egg:swift#catch_errors\n"
                    "[filter:gatekeeper]\nuse = egg:swift#gatekeeper\n"
                    "[filter:healthcheck]\nuse = egg:swift#healthcheck\n"
                    "[filter:proxy-logging]\nuse = egg:swift#proxy_logging\n"
                    "[filter:listing_formats]\nuse = egg:swift#listing_formats\n"
                    "[filter:bulk]\nuse = egg:swift#bulk\n[filter:tempurl]\nuse = egg:swift#tempurl\n"
                    "[filter:copy]\nuse = egg:swift#copy\n[filter:slo]\nuse = egg:swift#slo\n"
                    "[filter:dlo]\nuse = egg:swift#dlo\n")
        self.spawn("swift-proxy", ["swift-proxy-server", conf], ports["proxy"],
                   env=dict(os.environ, SWIFT_DIR=etc))
        self.swift_auth = f"http://127.0.0.1:{ports['proxy']}/auth/v1.0"


class FreezerTool:
    name = "freezer"

    def __init__(self, binary, secrets, servers):
        self.binary, self.servers = binary, servers
        self.pass_file = os.path.join(secrets, "freezer.pass")
        compare.write_secret(self.pass_file, PASSPHRASE + "\n")

    def repo_args(self, target, where):
        s = self.servers
        if target == "s3":
            return ["--repo", f"s3://{where}?endpoint={s.s3_endpoint}"]
        if target == "sftp":
            return ["--repo", f"ssh://root@127.0.0.1:{s.ssh_port}{where}", "--ssh-key", s.ssh_key,
                    "--ssh-known-hosts", s.known_hosts]
        if target == "swift":
            return ["--repo", f"swift://{where}"]
        return ["--repo", where]

    def env(self):
        s = self.servers
        env = dict(os.environ, ACCESS_KEY=S3_KEY, SECRET_KEY=S3_SECRET)
        if getattr(s, "swift_auth", None):
            env.update(ST_AUTH=s.swift_auth, ST_USER="bench:bench", ST_KEY="benchkey")
        return env

    def init(self, repos):
        return [self.binary, "init", *repos, "--encrypt-pass-file", self.pass_file]

    def backup(self, repos, src):
        return [self.binary, "backup", *repos, "--encrypt-pass-file", self.pass_file, "--path-to-backup", src,
                "-N", "bench"]

    def restore(self, repos, target):
        return [self.binary, "restore", *repos, "--encrypt-pass-file", self.pass_file, "-N", "bench",
                "--restore-abs-path", target]


class ResticTool:
    name = "restic"

    def __init__(self, secrets, servers, cache):
        self.servers, self.cache = servers, cache
        self.pass_file = os.path.join(secrets, "restic.pass")
        compare.write_secret(self.pass_file, PASSPHRASE + "\n")

    def repo_args(self, target, where):
        s = self.servers
        if target == "s3":
            return ["-r", f"s3:{s.s3_endpoint}/{where}"]
        ssh = (f"ssh -p {s.ssh_port} -i {s.ssh_key} -o UserKnownHostsFile={s.known_hosts} "
               "-o StrictHostKeyChecking=yes -o BatchMode=yes root@127.0.0.1 -s sftp")
        return ["-r", f"sftp:root@127.0.0.1:{where}", "-o", f"sftp.command={ssh}"]

    def env(self):
        env = dict(os.environ, RESTIC_PASSWORD_FILE=self.pass_file, RESTIC_CACHE_DIR=self.cache,
                   AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET)
        env.pop("RESTIC_PASSWORD", None)
        env.pop("RESTIC_REPOSITORY", None)
        return env

    def init(self, repos):
        return ["restic", *repos, "init"]

    def backup(self, repos, src):
        return ["restic", *repos, "backup", "--host", "bench", src]

    def restore(self, repos, target):
        return ["restic", *repos, "restore", "latest", "--target", target]


def check(corpus_manifest, tool, target, src, enabled):
    if not enabled:
        return None
    got = compare.manifest(compare.restored_root(tool, target, src))
    verdict = compare.compare_manifests(corpus_manifest, got)
    if not verdict["ok"]:
        say(f"restore check FAILED for {tool}: {verdict}")
    return verdict["ok"]


def one_run(k, args, runner, corpus, servers, freezer, restic, want):
    d = os.path.join(args.work, f"run{k}")
    os.makedirs(d)
    res = {"wall_s": {}, "rss_kib": {}, "restore_ok": {}}

    def measure(label, cmd, env, inputs):
        wall, rss = runner.measure(f"run{k}-{label}", cmd, env=env, inputs=inputs)
        res["wall_s"][label], res["rss_kib"][label] = wall, rss
        say(f"run {k}: {label} {wall:.2f} s, {rss / 1024:.0f} MiB")
        return wall

    targets = [("s3", lambda t: f"bench{k}-{t}/repo"), ("sftp", lambda t: os.path.join(d, f"sftp-{t}"))]
    order = [freezer, restic] if k % 2 else [restic, freezer]
    for target, where in targets:
        for tool in order:
            repos = tool.repo_args(target, where(tool.name))
            if tool is restic and target == "s3":
                # restic does not create the bucket behind a prefix: freezer init creates buckets.
                runner.run(f"run{k}-bucket-{target}", freezer.init(freezer.repo_args("s3", f"bench{k}-restic/x")),
                           env=freezer.env())
            runner.run(f"run{k}-{tool.name}-{target}-init", tool.init(repos), env=tool.env())
            measure(f"{tool.name}-{target}-backup", tool.backup(repos, corpus), tool.env(), [corpus])
            out = os.path.join(d, f"restore-{tool.name}-{target}")
            os.makedirs(out)
            measure(f"{tool.name}-{target}-restore", tool.restore(repos, out), tool.env(), [])
            res["restore_ok"][f"{tool.name}-{target}"] = check(want, tool.name, out, corpus, not args.no_check)

    # The tee: one local folder, then four storages in one run.
    single = freezer.repo_args("local", os.path.join(d, "tee-single"))
    runner.run(f"run{k}-tee-single-init", freezer.init(single), env=freezer.env())
    measure("freezer-local-backup", freezer.backup(single, corpus), freezer.env(), [corpus])
    fourth = (freezer.repo_args("swift", f"bench{k}/tee") if servers.have_swift
              else freezer.repo_args("local", os.path.join(d, "tee-local2")))
    four = (freezer.repo_args("local", os.path.join(d, "tee-local")) + freezer.repo_args("s3", f"bench{k}-tee/r")
            + freezer.repo_args("sftp", os.path.join(d, "tee-sftp")) + fourth)
    runner.run(f"run{k}-tee-init", freezer.init(four), env=freezer.env())
    measure("freezer-tee4-backup", freezer.backup(four, corpus), freezer.env(), [corpus])
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=None, help="runs to take the median of (default 3; 1 with --quick)")
    ap.add_argument("--size-mb", type=int, default=None, help="corpus size (default 256; 24 with --quick)")
    ap.add_argument("--work", help="work folder, empty or missing (default: a new folder under /tmp)")
    ap.add_argument("--keep-work", action="store_true",
                    help="keep the work folder (corpus, repositories); by default only its logs/ outlive a failure")
    ap.add_argument("--freezer", help="the freezer binary (default: target/release/freezer, built if missing)")
    ap.add_argument("--json-out", help="write every measurement and the summary as JSON")
    ap.add_argument("--markdown-out", help="write the table as Markdown")
    ap.add_argument("--quick", action="store_true", help="a small corpus and one run: a sanity check")
    ap.add_argument("--no-swift", action="store_true", help="the tee's fourth storage is a second local folder")
    ap.add_argument("--no-check", action="store_true", help="skip comparing restored trees with the corpus")
    args = ap.parse_args()
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    size_mb = args.size_mb if args.size_mb is not None else (24 if args.quick else 256)
    if shutil.which("restic") is None:
        subprocess.run(["apt-get", "install", "-y", "restic"], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    binary = compare.ensure_freezer(args.freezer)
    return compare.measure_in_work_folder(args, "freezer-remote-", measure, binary, runs, size_mb)


def measure(args, binary, runs, size_mb):
    """The runs and the report; the exit code."""
    binary = compare.private_copy(binary, args.work)
    secrets = os.path.join(args.work, "secrets")
    runner = Runner(os.path.join(args.work, "logs"), 0.0)
    servers = Servers(args.work)
    report = {"config": {"command": "python3 benches/remote.py " + shlex.join(sys.argv[1:]), "runs": runs,
                         "size_mb": size_mb, "work": args.work},
              "machine": compare.machine_info(args.work), "versions": compare.versions(binary), "runs": []}
    code = 0
    try:
        servers.s3()
        servers.sshd()
        servers.have_swift = not args.no_swift
        if servers.have_swift:
            servers.swift()
        corpus = os.path.join(args.work, "corpus")
        say(f"making the corpus: {size_mb} MB, seed 1")
        runner.run("corpus", [sys.executable, CORPUS_PY, "make", "--out", corpus, "--size-mb", str(size_mb),
                              "--seed", "1"])
        want = compare.manifest(corpus)
        freezer = FreezerTool(binary, secrets, servers)
        restic = ResticTool(secrets, servers, os.path.join(args.work, "restic-cache"))
        for k in range(1, runs + 1):
            report["runs"].append(one_run(k, args, runner, corpus, servers, freezer, restic, want))
    except CommandFailed as e:
        say(str(e))
        code = 2
    finally:
        servers.stop()
    if not report["runs"]:
        return code
    med = {label: compare.median([r["wall_s"][label] for r in report["runs"] if label in r["wall_s"]])
           for label in report["runs"][0]["wall_s"]}
    rows = []
    for target in ("s3", "sftp"):
        for op, limit in (("backup", 0.6), ("restore", 0.7)):
            ours, theirs = med[f"freezer-{target}-{op}"], med[f"restic-{target}-{op}"]
            rows.append((f"{target} {op}", ours, theirs, ours / theirs, limit))
    tee = med["freezer-tee4-backup"] / med["freezer-local-backup"]
    checks = [v for r in report["runs"] for v in r["restore_ok"].values() if v is not None]
    report["median_s"] = med
    report["samples"] = runner.samples
    # CPU seconds of the command itself and of everything else (the servers, writeback).
    cpu = {}
    for smp in runner.samples:
        label = smp["label"].split("-", 1)[1]
        cpu.setdefault(label, []).append((smp["cpu_s"], smp["other_cpu_s"]))
    cpu = {k: (compare.median([a for a, _ in v]), compare.median([b for _, b in v])) for k, v in cpu.items()}
    report["summary"] = {"rows": [dict(zip(("what", "freezer_s", "restic_s", "ratio", "target"), r)) for r in rows],
                         "tee4_over_local": tee, "tee_fourth": "swift" if servers.have_swift else "local",
                         "restores_identical": all(checks) if checks else None}
    lines = [f"corpus {size_mb} MB, {runs} run(s), medians; {report['machine'].get('cpu', '')}",
             "", "| | freezer | restic | freezer/restic | target |", "|---|---|---|---|---|"]
    for what, ours, theirs, ratio, limit in rows:
        lines.append(f"| {what} | {ours:.2f} s | {theirs:.2f} s | **{ratio:.2f}** "
                     f"{'met' if ratio <= limit else 'MISSED'} | <= {limit} |")
    lines += ["", f"tee to local + s3 + sftp + {report['summary']['tee_fourth']}: "
                  f"{med['freezer-tee4-backup']:.2f} s against {med['freezer-local-backup']:.2f} s for one "
                  f"local folder: **{tee:.2f}x** ({'met' if tee <= 1.5 else 'MISSED'}, target <= 1.5x)",
              f"restores identical to the corpus: {report['summary']['restores_identical']}", "",
              "CPU seconds (the command's own / everything else on the machine, mostly the servers):"]
    for label in ("freezer-local-backup", "freezer-tee4-backup", "freezer-s3-backup", "freezer-sftp-backup",
                  "freezer-s3-restore", "restic-s3-restore", "freezer-sftp-restore", "restic-sftp-restore"):
        if label in cpu:
            lines.append(f"  {label}: {cpu[label][0]:.2f} / {cpu[label][1]:.2f}")
    if "freezer-tee4-backup" in cpu:
        # On this machine the servers share the cores: no schedule finishes before the CPU the
        # command and the servers need, spread over every core, has been spent.
        cores = os.cpu_count() or 1
        floor = sum(cpu["freezer-tee4-backup"]) / cores
        lines.append(f"  the tee's CPU floor on {cores} core(s): {floor:.2f} s, "
                     f"{floor / med['freezer-local-backup']:.2f}x the single local backup")
    print("\n".join(lines))
    if args.markdown_out:
        with open(args.markdown_out, "w") as f:
            f.write("\n".join(lines) + "\n")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=1)
    return code


if __name__ == "__main__":
    sys.exit(main())
