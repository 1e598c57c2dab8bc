#!/usr/bin/env python3
"""A database dump as a stream: `freezer backup --mode command` against the same dump piped
into `restic backup --stdin` and `borg create -`.

    python3 benches/stream.py [--size-mib 1024] [--changed-percent 1] [--work DIR] [--keep-work]
                              [--freezer PATH] [--json-out FILE] [--quick]

It writes a logical dump of --size-mib (SQL text as `mariadb-dump` writes it: CREATE TABLE and
multi-row INSERT statements of numbers, dates, words and random tokens, which compresses about
as a real dump does), then with a fresh encrypted repository per tool measures:

  first     the first backup of the dump
  repeated  the same dump again (a database that did not change)
  changed   a new dump after --changed-percent of the rows were updated (in runs of 2000 rows
            spread evenly over the table) and as many appended

Every tool gets the dump the way a dump tool hands it over, through a pipe from `cat`: freezer
runs `cat DUMP` itself (`--mode command --command 'cat DUMP'`), restic and borg read `cat DUMP |`
on their stdin. Wall time and peak RSS come from os.wait4 of the whole pipeline (compare.Runner:
the largest process of it, which is the backup tool), the bytes added from the growth of the
repository folder (du). Afterwards freezer's newest snapshot is restored to stdout
(`--restore-abs-path -`) and compared with the dump. --quick: a 128 MiB dump.

Exit code 0 when every command worked, 2 when one failed (its logs stay in WORK/logs). Only the
Python standard library is used.
"""

import argparse
import os
import random
import shlex
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the runner, the tools' settings, the work folder)
from compare import CommandFailed, Runner, say  # noqa: E402

MIB = 1 << 20
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu backup "
         "restore freezer swift nova cinder glance keystone neutron volume instance project").split()
ROWS_PER_INSERT = 400
RUN = 2000


def row(rng, i, version):
    """One row of table `orders`; `version` > 0 marks an updated row."""
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
    return (f"({i},{rng.randint(1, 50000)},'2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}',"
            f"{rng.randint(0, 10**7) / 100:.2f},'{words}','{rng.randbytes(12).hex()}',{version})")


