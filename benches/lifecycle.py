#!/usr/bin/env python3
"""Retention and prune on a repository with history: freezer-rs against restic.

    python3 benches/lifecycle.py [--runs 3] [--size-mb 256] [--snapshots 30] [--keep 10]
                                 [--work DIR] [--keep-work] [--freezer PATH] [--json-out FILE]
                                 [--markdown-out FILE] [--quick]

One invocation makes the corpus (benches/corpus.py, seed 1). In each run, with a fresh
encrypted repository per tool, it backs up a working copy of the corpus --snapshots times,
changing it with `corpus.py mutate --percent 5` between backups (both tools back up the same
states), then measures, per tool:

  forget+prune   forget all but the newest --keep snapshots and remove the data they alone
                 held, in one command: `freezer forget --keep-last N --prune` and
                 `restic forget --keep-last N --prune`

Wall time and peak RSS come from os.wait4. Afterwards freezer's repository is checked
(`freezer check --read-data`) and its newest snapshot restored and compared with the working
copy, so that a fast prune that lost data cannot pass. The targets of issue 4: at most 0.5x
restic's wall time and at most restic's peak RSS.

Exit code 0 when every command worked, 2 when one failed (its logs stay in WORK/logs).
Only the Python standard library is used.
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the runner, the tools' settings and the restore check)
from compare import CORPUS_PY, CommandFailed, Runner, say  # noqa: E402


def one_run(k, args, runner, corpus, freezer, restic):
    d = os.path.join(args.work, f"run{k}")
    os.makedirs(d)
    copy = os.path.join(d, "copy")
    subprocess.run(["cp", "-a", corpus, copy], check=True)
    repos = {t.name: os.path.join(d, f"repo-{t.name}") for t in (freezer, restic)}
    caches = {t.name: os.path.join(d, f"cache-{t.name}") for t in (freezer, restic)}
    tools = (freezer, restic)
    for t in tools:
        runner.run(f"run{k}-{t.name}-init", t.init(repos[t.name], caches[t.name]),
                   env=t.env_for(repos[t.name], caches[t.name]))
    say(f"run {k}: {args.snapshots} backups per tool, mutating 5% between them")
    for i in range(args.snapshots):
        if i:
            runner.run(f"run{k}-mutate{i}", [sys.executable, CORPUS_PY, "mutate", "--out", copy,
                                             "--percent", "5", "--seed", str(1000 * k + i)])
        for t in tools:
            runner.run(f"run{k}-{t.name}-backup{i}", t.backup(repos[t.name], copy, f"b{i}"),
                       env=t.env_for(repos[t.name], caches[t.name]))
    res = {"wall_s": {}, "rss_kib": {}, "repo_kib_before": {}, "repo_kib_after": {}}
    order = [freezer, restic] if k % 2 else [restic, freezer]
    for t in order:
        repo = repos[t.name]
        res["repo_kib_before"][t.name] = compare.du_kib(repo)
        if t is freezer:
            cmd = [t.binary, "forget", "--repo", repo, "--encrypt-pass-file", t.pass_file,
                   "--keep-last", str(args.keep), "--prune"]
        else:
            cmd = ["restic", "-r", repo, "forget", "--keep-last", str(args.keep), "--prune"]
        wall, rss = runner.measure(f"run{k}-{t.name}-forget-prune", cmd, env=t.env_for(repo, caches[t.name]),
                                   inputs=[repo])
        res["wall_s"][t.name], res["rss_kib"][t.name] = wall, rss
        res["repo_kib_after"][t.name] = compare.du_kib(repo)
        say(f"run {k}: {t.name} forget+prune {wall:.2f} s, {rss / 1024:.0f} MiB, repository "
            f"{res['repo_kib_before'][t.name] / 1024:.0f} -> {res['repo_kib_after'][t.name] / 1024:.0f} MiB")
    # Nothing lost: freezer's repository verifies, and its newest snapshot is the working copy.
    runner.run(f"run{k}-freezer-check", [freezer.binary, "check", "--repo", repos["freezer"],
                                         "--encrypt-pass-file", freezer.pass_file, "--read-data"])
    target = os.path.join(d, "restored")
    cmd, _ = freezer.restore(repos["freezer"], target, "latest")
    runner.run(f"run{k}-freezer-restore", cmd)
    got = compare.manifest(compare.restored_root("freezer", target, copy))
    verdict = compare.compare_manifests(compare.manifest(copy), got)
    if not verdict["ok"]:
        say(f"restore check FAILED: {verdict}")
    res["restore_ok"] = verdict["ok"]
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=None, help="runs to take the median of (default 3; 1 with --quick)")
    ap.add_argument("--size-mb", type=int, default=None, help="corpus size (default 256; 24 with --quick)")
    ap.add_argument("--snapshots", type=int, default=30, help="backups before the prune (default 30)")
    ap.add_argument("--keep", type=int, default=10, help="snapshots kept (default 10)")
    ap.add_argument("--work", help="work folder, empty or missing (default: a new folder under /tmp)")
    ap.add_argument("--keep-work", action="store_true",
                    help="keep the work folder (corpus, repositories); by default only its logs/ outlive a failure")
    ap.add_argument("--freezer", help="the freezer binary (default: target/release/freezer, built if missing)")
    ap.add_argument("--json-out", help="write every measurement and the summary as JSON")
    ap.add_argument("--markdown-out", help="write the table as Markdown")
    ap.add_argument("--quick", action="store_true", help="a small corpus and one run: a sanity check")
    args = ap.parse_args()
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    size_mb = args.size_mb if args.size_mb is not None else (24 if args.quick else 256)
    if shutil.which("restic") is None:
        subprocess.run(["apt-get", "install", "-y", "restic"], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    binary = compare.ensure_freezer(args.freezer)
    return compare.measure_in_work_folder(args, "freezer-lifecycle-", measure, binary, runs, size_mb)


def measure(args, binary, runs, size_mb):
    """The runs and the report; the exit code."""
    binary = compare.private_copy(binary, args.work)
    secrets = os.path.join(args.work, "secrets")
    runner = Runner(os.path.join(args.work, "logs"), 0.0)
    report = {"config": {"command": "python3 benches/lifecycle.py " + shlex.join(sys.argv[1:]), "runs": runs,
                         "size_mb": size_mb, "snapshots": args.snapshots, "keep": args.keep},
              "machine": compare.machine_info(args.work), "versions": compare.versions(binary), "runs": []}
    code = 0
    try:
        corpus = os.path.join(args.work, "corpus")
        say(f"making the corpus: {size_mb} MB, seed 1")
        runner.run("corpus", [sys.executable, CORPUS_PY, "make", "--out", corpus, "--size-mb", str(size_mb),
                              "--seed", "1"])
        freezer = compare.Freezer(binary, secrets)
        restic = compare.Restic(secrets)
        for k in range(1, runs + 1):
            report["runs"].append(one_run(k, args, runner, corpus, freezer, restic))
    except CommandFailed as e:
        say(str(e))
        code = 2
    if not report["runs"]:
        return code
    med = {t: compare.median([r["wall_s"][t] for r in report["runs"]]) for t in ("freezer", "restic")}
    rss = {t: max(r["rss_kib"][t] for r in report["runs"]) for t in ("freezer", "restic")}
    ok = all(r["restore_ok"] for r in report["runs"])
    report["summary"] = {"median_s": med, "peak_rss_kib": rss, "wall_ratio": med["freezer"] / med["restic"],
                         "rss_ratio": rss["freezer"] / rss["restic"], "restores_identical": ok}
    last = report["runs"][-1]
    lines = [f"corpus {size_mb} MB, {args.snapshots} snapshots (5% mutated between), forget all but "
             f"{args.keep} and prune; {runs} run(s), median wall, highest peak RSS; "
             f"{report['machine'].get('cpu', '')}", "",
             "| | freezer | restic | freezer/restic | target |", "|---|---|---|---|---|",
             f"| forget + prune, wall | {med['freezer']:.2f} s | {med['restic']:.2f} s | "
             f"**{med['freezer'] / med['restic']:.2f}** {'met' if med['freezer'] <= 0.5 * med['restic'] else 'MISSED'}"
             " | <= 0.5 |",
             f"| forget + prune, peak RSS | {rss['freezer'] / 1024:.0f} MiB | {rss['restic'] / 1024:.0f} MiB | "
             f"**{rss['freezer'] / rss['restic']:.2f}** {'met' if rss['freezer'] <= rss['restic'] else 'MISSED'}"
             " | <= 1.0 |", "",
             "repository size before -> after (last run): " + ", ".join(
                 f"{t} {last['repo_kib_before'][t] / 1024:.0f} -> {last['repo_kib_after'][t] / 1024:.0f} MiB"
                 for t in ("freezer", "restic")),
             f"freezer's repository checked with --read-data and its newest snapshot restored identical: {ok}"]
    print("\n".join(lines))
    if args.markdown_out:
        with open(args.markdown_out, "w") as f:
            f.write("\n".join(lines) + "\n")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=1)
    return code if ok else 2


if __name__ == "__main__":
    sys.exit(main())
