#!/usr/bin/env python3
"""A million small files: freezer-rs against restic, backup, re-backup and restore (issue 13).

    python3 benches/many.py [--files 1000000] [--work DIR] [--freezer PATH]
                            [--freezer-args '--threads 16'] [--json-out FILE]
                            [--markdown-out FILE] [--idle-timeout 300] [--no-check] [--keep]

One invocation makes the tree once (`benches/corpus.py many --files N --seed 1`: N files of
0-255 random bytes, in folders of at most 1000), then, for each tool with a fresh encrypted
repository (the settings of benches/compare.py: its Freezer and Restic, passwords in files),
measures:

  first      the first backup of the tree
  unchanged  a second backup, nothing changed
  restore    a full restore of the latest snapshot into a new, empty folder

Both tools make both backups before either restores. Wall time, peak RSS and CPU time come
from os.wait4 (compare.Runner); before each command its inputs (the tree, the tool's repository
and cache) are read once and `sync` runs, as in compare.py, and each waits at most
--idle-timeout seconds for a quiet machine. Each tool keeps its defaults; --freezer-args adds
options to freezer's backups and restore, and freezer runs with `--json`, whose report (files,
blobs, bytes added, memory budget and peak leased) goes to the JSON output.

The targets of issue 13: freezer's first backup and its restore take at most 0.3x restic's wall
time, and each of the three commands at most 0.5x restic's peak RSS.

Nothing is deleted between measured steps: on this ext4 file system, creating many files
within minutes of deleting many makes the kernel slow (recently-deleted inode scan, see
compare.py), and the restores create a million files each. The time to create 1000 files is
taken before each restore to show whether that effect was present; do not start within
5 minutes of deleting a previous work folder (this one's included).

Afterwards every restored tree is compared with the source, entry by entry (names, types,
sizes, SHA-256, modes, mtimes, hard-link counts, symlink targets, user xattrs: the fields of
compare.manifest), one folder at a time, so the check's memory does not grow with the tree.

Room: the tree and the two restores take about 3 x N x 4 KiB on disk and 3 x N inodes (for a
million files, 12 GiB and 3 million inodes); the script refuses to start without them. On the
2-core machine of docs/BENCHMARKS.md, 20,000 files take about 30 s of measured commands and
1,000,000 about half an hour in all (the tree, 6 commands, reading the inputs before each, the
check), plus up to --idle-timeout before each command on a busy machine.

The exit code is 0 when every command worked, whatever the numbers (a measurement, not a test;
a restore that differs from the source is reported, and its logs kept); 2 when a command failed,
its logs stay in WORK/logs. Only the Python standard library is used.
"""

import argparse
import datetime
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the runner, the tools' settings, the work folder, machine facts)
from compare import CORPUS_PY, CommandFailed, Runner, fmt, say  # noqa: E402

STEPS = [
    ("first", "first backup"),
    ("unchanged", "unchanged re-backup"),
    ("restore", "full restore"),
]
TOOLS = ["freezer", "restic"]
# Issue 13: freezer / restic at most this much.
WALL_TARGETS = {"first": 0.3, "restore": 0.3}
RSS_TARGETS = {"first": 0.5, "unchanged": 0.5, "restore": 0.5}
BLOCK = 4096


# ---------------------------------------------------------------------------------------------
# The restore check, streaming: compare.manifest holds a record per entry of the whole tree in
# memory (about a gigabyte for a million files); this compares one folder at a time.


def listing(folder):
    """name -> compare.entry_record (what compare.manifest holds) of the entries of one folder."""
    with os.scandir(folder) as it:
        return {e.name: compare.entry_record(e.path, e.stat(follow_symlinks=False)) for e in it}


def count_entries(path):
    """How many entries `path` and everything under it are (what compare.manifest would list)."""
    if not os.path.isdir(path) or os.path.islink(path):
        return 1
    return 1 + sum(len(dirs) + len(files) for _, dirs, files in os.walk(path))