def write_dump(path, size, changed_percent=0.0, seed=1):
    """Writes a dump of about `size` bytes. With `changed_percent`, the same rows as the
    dump made with 0, except that share of them updated (spread evenly) and as many appended."""
    with open(path, "w") as f:
        f.write("-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB, for debian-linux-gnu (x86_64)\n"
                "--\n-- Host: 127.0.0.1    Database: shop\n\n"
                "/*!40101 SET NAMES utf8mb4 */;\nSET FOREIGN_KEY_CHECKS=0;\n\n"
                "DROP TABLE IF EXISTS `orders`;\nCREATE TABLE `orders` (\n"
                "  `id` bigint NOT NULL,\n  `customer` int NOT NULL,\n  `placed` datetime NOT NULL,\n"
                "  `total` decimal(12,2) NOT NULL,\n  `note` text,\n  `token` char(24) NOT NULL,\n"
                "  `version` int NOT NULL,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n\n"
                "LOCK TABLES `orders` WRITE;\n")
        written = 0
        i = 0
        # Updates come in runs of RUN rows (a day's orders), one run every `period` rows.
        period = int(RUN * 100 / changed_percent) if changed_percent else 0
        appended = 0
        while written < size:
            # Each INSERT from its own seed, so that the rows of both dumps are the same but
            # for the ones changed.
            rng = random.Random(seed * 1_000_003 + i // ROWS_PER_INSERT)
            rows = []
            for _ in range(ROWS_PER_INSERT):
                r = row(rng, i, 0)
                if period and i % period >= period - RUN:
                    r = row(random.Random(seed * 5_000_011 + i), i, 1)  # an updated row
                    appended += 1
                rows.append(r)
                i += 1
            line = "INSERT INTO `orders` VALUES " + ",".join(rows) + ";\n"
            f.write(line)
            written += len(line)
        for k in range(0, appended, ROWS_PER_INSERT):
            rows = [row(random.Random(seed * 7_000_003 + i + j), i + j, 0)
                    for j in range(min(ROWS_PER_INSERT, appended - k))]
            f.write("INSERT INTO `orders` VALUES " + ",".join(rows) + ";\n")
            i += len(rows)
        f.write("UNLOCK TABLES;\n\n-- Dump completed\n")
    return os.path.getsize(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=None, help="dump size (default 1024; 128 with --quick)")
    ap.add_argument("--changed-percent", type=float, default=1.0,
                    help="share of rows updated (and appended) before the third backup")
    ap.add_argument("--work", help="work folder, empty or missing (default: a new folder under /tmp)")
    ap.add_argument("--keep-work", action="store_true", help="keep the work folder")
    ap.add_argument("--freezer", help="the freezer binary (default: target/release/freezer, built if missing)")
    ap.add_argument("--json-out", help="write every measurement and the summary as JSON")
    ap.add_argument("--quick", action="store_true", help="a 128 MiB dump: a sanity check")
    args = ap.parse_args()
    args.size_mib = args.size_mib or (128 if args.quick else 1024)
    compare.ensure_packages()
    binary = compare.ensure_freezer(args.freezer)
    return compare.measure_in_work_folder(args, "freezer-stream-bench-", measure, binary)


def measure(args, binary):
    binary = compare.private_copy(binary, args.work)
    secrets = os.path.join(args.work, "secrets")
    logs = os.path.join(args.work, "logs")
    runner = Runner(logs, 0.0)
    size = args.size_mib * MIB
    dumps = {"first": os.path.join(args.work, "dump-1.sql"), "changed": os.path.join(args.work, "dump-2.sql")}
    dumps["repeated"] = dumps["first"]
    report = {"config": {"command": "python3 benches/stream.py " + shlex.join(sys.argv[1:]),
                         "size_mib": args.size_mib, "changed_percent": args.changed_percent},
              "machine": compare.machine_info(args.work), "versions": compare.versions(binary)}
    freezer = compare.Freezer(binary, secrets)
    restic = compare.Restic(secrets)
    borg = compare.Borg()
    tools = (freezer, restic, borg)
    steps = ("first", "repeated", "changed")
    res = {t.name: {} for t in tools}
    try:
        say(f"writing the dumps: {args.size_mib} MiB, then {args.changed_percent}% of rows changed")
        report["config"]["dump_bytes"] = write_dump(dumps["first"], size)
        write_dump(dumps["changed"], size, args.changed_percent)
        repos = {t.name: os.path.join(args.work, f"repo-{t.name}") for t in tools}
        caches = {t.name: os.path.join(args.work, f"cache-{t.name}") for t in tools}
        for t in tools:
            runner.run(f"{t.name}-init", t.init(repos[t.name], caches[t.name]),
                       env=t.env_for(repos[t.name], caches[t.name]))
        for step in steps:
            dump = dumps[step]
            cat = "cat " + shlex.quote(dump)
            for t in tools:
                repo = repos[t.name]
                if t is freezer:
                    cmd = [binary, "backup", "--repo", repo, "--encrypt-pass-file", t.pass_file,
                           "--mode", "command", "--command", cat, "-N", "bench"]
                elif t is restic:
                    cmd = ["sh", "-c", f"{cat} | restic -r {shlex.quote(repo)} backup --host bench "
                                       "--stdin --stdin-filename dump.sql"]
                else:
                    cmd = ["sh", "-c", f"{cat} | borg create {shlex.quote(repo + '::' + step)} -"]
                before = compare.du_kib(repo)
                wall, rss = runner.measure(f"{t.name}-{step}", cmd, env=t.env_for(repo, caches[t.name]),
                                           inputs=[dump])
                added = (compare.du_kib(repo) - before) * 1024
                res[t.name][step] = {"wall_s": wall, "rss_kib": rss, "added_bytes": added}
                say(f"{t.name} {step}: {wall:.2f} s, {rss / 1024:.0f} MiB RSS, added {added / MIB:.1f} MiB")
        out = os.path.join(args.work, "restored.sql")
        with open(out, "wb") as f:
            r = subprocess.run([binary, "restore", "--repo", repos["freezer"], "--encrypt-pass-file",
                                freezer.pass_file, "-N", "bench", "--restore-abs-path", "-"],
                               stdout=f, stderr=subprocess.PIPE)
        if r.returncode != 0:
            say("freezer restore failed: " + r.stderr.decode(errors="replace")[-2000:])
            return 2
        same = subprocess.run(["cmp", dumps["changed"], out], capture_output=True).returncode == 0
        report["restore"] = {"identical": same}
    except CommandFailed as e:
        say(str(e))
        return 2
    report["results"] = res
    dump_mib = report["config"]["dump_bytes"] / MIB
    lines = [f"logical dump {dump_mib:.0f} MiB through a pipe; {args.changed_percent}% of rows changed "
             f"for the third; {report['machine'].get('cpu', '')}", "",
             "| | freezer | restic | borg | freezer/restic | freezer/borg |", "|---|---|---|---|---|---|"]
    for step in steps:
        f, r, b = (res[t][step] for t in ("freezer", "restic", "borg"))
        lines += [
            f"| {step}: wall | {f['wall_s']:.2f} s | {r['wall_s']:.2f} s | {b['wall_s']:.2f} s | "
            f"**{f['wall_s'] / r['wall_s']:.2f}** | **{f['wall_s'] / b['wall_s']:.2f}** |",
            f"| {step}: peak RSS | {f['rss_kib'] / 1024:.0f} MiB | {r['rss_kib'] / 1024:.0f} MiB | "
            f"{b['rss_kib'] / 1024:.0f} MiB | **{f['rss_kib'] / r['rss_kib']:.2f}** | "
            f"**{f['rss_kib'] / b['rss_kib']:.2f}** |",
            f"| {step}: bytes added | {f['added_bytes'] / MIB:.1f} MiB | {r['added_bytes'] / MIB:.1f} MiB | "
            f"{b['added_bytes'] / MIB:.1f} MiB | **{f['added_bytes'] / max(r['added_bytes'], 1):.2f}** | "
            f"**{f['added_bytes'] / max(b['added_bytes'], 1):.2f}** |",
        ]
    lines += ["", f"freezer's restore of the last backup to stdout identical: {report['restore']['identical']}"]
    print("\n".join(lines))
    if args.json_out:
        import json
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=1)
    return 0 if report["restore"]["identical"] else 2


if __name__ == "__main__":
    sys.exit(main())
