#!/usr/bin/env python3
"""Compare freezer-rs with restic and borg on the same corpus, on this machine.

    python3 benches/compare.py [--runs 3] [--size-mb 512] [--work DIR] [--freezer PATH]
                               [--freezer-args '--threads 16'] [--json-out FILE]
                               [--markdown-out FILE] [--quick] [--keep]

One invocation makes the corpus (benches/corpus.py, seed 1), then, in each run, copies
it to a working copy (`cp -a`) and for each tool, with a fresh encrypted repository, measures:

  first      the first backup of the working copy
  unchanged  a second backup, nothing changed
  mutated    a backup after `corpus.py mutate --percent 5` changed the working copy
  restore    a full restore of the latest snapshot into a new, empty folder

and the compression floor: `tar -cf - COPY | zstd -3 -T0 -q > FILE`, the time to read the tree
and compress it once. Before every measured command its inputs (the working copy, the tool's
repository and cache) are read once, so that each starts with a warm page cache whatever ran
before it (borg evicts what it touched; `--drop-caches` measures cold reads instead); then
`sync` runs. Wall time, peak RSS, CPU time and block I/O come from os.wait4. Every tool keeps
its defaults (freezer zstd level 1, restic "auto" compression, borg lz4). Nothing is deleted
between measured steps: on ext4 without a journal, creating many files within minutes of
deleting many makes the kernel slow (ext4 recently_deleted: up to 300 s), so the files of every
run stay until the end (or, when the disk is too small for that, they are deleted between runs,
followed by `sync` and a 300 s pause). For the same reason, do not start a run within 5 minutes
of deleting a previous work folder; the time to create 1000 files, taken before each restore,
shows whether that effect was present.

The exit code is 0 when every command worked, whatever the numbers say (this is a measurement,
not a test); 2 when a command failed; the logs of every command stay in WORK/logs then.
Only the Python standard library is used.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import shlex
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time

SCENARIOS = [
    ("first", "first backup"),
    ("unchanged", "unchanged re-backup"),
    ("mutated", "backup after 5% mutation"),
    ("restore", "full restore"),
]
BACKUP_SCENARIOS = ["first", "unchanged", "mutated"]
TOOLS = ["freezer", "restic", "borg"]
PASSPHRASE = "compare.py benchmark passphrase, not a secret"

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
# The project's own generator (a checkout alone runs every benchmark).
CORPUS_PY = os.path.join(HERE, "corpus.py")


class CommandFailed(Exception):
    def __init__(self, cmd, code, log):
        super().__init__(f"command failed with exit code {code}: {shlex.join(cmd)} (logs: {log}.out/.err)")
        self.log = log


def say(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def report_failure(e):
    """Says why a benchmark stopped; for a failed command (CommandFailed), also prints the tail
    of its logs."""
    say(str(e))
    if not isinstance(e, CommandFailed):
        return
    for ext in (".out", ".err"):
        try:
            with open(e.log + ext, errors="replace") as f:
                tail = f.read()[-2000:]
            if tail.strip():
                print(f"--- {e.log}{ext} (tail)\n{tail}", file=sys.stderr)
        except OSError:
            pass


class Runner:
    """Runs commands with their output in WORK/logs; measured ones after a `sync`."""

    def __init__(self, logs, idle_timeout, drop_caches=False):
        self.logs = logs
        self.drop_caches = drop_caches
        self.n = 0
        self.idle_timeout = idle_timeout
        self.samples = []
        os.makedirs(logs, exist_ok=True)

    def _log(self, label):
        self.n += 1
        return os.path.join(self.logs, f"{self.n:03d}-{label}")

    def run(self, label, cmd, env=None, cwd=None):
        """Runs `cmd` unmeasured; raises CommandFailed on a non-zero exit."""
        self.measure(label, cmd, env=env, cwd=cwd, sync=False)

    def measure(self, label, cmd, env=None, cwd=None, sync=True, inputs=()):
        """Runs `cmd` after a sync (and, when asked, after the machine went quiet); returns
        (wall seconds, peak RSS in KiB). Every measurement is also kept in `self.samples`.

        `inputs` are the folders the command reads; they are read once before, so that every
        command starts with its input in the page cache (or, with drop_caches, none does)."""
        log = self._log(label)
        waited = wait_idle(self.idle_timeout) if sync and self.idle_timeout > 0 else 0.0
        if not self.drop_caches:
            for path in inputs:
                warm(path)
        if sync:
            os.sync()
            if self.drop_caches:
                with open("/proc/sys/vm/drop_caches", "w") as f:
                    f.write("3\n")
        with open(log + ".out", "wb") as out, open(log + ".err", "wb") as err:
            busy0 = cpu_busy_seconds()
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cwd)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            busy = cpu_busy_seconds() - busy0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise CommandFailed(cmd, proc.returncode, log)
        if sync:
            cpu = usage.ru_utime + usage.ru_stime
            self.samples.append({
                "label": label, "wall_s": wall, "rss_kib": usage.ru_maxrss, "cpu_s": cpu,
                "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
                # Read from and written to the block device (page cache misses, writeback).
                "read_mib": usage.ru_inblock * 512 / 2**20, "written_mib": usage.ru_oublock * 512 / 2**20,
                # CPU time the whole machine spent beyond the command's own: other processes,
                # and kernel threads working for the command (writeback).
                "other_cpu_s": max(0.0, busy - cpu),
                "other_cpu_share": max(0.0, busy - cpu) / (wall * (os.cpu_count() or 1)),
                "waited_for_idle_s": waited,
            })
        return wall, usage.ru_maxrss


def warm(root):
    """Reads every file under `root`, bringing it into the page cache. Needed for fair numbers:
    borg drops what it read and wrote from the cache (posix_fadvise DONTNEED), so the tool after
    it would read from the disk; and this machine's kernel may page out cache idle for a minute."""
    buf = bytearray(1 << 20)
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = os.path.join(dirpath, name)
            try:
                if not stat.S_ISREG(os.lstat(p).st_mode):
                    continue
                with open(p, "rb", buffering=0) as f:
                    while f.readinto(buf):
                        pass
            except OSError:
                pass


