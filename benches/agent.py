#!/usr/bin/env python3
"""Our `freezer-agent` against upstream's (PyPI freezer==19.0.0) on the same corpus, in one run.

    python3 benches/agent.py [--size-mb 512] [--runs 1] [--agent PATH] [--work DIR] [--keep-work]
    python3 benches/agent.py --quick          # 32 MB, a sanity check

It makes the corpus (benches/corpus.py, seed 1), installs upstream's agent in
target/upstream-agent when missing (a virtual environment from PyPI; it runs without a cloud
through tests/upstream/nocloud), builds target/release/freezer-agent when missing (or takes
`--agent`), then measures on local storage, each into a fresh container:

  upstream backup        upstream's agent, its defaults (engine tar, gzip)
  upstream restore       upstream's agent restoring that backup
  native backup          ours, --engine native (this project's repository, zstd)
  native restore         ours restoring it
  tar gzip backup        ours, --engine tar --compression gzip (upstream's format)
  tar restore upstream   ours restoring the backup upstream's agent made

and prints wall time, CPU time and peak RSS, with the ratios against upstream's and the targets
of issue 11 (native backup <= 0.1x, native restore <= 0.5x, tar gzip backup <= 0.5x, restoring
upstream's gzip backup <= 0.4x upstream's own restore). Every restored tree is compared with the
corpus (contents, modes, mtimes, symlinks). Measurements start with the inputs in the page cache
and after a `sync`, as in benches/compare.py, whose runner this uses. Exit code 0 whatever the
numbers; 2 when a command failed (logs kept in WORK/logs).
"""

import argparse
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the shared runner and tree comparison)

REPO_ROOT = compare.REPO_ROOT
NOCLOUD = os.path.join(REPO_ROOT, "tests", "upstream", "nocloud")
UPSTREAM_VENV = os.path.join(REPO_ROOT, "target", "upstream-agent")
TARGETS = {
    "native backup": ("upstream backup", 0.1),
    "native restore": ("upstream restore", 0.5),
    "tar gzip backup": ("upstream backup", 0.5),
    "tar restore upstream": ("upstream restore", 0.4),
}


def ensure_upstream():
    agent = os.path.join(UPSTREAM_VENV, "bin", "freezer-agent")
    if not os.access(agent, os.X_OK):
        compare.say("installing upstream's agent (freezer==19.0.0) from PyPI")
        subprocess.run([sys.executable, "-m", "venv", UPSTREAM_VENV], check=True)
        subprocess.run([os.path.join(UPSTREAM_VENV, "bin", "pip"), "install", "-q",
                        "--disable-pip-version-check", "freezer==19.0.0"], check=True)
    return agent


def ensure_ours(path):
    if path:
        if not os.access(path, os.X_OK):
            sys.exit(f"--agent {path}: not an executable file")
        return os.path.abspath(path)
    binary = os.path.join(REPO_ROOT, "target", "release", "freezer-agent")
    if not os.access(binary, os.X_OK):
        compare.say("building the release binary: cargo build --release -p freezer-cli")
        subprocess.run(["cargo", "build", "--release", "-p", "freezer-cli"], cwd=REPO_ROOT, check=True)
    return binary


def upstream_env(home):
    env = dict(os.environ)
    env["PYTHONPATH"] = NOCLOUD + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # Upstream's agent writes its log and work files under ~/.freezer.
    env["HOME"] = home
    return env


def common(container, name):
    return ["--storage", "local", "--container", container, "--backup-name", name,
            "--hostname", "bench"]