def check_trees(want_root, got_roots):
    """Compares the tree at `want_root` with each of `got_roots` (name -> root) in one walk;
    returns name -> a result shaped like compare.compare_manifests's, plus the entries checked."""
    res = {name: {"missing": 0, "extra": 0, "different": 0, "different_by_field": {}, "examples": []}
           for name in got_roots}
    entries = 0
    stack = [("", set(got_roots))]
    while stack:
        rel, present = stack.pop()
        want = listing(os.path.join(want_root, rel))
        entries += len(want)
        below = {n: set() for n, r in want.items() if r["type"] == stat.S_IFDIR}
        for name in sorted(present):
            r = res[name]
            folder = os.path.join(got_roots[name], rel)
            got = listing(folder)
            for n in sorted(set(want) - set(got)):
                r["missing"] += count_entries(os.path.join(want_root, rel, n))
                if len(r["examples"]) < 8:
                    r["examples"].append(f"missing {os.path.join(rel, n)}")
            for n in sorted(set(got) - set(want)):
                r["extra"] += count_entries(os.path.join(folder, n))
                if len(r["examples"]) < 8:
                    r["examples"].append(f"extra {os.path.join(rel, n)}")
            for n in sorted(set(want) & set(got)):
                a, b = want[n], got[n]
                fields = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                if fields:
                    r["different"] += 1
                    for f in fields:
                        r["different_by_field"][f] = r["different_by_field"].get(f, 0) + 1
                    if len(r["examples"]) < 8:
                        r["examples"].append(f"{os.path.join(rel, n)}: {', '.join(fields)}")
                if n in below and b["type"] == stat.S_IFDIR:
                    below[n].add(name)
                elif n in below:  # a folder restored as something else: its content is missing
                    r["missing"] += count_entries(os.path.join(want_root, rel, n)) - 1
        for n in sorted(below, reverse=True):
            stack.append((os.path.join(rel, n), below[n]))
    for r in res.values():
        r["ok"] = not r["missing"] and not r["extra"] and not r["different"]
        r["entries"] = entries
    return res


# ---------------------------------------------------------------------------------------------
# The run


def room_needed(files):
    """(bytes, inodes) the tree and two restores need, with a margin: a file of 1-255 bytes
    takes one block; the repositories add a little."""
    folders = files // 1000 + files // 1_000_000 + 3
    return 3 * (files * BLOCK + folders * BLOCK) + files * 2048 + (1 << 30), 3 * (files + folders) + 50_000


def freezer_report(runner, label):
    """What freezer printed with `--json` in the last command, run as `label`; None if unreadable."""
    try:
        with open(os.path.join(runner.logs, f"{runner.n:03d}-{label}.out")) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    keep = {k: doc.get(k) for k in ("files", "dirs", "bytes", "bytes_added", "bytes_read", "memory", "complete")
            if k in doc}
    stats = (doc.get("snapshot") or {}).get("stats")
    if stats:
        keep["stats"] = stats
    keep["warnings"] = len(doc.get("warnings") or [])
    return keep


def run_all(args, runner, work, tree, tools):
    result = {"wall_s": {}, "rss_kib": {}, "cpu_s": {}, "repo_kib": {}, "create_us": {}, "freezer_reports": {},
              "restore_check": {}}
    for key, _ in STEPS:
        for field in ("wall_s", "rss_kib", "cpu_s", "repo_kib"):
            result[field][key] = {}

    say(f"making the tree: {args.files} files, seed 1")
    start = time.perf_counter()
    runner.run("tree", [sys.executable, CORPUS_PY, "many", "--out", tree, "--files", str(args.files),
                        "--seed", "1"])
    result["tree_make_s"] = time.perf_counter() - start
    result["tree_kib"], result["tree_apparent_kib"] = compare.du_kib(tree), compare.du_apparent_kib(tree)
    say(f"tree made in {result['tree_make_s']:.1f} s: {result['tree_apparent_kib'] / 1024:.1f} MiB apparent, "
        f"{result['tree_kib'] / 1024:.1f} MiB on disk")

    repos = {t.name: os.path.join(work, f"repo-{t.name}") for t in tools}
    caches = {t.name: os.path.join(work, f"cache-{t.name}") for t in tools}

    def measured(t, key, cmd, inputs, cwd=None):
        env = t.env_for(repos[t.name], caches[t.name])
        wall, rss = runner.measure(f"{t.name}-{key}", cmd, env=env, cwd=cwd, inputs=inputs)
        cpu = runner.samples[-1]["cpu_s"]
        result["wall_s"][key][t.name] = wall
        result["rss_kib"][key][t.name] = rss
        result["cpu_s"][key][t.name] = cpu
        if t.name == "freezer":
            result["freezer_reports"][key] = freezer_report(runner, f"{t.name}-{key}")
        result["repo_kib"][key][t.name] = compare.du_kib(repos[t.name])
        say(f"{t.name:8} {key:9} {wall:8.2f} s  {rss / 1024:7.1f} MiB RSS  {cpu:8.2f} s CPU  "
            f"{args.files / wall:9.0f} files/s  repo {result['repo_kib'][key][t.name] / 1024:.1f} MiB")

    for t in tools:
        os.makedirs(caches[t.name])
        runner.run(f"{t.name}-init", t.init(repos[t.name], caches[t.name]),
                   env=t.env_for(repos[t.name], caches[t.name]))
        for key in ("first", "unchanged"):
            measured(t, key, t.backup(repos[t.name], tree, key), [tree, repos[t.name], caches[t.name]])

    targets = {}
    for t in tools:
        target = os.path.join(work, f"restore-{t.name}")
        os.makedirs(target)
        targets[t.name] = target
        # How expensive creating a file is right now (compare.create_cost_us): a restore creates N.
        result["create_us"][t.name] = compare.create_cost_us(os.path.join(work, f"create-probe-{t.name}"))
        say(f"creating a file costs {result['create_us'][t.name]:.0f} us now")
        cmd, cwd = t.restore(repos[t.name], target, "unchanged")
        measured(t, "restore", cmd, [repos[t.name], caches[t.name]], cwd=cwd)

    if not args.no_check:
        say("checking the restored trees against the source")
        start = time.perf_counter()
        roots = {name: compare.restored_root(name, target, tree) for name, target in targets.items()}
        result["restore_check"] = check_trees(tree, roots)
        result["check_s"] = time.perf_counter() - start
        for name, c in result["restore_check"].items():
            if c["ok"]:
                say(f"{name} restore equals the source ({c['entries']} entries)")
            else:
                say(f"{name} restore differs from the source: {compare.describe_differences(c)}; "
                    f"e.g. {c['examples']}")
        say(f"check took {result['check_s']:.1f} s")
    return result