def create_cost_us(folder, n=1000):
    """Microseconds per empty file created in a new `folder` (kept: deleting would add to the
    problem it measures). On ext4 without a journal, inodes freed in the last 60 s, or 300 s
    while their inode table block is dirty, are skipped one by one when allocating
    (ext4 recently_deleted), so file creation gets several times slower for minutes after any
    large deletion on the file system, by this script or anyone else; restores suffer most."""
    os.makedirs(folder)
    start = time.perf_counter()
    for i in range(n):
        os.close(os.open(os.path.join(folder, f"f{i}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    return (time.perf_counter() - start) / n * 1e6


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_times():
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:9]]
    idle = vals[3] + vals[4]  # idle + iowait
    return (sum(vals) - idle) / CLK_TCK, sum(vals) / CLK_TCK


def cpu_busy_seconds():
    return cpu_times()[0]


def wait_idle(timeout, threshold=0.15):
    """Waits until the machine's CPUs were less than `threshold` busy over one second, at most
    `timeout` seconds; returns the time waited (a busy machine makes every number worse)."""
    start = time.monotonic()
    while True:
        b0, t0 = cpu_times()
        time.sleep(1.0)
        b1, t1 = cpu_times()
        if (b1 - b0) / max(1e-9, t1 - t0) < threshold:
            return time.monotonic() - start - 1.0
        if time.monotonic() - start >= timeout:
            say(f"the machine stayed busy for {timeout:.0f} s; measuring anyway")
            return time.monotonic() - start


def output(cmd, **kw):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True, **kw).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def du_kib(path):
    return int(subprocess.run(["du", "-sk", path], capture_output=True, text=True, check=True).stdout.split()[0])