def one_run(k, args, runner, corpus, upstream, ours, work):
    run = os.path.join(work, f"run{k}")
    os.makedirs(run)
    home = os.path.join(run, "home")
    os.makedirs(home)
    env = upstream_env(home)
    c = lambda name: os.path.join(run, name)  # noqa: E731
    want = compare.manifest(corpus)
    # Upstream's tar engine keeps no extended attributes (tar runs without --xattrs), so trees
    # that went through its format are compared without them.
    plain = {p: {f: v for f, v in rec.items() if f != "xattrs"} for p, rec in want.items()}
    out = {}

    def same(restored, xattrs):
        got = compare.manifest(restored)
        if not xattrs:
            got = {p: {f: v for f, v in rec.items() if f != "xattrs"} for p, rec in got.items()}
        return compare.compare_manifests(want if xattrs else plain, got)

    def measure(label, cmd, inputs, restored=None):
        wall, rss = runner.measure(f"run{k}-{label.replace(' ', '-')}", cmd, env=env, inputs=inputs)
        out[label] = {"wall_s": wall, "rss_kib": rss, "cpu_s": runner.samples[-1]["cpu_s"]}
        compare.say(f"run {k}: {label}: {wall:.2f} s, {runner.samples[-1]['cpu_s']:.2f} s CPU, {rss / 1024:.0f} MiB")
        if restored is not None and not args.no_check:
            got = same(restored, xattrs=label.startswith("native"))
            out[label]["restore_equal"] = got["ok"]
            if not got["ok"]:
                compare.say(f"run {k}: {label}: the restored tree differs: {got}")

    backup = ["--action", "backup", "--path-to-backup", corpus]
    measure("upstream backup", [upstream, *backup, *common(c("upstream"), "b")], [corpus])
    measure("upstream restore", [upstream, "--action", "restore", *common(c("upstream"), "b"),
                                 "--restore-abs-path", c("r-upstream")],
            [c("upstream")], c("r-upstream"))
    measure("native backup", [ours, *backup, "--engine", "native", *common(c("native"), "b")], [corpus])
    measure("native restore", [ours, "--action", "restore", "--engine", "native", *common(c("native"), "b"),
                               "--restore-abs-path", c("r-native")],
            [c("native")], c("r-native"))
    measure("tar gzip backup", [ours, *backup, "--engine", "tar", "--compression", "gzip",
                                *common(c("tar"), "b")], [corpus])
    measure("tar restore upstream", [ours, "--action", "restore", "--engine", "tar",
                                     *common(c("upstream"), "b"), "--restore-abs-path", c("r-tar")],
            [c("upstream")], c("r-tar"))
    if not args.no_check:
        # Upstream's agent restores what ours wrote in its format: the way back.
        runner.run(f"run{k}-upstream-restores-ours", [upstream, "--action", "restore", *common(c("tar"), "b"),
                                                     "--restore-abs-path", c("r-back")], env=env)
        got = same(c("r-back"), xattrs=False)
        out["tar gzip backup"]["upstream_restores_it"] = got["ok"]
        if not got["ok"]:
            compare.say(f"run {k}: upstream's restore of our tar backup differs: {got}")
    return out


def render(runs, size):
    labels = list(runs[0])
    med = {label: {f: statistics.median(r[label][f] for r in runs) for f in ("wall_s", "cpu_s", "rss_kib")}
           for label in labels}
    lines = [f"freezer-agent vs upstream's agent, local storage, {size} MB corpus, {len(runs)} run(s), medians",
             "",
             f"{'':24} {'wall s':>8} {'CPU s':>8} {'RSS MiB':>8} {'x upstream':>11} {'target':>7}"]
    for label in labels:
        m = med[label]
        ratio, target = "", ""
        if label in TARGETS:
            base, limit = TARGETS[label]
            r = m["wall_s"] / med[base]["wall_s"]
            ratio = f"{r:.3f}"
            target = f"<={limit} {'PASS' if r <= limit else 'FAIL'}"
        lines.append(f"{label:24} {m['wall_s']:8.2f} {m['cpu_s']:8.2f} {m['rss_kib'] / 1024:8.0f} {ratio:>11} {target}")
    checks = [(label, key, r[label][key]) for r in runs for label in labels
              for key in ("restore_equal", "upstream_restores_it") if key in r[label]]
    if checks:
        bad = [f"{label} {key}" for label, key, ok in checks if not ok]
        lines.append("")
        lines.append("restored trees equal the corpus: " + ("yes" if not bad else "NO: " + ", ".join(bad)))
    return "\n".join(lines)


def measure_all(args):
    upstream = ensure_upstream()
    ours = compare.private_copy(ensure_ours(args.agent), args.work)
    runner = compare.Runner(os.path.join(args.work, "logs"), args.idle_timeout)
    corpus = os.path.join(args.work, "corpus")
    runner.run("corpus", [sys.executable, compare.CORPUS_PY, "make", "--out", corpus,
                          "--size-mb", str(args.size_mb), "--seed", "1"])
    runs = []
    try:
        for k in range(1, args.runs + 1):
            runs.append(one_run(k, args, runner, corpus, upstream, ours, args.work))
    except compare.CommandFailed as e:
        compare.say(str(e))
        return 2
    print(render(runs, args.size_mb))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=int, default=512)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--agent", help="our freezer-agent (default target/release/freezer-agent, built when missing)")
    p.add_argument("--work", help="an empty or missing folder (default: a new one under /tmp)")
    p.add_argument("--keep-work", action="store_true")
    p.add_argument("--no-check", action="store_true", help="do not compare restored trees")
    p.add_argument("--idle-timeout", type=float, default=60)
    p.add_argument("--quick", action="store_true", help="32 MB, one run")
    args = p.parse_args()
    if args.quick:
        args.size_mb, args.runs = 32, 1
    return compare.measure_in_work_folder(args, "freezer-agent-bench-", measure_all)


if __name__ == "__main__":
    sys.exit(main())