def summarize(result):
    summary = {"steps": {}, "targets": []}
    for key, _ in STEPS:
        s = {field: dict(result[field][key]) for field in ("wall_s", "rss_kib", "cpu_s")}
        s["wall_ratio"] = s["wall_s"]["freezer"] / s["wall_s"]["restic"]
        s["rss_ratio"] = s["rss_kib"]["freezer"] / s["rss_kib"]["restic"]
        s["cpu_ratio"] = s["cpu_s"]["freezer"] / s["cpu_s"]["restic"] if s["cpu_s"]["restic"] else None
        summary["steps"][key] = s
    labels = dict(STEPS)
    for key, limit in WALL_TARGETS.items():
        r = summary["steps"][key]["wall_ratio"]
        summary["targets"].append({"target": f"{labels[key]}: wall <= {limit}x restic", "value": r, "limit": limit,
                                   "pass": r <= limit})
    for key, limit in RSS_TARGETS.items():
        r = summary["steps"][key]["rss_ratio"]
        summary["targets"].append({"target": f"{labels[key]}: peak RSS <= {limit}x restic", "value": r,
                                   "limit": limit, "pass": r <= limit})
    checks = result["restore_check"]
    summary["restore_checks_ok"] = {name: checks[name]["ok"] if name in checks else None for name in TOOLS}
    return summary