def du_apparent_kib(path):
    out = subprocess.run(["du", "-sk", "--apparent-size", path], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


# ---------------------------------------------------------------------------------------------
# The tools


class Freezer:
    name = "freezer"

    def __init__(self, binary, secrets, extra=()):
        self.binary = binary
        self.extra = list(extra)
        self.pass_file = os.path.join(secrets, "freezer.pass")
        write_secret(self.pass_file, PASSPHRASE + "\n")
        self.env = dict(os.environ)

    def init(self, repo, cache):
        return [self.binary, "init", "--repo", repo, "--encrypt-pass-file", self.pass_file]

    def backup(self, repo, src, label):
        return [self.binary, "backup", "--repo", repo, "--encrypt-pass-file", self.pass_file,
                "--path-to-backup", src, "-N", "bench", *self.extra]

    def restore(self, repo, target, label):
        return [self.binary, "restore", "--repo", repo, "--encrypt-pass-file", self.pass_file,
                "-N", "bench", "--restore-abs-path", target, *self.extra], None

    def env_for(self, repo, cache):
        return self.env


class Restic:
    name = "restic"

    def __init__(self, secrets):
        self.pass_file = os.path.join(secrets, "restic.pass")
        write_secret(self.pass_file, PASSPHRASE + "\n")

    def init(self, repo, cache):
        return ["restic", "-r", repo, "init"]

    def backup(self, repo, src, label):
        return ["restic", "-r", repo, "backup", "--host", "bench", src]

    def restore(self, repo, target, label):
        return ["restic", "-r", repo, "restore", "latest", "--target", target], None

    def env_for(self, repo, cache):
        env = dict(os.environ)
        env.update(RESTIC_PASSWORD_FILE=self.pass_file, RESTIC_CACHE_DIR=cache)
        env.pop("RESTIC_PASSWORD", None)
        env.pop("RESTIC_REPOSITORY", None)
        return env


class Borg:
    name = "borg"

    def init(self, repo, cache):
        return ["borg", "init", "-e", "repokey", repo]

    def backup(self, repo, src, label):
        return ["borg", "create", f"{repo}::{label}", src]

    def restore(self, repo, target, label):
        return ["borg", "extract", f"{repo}::{label}"], target

    def env_for(self, repo, cache):
        env = dict(os.environ)
        env.update(
            BORG_PASSPHRASE=PASSPHRASE,
            BORG_BASE_DIR=cache,
            BORG_DISPLAY_PASSPHRASE="no",
            BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="no",
            BORG_RELOCATED_REPO_ACCESS_IS_OK="no",
        )
        env.pop("BORG_REPO", None)
        return env


def write_secret(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


# ---------------------------------------------------------------------------------------------
# Setup


def ensure_packages():
    missing = [pkg for cmd, pkg in (("restic", "restic"), ("borg", "borgbackup"), ("zstd", "zstd"))
               if shutil.which(cmd) is None]
    if missing:
        say(f"installing {' '.join(missing)} with apt-get")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", *missing], check=True, env=env)


def work_folder(path, prefix):
    """The work folder of a benchmark run: `path` (created, and refused unless empty) or a new
    folder under /tmp. It holds `bin/` (a private copy of the binary), `secrets/` (mode 0700)
    and `logs/`."""
    if path:
        work = os.path.abspath(path)
        os.makedirs(work, exist_ok=True)
        if os.listdir(work):
            sys.exit(f"--work {work}: not empty (deleting it here would slow the next file creations; "
                     "delete it yourself, then wait 5 minutes before measuring)")
    else:
        work = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    say(f"work folder {work}")
    os.makedirs(os.path.join(work, "bin"))
    os.makedirs(os.path.join(work, "secrets"), mode=0o700)
    return work


def finish_work(work, keep, failed, flag="--keep"):
    """Ends a run's work folder: kept whole with `keep`; after a failure only its `logs/` stay,
    for the post-mortem; otherwise deleted. Corpora and repositories take gigabytes each, and a
    benchmark left behind on a small disk starves everything that runs after it."""
    if keep:
        say(f"work folder kept: {work}")
        return
    if not failed:
        say(f"deleting {work}")
        shutil.rmtree(work, ignore_errors=True)
        return
    for name in os.listdir(work):
        if name != "logs":
            path = os.path.join(work, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
    say(f"logs kept in {os.path.join(work, 'logs')} (the rest of the work folder is deleted; {flag} keeps it)")


def measure_in_work_folder(args, prefix, measure, *rest):
    """Runs `measure(args, *rest)` (which returns the exit code) in a new work folder,
    `args.work`, ended by `finish_work` (`--keep-work` keeps it); returns the exit code."""
    args.work = work_folder(args.work, prefix)
    code = 2
    try:
        code = measure(args, *rest)
    finally:
        finish_work(args.work, args.keep_work, failed=code != 0, flag="--keep-work")
    return code


def private_copy(binary, work):
    """A copy of `binary` in WORK/bin: a rebuild in the checkout during the runs cannot change it."""
    return shutil.copy2(binary, os.path.join(work, "bin", os.path.basename(binary)))


def binary_facts(path):
    """Which build the numbers are of: the binary's path, modification time and SHA-256."""
    info = {
        "path": path,
        "mtime": datetime.datetime.fromtimestamp(os.stat(path).st_mtime).astimezone().isoformat(timespec="seconds"),
    }
    with open(path, "rb") as f:
        info["sha256"] = hashlib.file_digest(f, "sha256").hexdigest()
    return info


def ensure_freezer(path):
    if path:
        if not os.access(path, os.X_OK):
            sys.exit(f"--freezer {path}: not an executable file")
        return os.path.abspath(path)
    binary = os.path.join(REPO_ROOT, "target", "release", "freezer")
    if not os.access(binary, os.X_OK):
        say("building the release binary: cargo build --release -p freezer-cli")
        subprocess.run(["cargo", "build", "--release", "-p", "freezer-cli"], cwd=REPO_ROOT, check=True)
    return binary


def machine_info(work):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
    except OSError:
        pass
    fs = output(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", work])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": output(["sh", "-c", ". /etc/os-release && echo \"$PRETTY_NAME\""]),
        "filesystem": fs,
    }


def versions(freezer):
    commit = output(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"])
    dirty = output(["git", "-C", REPO_ROOT, "status", "--porcelain", "--untracked-files=no"])
    return {
        "freezer": output([freezer, "--version"]),
        "freezer_commit": commit + ("+dirty" if dirty and dirty != "unknown" else ""),
        "restic": output(["restic", "version"]),
        "borg": output(["borg", "--version"]),
        "zstd": output(["zstd", "--version"]),
        "tar": output(["tar", "--version"]).splitlines()[0],
        "python": platform.python_version(),
    }


# ---------------------------------------------------------------------------------------------
# Restore check: the restored tree must equal the working copy it was backed up from.


def entry_record(path, st):
    """What a restore should reproduce of the entry at `path`, whose lstat is `st`: type, mode;
    a symlink's target; else mtime and user xattrs, and for a file its size, hard-link count
    and SHA-256."""
    rec = {"mode": stat.S_IMODE(st.st_mode), "type": stat.S_IFMT(st.st_mode)}
    if stat.S_ISLNK(st.st_mode):
        rec["link"] = os.readlink(path)
        return rec
    rec["mtime"] = int(st.st_mtime)
    try:
        rec["xattrs"] = sorted((k, os.getxattr(path, k, follow_symlinks=False))
                               for k in os.listxattr(path, follow_symlinks=False) if k.startswith("user."))
    except OSError:
        rec["xattrs"] = []
    if stat.S_ISREG(st.st_mode):
        rec["size"] = st.st_size
        rec["nlink"] = st.st_nlink
        with open(path, "rb") as f:
            rec["sha256"] = hashlib.file_digest(f, "sha256").hexdigest()
    return rec


def manifest(root):
    """relpath -> entry_record of every entry under `root`."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, root)] = entry_record(p, os.lstat(p))
    return out


def restored_root(tool, target, src):
    """Where a tool put the restored copy of `src` inside `target`."""
    nested = os.path.join(target, src.lstrip("/"))
    return nested if os.path.isdir(nested) else target


def describe_differences(check):
    """How a restore check (compare_manifests's result) found the restore to differ, in words."""
    return (f"missing {check['missing']}, extra {check['extra']}, different {check['different']} "
            f"{check['different_by_field']}")


def compare_manifests(want, got):
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    differs = {}
    for path in sorted(set(want) & set(got)):
        a, b = want[path], got[path]
        fields = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if fields:
            differs[path] = fields
    by_field = {}
    for fields in differs.values():
        for f in fields:
            by_field[f] = by_field.get(f, 0) + 1
    return {
        "ok": not missing and not extra and not differs,
        "missing": len(missing),
        "extra": len(extra),
        "different": len(differs),
        "different_by_field": by_field,
        "examples": (missing[:3] + extra[:3] + [f"{p}: {', '.join(fs)}" for p, fs in list(differs.items())[:5]]),
    }


# ---------------------------------------------------------------------------------------------
# One run


def one_run(k, args, runner, corpus, tools, work):
    run_dir = os.path.join(work, f"run{k}")
    copy = os.path.join(run_dir, "copy")
    os.makedirs(run_dir)
    say(f"run {k}: cp -a corpus -> {copy}")
    runner.run(f"run{k}-copy", ["cp", "-a", corpus, copy])
    result = {"order": [], "wall_s": {}, "rss_kib": {}, "repo_kib": {}, "floor_s": None, "restore_check": {}}

    floor_file = os.path.join(run_dir, "floor.tar.zst")
    parent, base = os.path.split(copy)
    floor_cmd = ["bash", "-c", "set -o pipefail; tar -cf - -C \"$1\" \"$2\" | zstd -3 -T0 -q > \"$3\"",
                 "floor", parent, base, floor_file]
    wall, _ = runner.measure(f"run{k}-floor", floor_cmd, inputs=[copy])
    result["floor_s"] = wall
    result["floor_kib"] = du_kib(floor_file)
    say(f"run {k}: floor (tar | zstd -3 -T0) {wall:.2f} s")

    # Rotate the order of the tools from run to run, so none always goes first.
    order = tools[(k - 1) % len(tools):] + tools[:(k - 1) % len(tools)]
    result["order"] = [t.name for t in order]
    repos, caches = {}, {}
    for t in order:
        repos[t.name] = os.path.join(run_dir, f"repo-{t.name}")
        caches[t.name] = os.path.join(run_dir, f"cache-{t.name}")
        os.makedirs(caches[t.name])
        for s in SCENARIOS:
            result["wall_s"].setdefault(s[0], {})
            result["rss_kib"].setdefault(s[0], {})
            result["repo_kib"].setdefault(s[0], {})

    def backup(t, scenario, label):
        env = t.env_for(repos[t.name], caches[t.name])
        wall, rss = runner.measure(f"run{k}-{t.name}-{scenario}", t.backup(repos[t.name], copy, label), env=env,
                                   inputs=[copy, repos[t.name], caches[t.name]])
        result["wall_s"][scenario][t.name] = wall
        result["rss_kib"][scenario][t.name] = rss
        result["repo_kib"][scenario][t.name] = du_kib(repos[t.name])
        say(f"run {k}: {t.name:8} {scenario:9} {wall:7.2f} s  {rss / 1024:7.1f} MiB RSS  "
            f"repo {result['repo_kib'][scenario][t.name] / 1024:.1f} MiB")

    for t in order:
        env = t.env_for(repos[t.name], caches[t.name])
        runner.run(f"run{k}-{t.name}-init", t.init(repos[t.name], caches[t.name]), env=env)
        backup(t, "first", "first")
        backup(t, "unchanged", "unchanged")

    say(f"run {k}: corpus.py mutate --percent 5")
    runner.run(f"run{k}-mutate", [sys.executable, CORPUS_PY, "mutate", "--out", copy, "--percent", "5"])
    for t in order:
        backup(t, "mutated", "mutated")

    targets = {}
    result["create_us"] = {}
    for t in order:
        target = os.path.join(run_dir, f"restore-{t.name}")
        os.makedirs(target)
        targets[t.name] = target
        # How expensive creating a file is right now (see create_cost_us): restores create ~17k.
        result["create_us"][t.name] = create_cost_us(os.path.join(run_dir, f"create-probe-{t.name}"))
        cmd, cwd = t.restore(repos[t.name], target, "mutated")
        env = t.env_for(repos[t.name], caches[t.name])
        wall, rss = runner.measure(f"run{k}-{t.name}-restore", cmd, env=env, cwd=cwd,
                                   inputs=[repos[t.name], caches[t.name]])
        result["wall_s"]["restore"][t.name] = wall
        result["rss_kib"]["restore"][t.name] = rss
        result["repo_kib"]["restore"][t.name] = result["repo_kib"]["mutated"][t.name]
        say(f"run {k}: {t.name:8} restore   {wall:7.2f} s  {rss / 1024:7.1f} MiB RSS")

    # After every measurement of the run: check that each restore equals the working copy.
    if not args.no_check:
        want = manifest(copy)
        for t in order:
            root = restored_root(t.name, targets[t.name], copy)
            check = compare_manifests(want, manifest(root))
            sparse = os.path.join(root, "odd", "sparse.img")
            if os.path.exists(sparse):
                check["sparse_img_allocated_kib"] = os.lstat(sparse).st_blocks // 2
            result["restore_check"][t.name] = check
            if not check["ok"]:
                say(f"run {k}: {t.name} restore differs from the source: {describe_differences(check)}; "
                    f"e.g. {check['examples']}")
    return result


# ---------------------------------------------------------------------------------------------
# Summary and report


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def interference_summary(samples):
    """How busy the machine was beyond the measured commands (Runner.samples): the median and
    the largest share of all cores, which measurement had it, and the time waited for idle."""
    other = max(samples, key=lambda m: m["other_cpu_share"])
    return {
        "max_other_cpu_share": other["other_cpu_share"],
        "max_other_cpu_label": other["label"],
        "median_other_cpu_share": statistics.median(m["other_cpu_share"] for m in samples),
        "waited_for_idle_s": sum(m["waited_for_idle_s"] for m in samples),
    }


def summarize(runs, corpus_kib, corpus_apparent_kib):
    summary = {"scenarios": {}, "floor": {}, "targets": []}
    for key, _ in SCENARIOS:
        s = {"wall_s": {}, "rss_kib": {}, "repo_kib": {}, "wall_s_range": {}}
        for tool in TOOLS:
            walls = [r["wall_s"][key].get(tool) for r in runs]
            s["wall_s"][tool] = median(walls)
            s["wall_s_range"][tool] = [min(walls), max(walls)]
            s["rss_kib"][tool] = median([r["rss_kib"][key].get(tool) for r in runs])
            s["repo_kib"][tool] = median([r["repo_kib"][key].get(tool) for r in runs])
        for peer in ("restic", "borg"):
            s[f"wall_ratio_freezer_{peer}"] = s["wall_s"]["freezer"] / s["wall_s"][peer]
            s[f"rss_ratio_freezer_{peer}"] = s["rss_kib"]["freezer"] / s["rss_kib"][peer]
        summary["scenarios"][key] = s
    floor = median([r["floor_s"] for r in runs])
    first = summary["scenarios"]["first"]["wall_s"]["freezer"]
    summary["floor"] = {
        "wall_s": floor,
        "wall_s_range": [min(r["floor_s"] for r in runs), max(r["floor_s"] for r in runs)],
        "kib": median([r["floor_kib"] for r in runs]),
        "speed_vs_floor": floor / first,
        "corpus_kib": corpus_kib,
        "corpus_apparent_kib": corpus_apparent_kib,
        "freezer_first_mib_s": corpus_apparent_kib / 1024 / first,
        "floor_mib_s": corpus_apparent_kib / 1024 / floor,
    }
    sc = summary["scenarios"]
    t = summary["targets"]

    def target(name, value, limit, ok):
        t.append({"target": name, "value": value, "limit": limit, "pass": ok})

    for key, limit in (("first", 0.5), ("unchanged", 0.5), ("restore", 0.7)):
        r = sc[key]["wall_ratio_freezer_restic"]
        target(f"{dict(SCENARIOS)[key]}: wall <= {limit}x restic", r, limit, r <= limit)
    for key, label in SCENARIOS:
        r = sc[key]["rss_ratio_freezer_restic"]
        target(f"{label}: peak RSS <= restic's", r, 1.0, r <= 1.0)
    v = summary["floor"]["speed_vs_floor"]
    target("first backup at least 0.8x as fast as the floor", v, 0.8, v >= 0.8)
    checks = [(tool, r["restore_check"].get(tool)) for r in runs for tool in TOOLS]
    summary["restore_checks_ok"] = {tool: all(c is None or c["ok"] for tl, c in checks if tl == tool) for tool in TOOLS}
    return summary


def fmt(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f}"


def render_interference(i):
    """The report's sentence on interference_summary's `i`."""
    return (f"Interference: CPU time of the machine beyond the measured command's own, as a share of all cores "
            f"during it: median {i['median_other_cpu_share']:.0%}, max {i['max_other_cpu_share']:.0%} "
            f"({i['max_other_cpu_label']}); {i['waited_for_idle_s']:.0f} s spent waiting for an idle machine.")


def render_targets(targets):
    """The table of the targets (target, value, limit, PASS/FAIL), and a blank line."""
    lines = ["| target | value | limit | result |", "|---|---:|---:|---|"]
    for t in targets:
        lines.append(f"| {t['target']} | {t['value']:.2f} | {t['limit']} | {'PASS' if t['pass'] else 'FAIL'} |")
    return lines + [""]


def render(report):
    s = report["summary"]
    cfg = report["config"]
    n = cfg["runs"]
    lines = []
    add = lines.append
    add(f"Corpus: {cfg['size_mb']} MB requested, {s['floor']['corpus_apparent_kib'] / 1024:.1f} MiB apparent "
        f"({s['floor']['corpus_kib'] / 1024:.1f} MiB on disk); {n} run(s); medians; page cache "
        f"{'dropped before each command (cold)' if cfg.get('drop_caches') else 'warm (inputs read before each command)'}.")
    add("")
    add(f"Wall time, seconds (median of {n}; min-max in brackets)")
    add("")
    add("| scenario | freezer | restic | borg | freezer/restic | freezer/borg |")
    add("|---|---:|---:|---:|---:|---:|")
    for key, label in SCENARIOS:
        sc = s["scenarios"][key]
        cells = []
        for tool in TOOLS:
            lo, hi = sc["wall_s_range"][tool]
            cells.append(f"{fmt(sc['wall_s'][tool])} [{fmt(lo)}-{fmt(hi)}]" if n > 1 else fmt(sc["wall_s"][tool]))
        add(f"| {label} | {' | '.join(cells)} | {fmt(sc['wall_ratio_freezer_restic'])} | "
            f"{fmt(sc['wall_ratio_freezer_borg'])} |")
    add("")
    add(f"Peak RSS, MiB (median of {n})")
    add("")
    add("| scenario | freezer | restic | borg | freezer/restic | freezer/borg |")
    add("|---|---:|---:|---:|---:|---:|")
    for key, label in SCENARIOS:
        sc = s["scenarios"][key]
        cells = [fmt(sc["rss_kib"][tool] / 1024, 1) for tool in TOOLS]
        add(f"| {label} | {' | '.join(cells)} | {fmt(sc['rss_ratio_freezer_restic'])} | "
            f"{fmt(sc['rss_ratio_freezer_borg'])} |")
    add("")
    add("Repository size after the scenario, MiB (du -sk)")
    add("")
    add("| scenario | freezer | restic | borg |")
    add("|---|---:|---:|---:|")
    for key in BACKUP_SCENARIOS:
        sc = s["scenarios"][key]
        add(f"| {dict(SCENARIOS)[key]} | {' | '.join(fmt(sc['repo_kib'][t] / 1024, 1) for t in TOOLS)} |")
    add("")
    f = s["floor"]
    add(f"Compression floor (`tar -cf - COPY | zstd -3 -T0 -q > FILE`): {fmt(f['wall_s'])} s median "
        f"[{fmt(f['wall_s_range'][0])}-{fmt(f['wall_s_range'][1])}], {f['floor_mib_s']:.0f} MiB/s, "
        f"output {f['kib'] / 1024:.1f} MiB.")
    add(f"freezer first backup: {f['freezer_first_mib_s']:.0f} MiB/s, "
        f"{f['speed_vs_floor']:.2f}x as fast as the floor.")
    add("")
    ms = {m["label"]: m for m in report.get("measurements", [])}
    if any("read_mib" in m for m in ms.values()):
        add(f"CPU seconds (user+sys) and MiB read from the block device (page-cache misses), median of {n}")
        add("")
        add("| scenario | " + " | ".join(f"{t} CPU s | {t} read MiB" for t in TOOLS) + " |")
        add("|---|" + "---:|" * (2 * len(TOOLS)))
        for key, label in SCENARIOS:
            cells = []
            for t in TOOLS:
                got = [ms.get(f"run{k}-{t}-{key}") for k in range(1, n + 1)]
                got = [g for g in got if g]
                cells.append(fmt(median([g["cpu_s"] for g in got])))
                cells.append(fmt(median([g["read_mib"] for g in got]), 1))
            add(f"| {label} | {' | '.join(cells)} |")
        floors = [ms.get(f"run{k}-floor") for k in range(1, n + 1)]
        floors = [g for g in floors if g]
        add(f"| floor | {fmt(median([g['cpu_s'] for g in floors]))} | "
            f"{fmt(median([g['read_mib'] for g in floors]), 1)} |" + " |" * (2 * len(TOOLS) - 2))
        add("")
    costs = [c for r in report["runs"] for c in r.get("create_us", {}).values()]
    if costs:
        add(f"File creation before each restore (1000 empty files): median {median(costs):.0f} us/file, "
            f"max {max(costs):.0f} us/file (a few times the median means the ext4 recently-deleted "
            f"inode scan was slowing creation; restores are then slower).")
        add("")
    i = s.get("interference")
    if i:
        add(render_interference(i))
        disturbed = [f"{m['label']} {m['other_cpu_share']:.0%}" for m in report.get("measurements", [])
                     if m["other_cpu_share"] > 0.2]
        if disturbed:
            add(f"Measurements with more than 20% of the cores busy elsewhere: {', '.join(disturbed)}.")
        add("")
    add("Targets")
    add("")
    lines.extend(render_targets(s["targets"]))
    if report["config"]["restore_check"]:
        oks = s["restore_checks_ok"]
        add("Restore check (restored tree == working copy: paths, types, sizes, SHA-256, modes, mtimes, "
            "hard links, symlinks, user xattrs): "
            + ", ".join(f"{t} {'ok' if oks[t] else 'DIFFERS'}" for t in TOOLS) + ".")
        for k, r in enumerate(report["runs"], 1):
            for tool, c in r["restore_check"].items():
                if not c["ok"]:
                    add(f"- run {k}, {tool}: {describe_differences(c)}; e.g. {'; '.join(c['examples'])}")
        add("")
    return "\n".join(lines)


def markdown_header(report, title, peers):
    """The top of a Markdown report: `title`, the command and when it ran, the machine, and the
    versions of freezer (checkout, binary) and of `peers` (keys of report["versions"]); then a
    blank line, for the body to follow."""
    m, v, cfg = report["machine"], report["versions"], report["config"]
    head = [
        f"# {title}",
        "",
        f"Generated by `{cfg['command']}` on {report['started']}.",
        "",
        f"- Machine: {m['nproc']} cores, {m['cpu']}, {m['memory_gib']} GiB, kernel {m['kernel']}, "
        f"{m['os']}, work folder on {m['filesystem']}",
        f"- Versions: {v['freezer']} (checkout {v['freezer_commit']}; binary built {v['freezer_binary']['mtime']}, "
        f"sha256 {v['freezer_binary']['sha256'][:12]}), {', '.join(v[p] for p in peers)}",
        "",
        "",
    ]
    return "\n".join(head)


def render_markdown(report):
    return markdown_header(report, "freezer-rs vs restic vs borg", ("restic", "borg", "zstd")) + render(report) + "\n"


def write_outputs(report, json_out, markdown_out, render_markdown):
    """Writes `report` as JSON to `json_out` and, by `render_markdown`, as Markdown to
    `markdown_out` (each when given)."""
    if json_out:
        with open(json_out, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        say(f"wrote {json_out}")
    if markdown_out:
        with open(markdown_out, "w") as f:
            f.write(render_markdown(report))
        say(f"wrote {markdown_out}")


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=None, help="runs to take the median of (default 3; 1 with --quick)")
    ap.add_argument("--size-mb", type=int, default=None, help="corpus size (default 512; 24 with --quick)")
    ap.add_argument("--work", help="work folder, empty or missing (default: a new folder under /tmp)")
    ap.add_argument("--freezer", help="the freezer binary (default: target/release/freezer, built if missing)")
    ap.add_argument("--freezer-args", default="",
                    help="options added to freezer's backup and restore, e.g. '--threads 16 --max-memory 64M'")
    ap.add_argument("--json-out", help="write every measurement and the summary as JSON")
    ap.add_argument("--markdown-out", help="write the tables as Markdown")
    ap.add_argument("--quick", action="store_true", help="a small corpus and one run: a sanity check in < 1 min")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (corpus, repositories, restores)")
    ap.add_argument("--no-check", action="store_true", help="skip comparing restored trees with the source")
    ap.add_argument("--idle-timeout", type=float, default=None,
                    help="before each measurement wait until the CPUs are < 15%% busy, at most this many "
                         "seconds (default 300; 0 with --quick; 0 disables)")
    ap.add_argument("--drop-caches", action="store_true",
                    help="drop the page cache before each measurement (cold reads; needs root)")
    ap.add_argument("--pause", type=float, default=300.0,
                    help="seconds to wait after deleting a run (only when the disk is too small to keep "
                         "every run) before measuring again (default 300: ext4 recently_deleted window)")
    args = ap.parse_args()
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    size_mb = args.size_mb if args.size_mb is not None else (24 if args.quick else 512)
    if args.idle_timeout is None:
        args.idle_timeout = 0.0 if args.quick else 300.0
    if runs < 1 or size_mb < 1:
        sys.exit("--runs and --size-mb must be at least 1")
    if not os.path.exists(CORPUS_PY):
        sys.exit(f"corpus generator not found at {CORPUS_PY}")

    ensure_packages()
    freezer = ensure_freezer(args.freezer)

    work = work_folder(args.work, "freezer-compare-")
    binary_info = binary_facts(freezer)
    freezer = private_copy(freezer, work)
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    secrets = os.path.join(work, "secrets")
    runner = Runner(os.path.join(work, "logs"), args.idle_timeout, args.drop_caches)
    tools = [Freezer(freezer, secrets, shlex.split(args.freezer_args)), Restic(secrets), Borg()]

    report = {
        "started": started,
        "config": {
            "command": "python3 benches/compare.py " + shlex.join(sys.argv[1:]),
            "runs": runs, "size_mb": size_mb, "work": work, "freezer": binary_info["path"],
            "restore_check": not args.no_check, "drop_caches": args.drop_caches,
        },
        "machine": machine_info(work),
        "versions": dict(versions(freezer), freezer_binary=binary_info),
        "runs": [],
    }

    corpus = os.path.join(work, "corpus")
    try:
        say(f"making the corpus: {size_mb} MB, seed 1")
        runner.run("corpus", [sys.executable, CORPUS_PY, "make", "--out", corpus, "--size-mb", str(size_mb),
                              "--seed", "1"])
        corpus_kib, corpus_apparent_kib = du_kib(corpus), du_apparent_kib(corpus)
        # Keeping every run's files needs about 8x the corpus per run (copy, 3 repositories,
        # 3 restores, floor); when the disk is smaller, runs are deleted in between.
        need = runs * 8 * corpus_apparent_kib * 1024
        free = shutil.disk_usage(work).free
        clean_between = need > free
        if clean_between:
            say(f"not enough room to keep every run ({need >> 30} GiB needed, {free >> 30} GiB free): "
                f"deleting each run before the next, then sync and {args.pause:.0f} s pause")
        for k in range(1, runs + 1):
            if clean_between and k > 1:
                shutil.rmtree(os.path.join(work, f"run{k - 1}"))
                os.sync()
                time.sleep(args.pause)
            report["runs"].append(one_run(k, args, runner, corpus, tools, work))
    except (CommandFailed, subprocess.CalledProcessError) as e:
        report_failure(e)
        finish_work(work, args.keep, failed=True)
        return 2

    report["measurements"] = runner.samples
    report["summary"] = summarize(report["runs"], corpus_kib, corpus_apparent_kib)
    report["summary"]["interference"] = interference_summary(runner.samples)
    text = render(report)
    print(text)
    write_outputs(report, args.json_out, args.markdown_out, render_markdown)
    finish_work(work, args.keep, failed=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