def render(report):
    r, s, cfg = report["result"], report["summary"], report["config"]
    n = cfg["files"]
    lines = []
    add = lines.append
    add(f"Tree: {n} files of 0-255 bytes in folders of at most 1000 (corpus.py many, seed 1), "
        f"{r['tree_apparent_kib'] / 1024:.1f} MiB apparent, {r['tree_kib'] / 1024:.1f} MiB on disk; one run; "
        f"page cache warm (inputs read before each command); freezer options: "
        f"{cfg['freezer_args'] or '(defaults)'}.")
    add("")
    add("| step | freezer wall s | restic wall s | ratio | freezer RSS MiB | restic RSS MiB | ratio "
        "| freezer CPU s | restic CPU s | freezer files/s | restic files/s |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, label in STEPS:
        st = s["steps"][key]
        w, m, c = st["wall_s"], st["rss_kib"], st["cpu_s"]
        add(f"| {label} | {fmt(w['freezer'])} | {fmt(w['restic'])} | {fmt(st['wall_ratio'])} "
            f"| {fmt(m['freezer'] / 1024, 1)} | {fmt(m['restic'] / 1024, 1)} | {fmt(st['rss_ratio'])} "
            f"| {fmt(c['freezer'])} | {fmt(c['restic'])} | {n / w['freezer']:.0f} | {n / w['restic']:.0f} |")
    add("")
    add("Repository size, MiB (du -sk): after the first backup "
        + ", ".join(f"{t} {r['repo_kib']['first'][t] / 1024:.1f}" for t in TOOLS)
        + "; after the re-backup "
        + ", ".join(f"{t} {r['repo_kib']['unchanged'][t] / 1024:.1f}" for t in TOOLS) + ".")
    mem = [(key, (r["freezer_reports"].get(key) or {}).get("memory")) for key, _ in STEPS]
    mem = [(key, m) for key, m in mem if m]
    if mem:
        add("freezer's memory budget / most leased at once: "
            + "; ".join(f"{dict(STEPS)[key]} {m['budget'] / 2**20:.0f} / {m['peak_leased'] / 2**20:.1f} MiB"
                        for key, m in mem) + ".")
    add("File creation before each restore (1000 empty files): "
        + ", ".join(f"{t} {r['create_us'][t]:.0f} us/file" for t in TOOLS)
        + " (well above ~25 us means ext4's recently-deleted inode scan was slowing creation; restores "
          "are then slower).")
    add(f"Making the tree took {r['tree_make_s']:.0f} s"
        + (f"; the restore check {r['check_s']:.0f} s." if "check_s" in r else "."))
    i = s.get("interference")
    if i:
        add(compare.render_interference(i))
    add("")
    add("Targets (issue 13)")
    add("")
    lines.extend(compare.render_targets(s["targets"]))
    if cfg["restore_check"]:
        add("Restore check (restored tree == source: paths, types, sizes, SHA-256, modes, mtimes, hard-link "
            "counts, symlinks, user xattrs): "
            + ", ".join(f"{t} {'ok' if s['restore_checks_ok'][t] else 'DIFFERS'}" for t in TOOLS) + ".")
        for t, c in r["restore_check"].items():
            if not c["ok"]:
                add(f"- {t}: {compare.describe_differences(c)}; e.g. {'; '.join(c['examples'])}")
        add("")
    return "\n".join(lines)


def render_markdown(report):
    title = f"freezer-rs vs restic: {report['config']['files']} small files"
    return compare.markdown_header(report, title, ("restic",)) + render(report) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=1_000_000, help="files in the tree (default 1000000)")
    ap.add_argument("--work", help="work folder, empty or missing (default: a new folder under /tmp)")
    ap.add_argument("--freezer", help="the freezer binary (default: target/release/freezer, built if missing)")
    ap.add_argument("--freezer-args", default="",
                    help="options added to freezer's backups and restore, e.g. '--threads 16 --max-memory 64M'")
    ap.add_argument("--json-out", help="write every measurement and the summary as JSON")
    ap.add_argument("--markdown-out", help="write the tables as Markdown")
    ap.add_argument("--idle-timeout", type=float, default=300.0,
                    help="before each measurement wait until the CPUs are < 15%% busy, at most this many "
                         "seconds (default 300; 0 disables)")
    ap.add_argument("--no-check", action="store_true", help="skip comparing the restored trees with the source")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (tree, repositories, restores)")
    args = ap.parse_args()
    if args.files < 1:
        sys.exit("--files must be at least 1")
    if not os.path.exists(CORPUS_PY):
        sys.exit(f"corpus generator not found at {CORPUS_PY}")
    if shutil.which("restic") is None:
        say("installing restic with apt-get")
        subprocess.run(["apt-get", "install", "-y", "restic"], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    freezer = compare.ensure_freezer(args.freezer)

    work = compare.work_folder(args.work, "freezer-many-")
    need_bytes, need_inodes = room_needed(args.files)
    fs = os.statvfs(work)
    if fs.f_bavail * fs.f_frsize < need_bytes or fs.f_favail < need_inodes:
        compare.finish_work(work, args.keep, failed=False)
        sys.exit(f"not enough room in {work}: {need_bytes >> 30} GiB and {need_inodes} inodes needed, "
                 f"{fs.f_bavail * fs.f_frsize >> 30} GiB and {fs.f_favail} inodes free")

    binary_info = compare.binary_facts(freezer)
    freezer = compare.private_copy(freezer, work)
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    secrets = os.path.join(work, "secrets")
    runner = Runner(os.path.join(work, "logs"), args.idle_timeout)
    # --json: freezer's report (memory budget, peak leased) lands in the logs and the JSON output.
    tools = [compare.Freezer(freezer, secrets, shlex.split(args.freezer_args) + ["--json"]), compare.Restic(secrets)]
    versions = compare.versions(freezer)
    report = {
        "started": started,
        "config": {
            "command": "python3 benches/many.py " + shlex.join(sys.argv[1:]),
            "files": args.files, "work": work, "freezer": binary_info["path"], "freezer_args": args.freezer_args,
            "restore_check": not args.no_check, "idle_timeout": args.idle_timeout,
        },
        "machine": compare.machine_info(work),
        "versions": {"freezer": versions["freezer"], "freezer_commit": versions["freezer_commit"],
                     "restic": versions["restic"], "python": versions["python"], "freezer_binary": binary_info},
    }
    try:
        report["result"] = run_all(args, runner, work, os.path.join(work, "tree"), tools)
    except (CommandFailed, subprocess.CalledProcessError) as e:
        compare.report_failure(e)
        compare.finish_work(work, args.keep, failed=True)
        return 2

    report["measurements"] = runner.samples
    report["summary"] = summarize(report["result"])
    report["summary"]["interference"] = compare.interference_summary(runner.samples)
    print(render(report))
    compare.write_outputs(report, args.json_out, args.markdown_out, render_markdown)
    differs = any(ok is False for ok in report["summary"]["restore_checks_ok"].values())
    # A restore that differs keeps the logs (the rest of the folder goes), like a failed command.
    compare.finish_work(work, args.keep, failed=differs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
