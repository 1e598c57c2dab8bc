#!/usr/bin/env python3
"""A disk image: freezer-rs `--mode image` against `restic backup` of the file.

    python3 benches/image.py [--size-mib 4096] [--changed-percent 1] [--regions 8]
                             [--data-percent 100] [--work DIR] [--keep-work] [--freezer PATH]
                             [--json-out FILE] [--quick] [--btrfs]

It makes a raw image of --size-mib (random data over its first --data-percent, the rest a
hole), then with a fresh encrypted repository per tool measures:

  first     the first backup of the image
  changed   the backup after --changed-percent of the image was overwritten with new random
            data, in --regions runs spread evenly over the data (how the change is spread
            matters: both tools cut content-defined chunks of about 1 MiB, so a change costs
            the chunks it touches)

Wall time and peak RSS come from os.wait4 (compare.Runner), the bytes added from the growth of
the repository folder (du), the bytes read by freezer from its report (`--json`). Afterwards
freezer's newest snapshot is restored (`--restore-abs-path FILE`) and compared with the image
(cmp), and its holes are reported (du of the restored file). --quick: a 256 MiB image.

--btrfs puts the image on a btrfs file system (a sparse file in the work folder, formatted and
loop-mounted; root and btrfs-progs needed), where freezer's second backup asks btrfs what was
written since the first and reads only that (its "bytes read"); restic reads the file whole.

Exit code 0 when every command worked, 2 when one failed (its logs stay in WORK/logs). Only the
Python standard library is used.
"""

import argparse
import glob
import json
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


def write_random(f, offset, length, rng):
    f.seek(offset)
    left = length
    while left:
        n = min(left, 4 * MIB)
        f.write(rng.randbytes(n))
        left -= n


def make_image(path, size, data, seed):
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        write_random(f, 0, data, rng)


def change_image(path, data, percent, regions, seed):
    """Overwrites `percent` of the image's size in `regions` runs spread over its data."""
    size = os.path.getsize(path)
    total = int(size * percent / 100)
    each = total // regions
    rng = random.Random(seed)
    with open(path, "r+b") as f:
        for i in range(regions):
            start = (data // regions) * i + (data // regions - each) // 2
            write_random(f, start, each, rng)
    return each * regions


def last_log(logs, label):
    found = sorted(glob.glob(os.path.join(logs, f"*-{label}.out")))
    return found[-1] if found else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=None, help="image size (default 4096; 256 with --quick)")
    ap.add_argument("--data-percent", type=int, default=100, help="share of the image holding data (default 100)")
    ap.add_argument("--changed-percent", type=float, default=1.0, help="share overwritten before the second backup")
    ap.add_argument("--regions", type=int, default=8, help="runs the change is made in (default 8)")
    ap.add_argument("--work", help="work folder, empty or missing (default: a new folder under /tmp)")
    ap.add_argument("--keep-work", action="store_true", help="keep the work folder")
    ap.add_argument("--freezer", help="the freezer binary (default: target/release/freezer, built if missing)")
    ap.add_argument("--json-out", help="write every measurement and the summary as JSON")
    ap.add_argument("--quick", action="store_true", help="a 256 MiB image: a sanity check")
    ap.add_argument("--btrfs", action="store_true",
                    help="the image on a loop-mounted btrfs (root, btrfs-progs): freezer reads only what changed")
    args = ap.parse_args()
    args.size_mib = args.size_mib or (256 if args.quick else 4096)
    if shutil.which("restic") is None:
        subprocess.run(["apt-get", "install", "-y", "restic"], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if args.btrfs and shutil.which("mkfs.btrfs") is None:
        subprocess.run(["apt-get", "install", "-y", "btrfs-progs"], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    binary = compare.ensure_freezer(args.freezer)
    return compare.measure_in_work_folder(args, "freezer-image-bench-", measure, binary)


def measure(args, binary):
    binary = compare.private_copy(binary, args.work)
    secrets = os.path.join(args.work, "secrets")
    logs = os.path.join(args.work, "logs")
    size = args.size_mib * MIB
    img = os.path.join(args.work, "disk.raw")
    mnt = None
    if args.btrfs:
        backing = os.path.join(args.work, "btrfs.img")
        with open(backing, "wb") as f:
            f.truncate(2 * size + 1024 * MIB)
        subprocess.run(["mkfs.btrfs", "-q", backing], check=True)
        mnt = os.path.join(args.work, "btrfs")
        os.mkdir(mnt)
        subprocess.run(["mount", "-o", "loop", backing, mnt], check=True)
        img = os.path.join(mnt, "disk.raw")
    try:
        return measure_image(args, binary, secrets, logs, size, img)
    finally:
        if mnt:
            subprocess.run(["umount", mnt], check=False)


def measure_image(args, binary, secrets, logs, size, img):
    runner = Runner(logs, 0.0)
    data = size * args.data_percent // 100
    report = {"config": {"command": "python3 benches/image.py " + shlex.join(sys.argv[1:]),
                         "size_mib": args.size_mib, "data_percent": args.data_percent,
                         "changed_percent": args.changed_percent, "regions": args.regions,
                         "btrfs": args.btrfs},
              "machine": compare.machine_info(args.work), "versions": compare.versions(binary)}
    freezer = compare.Freezer(binary, secrets)
    restic = compare.Restic(secrets)
    res = {t: {} for t in ("freezer", "restic")}
    try:
        say(f"making the image: {args.size_mib} MiB, {args.data_percent}% data")
        make_image(img, size, data, 1)
        repos = {t.name: os.path.join(args.work, f"repo-{t.name}") for t in (freezer, restic)}
        caches = {t.name: os.path.join(args.work, f"cache-{t.name}") for t in (freezer, restic)}
        for t in (freezer, restic):
            runner.run(f"{t.name}-init", t.init(repos[t.name], caches[t.name]),
                       env=t.env_for(repos[t.name], caches[t.name]))
        for step in ("first", "changed"):
            if step == "changed":
                n = change_image(img, data, args.changed_percent, args.regions, 2)
                say(f"changed {n} bytes in {args.regions} runs")
                report["config"]["changed_bytes"] = n
            for t in (freezer, restic):
                repo = repos[t.name]
                if t is freezer:
                    cmd = [binary, "--json", "backup", "--repo", repo, "--encrypt-pass-file", t.pass_file,
                           "--mode", "image", "--path-to-backup", img, "-N", "bench"]
                else:
                    cmd = t.backup(repo, img, step)
                before = compare.du_kib(repo)
                wall, rss = runner.measure(f"{t.name}-{step}", cmd, env=t.env_for(repo, caches[t.name]),
                                           inputs=[img])
                added = (compare.du_kib(repo) - before) * 1024
                r = {"wall_s": wall, "rss_kib": rss, "added_bytes": added}
                if t is freezer:
                    with open(last_log(logs, f"freezer-{step}")) as f:
                        out = json.load(f)
                    stats = find_stats(out)
                    r["read_bytes"] = stats.get("bytes_read")
                    r["packed_bytes"] = stats.get("bytes_added")
                res[t.name][step] = r
                say(f"{t.name} {step}: {wall:.2f} s, {rss / 1024:.0f} MiB RSS, added {added / MIB:.1f} MiB"
                    + (f", read {r['read_bytes'] / MIB:.1f} MiB" if "read_bytes" in r else ""))
        out = os.path.join(args.work, "restored.raw")
        runner.run("freezer-restore", [binary, "restore", "--repo", repos["freezer"], "--encrypt-pass-file",
                                       freezer.pass_file, "-N", "bench", "--restore-abs-path", out])
        same = subprocess.run(["cmp", img, out], capture_output=True).returncode == 0
        report["restore"] = {"identical": same, "du_kib": compare.du_kib(out),
                             "apparent_kib": compare.du_apparent_kib(out)}
    except CommandFailed as e:
        say(str(e))
        return 2
    report["results"] = res
    lines = [f"image {args.size_mib} MiB ({args.data_percent}% data), {args.changed_percent}% changed in "
             f"{args.regions} runs{' on btrfs' if args.btrfs else ''}; {report['machine'].get('cpu', '')}", "",
             "| | freezer | restic | freezer/restic |", "|---|---|---|---|"]
    for step in ("first", "changed"):
        f, r = res["freezer"][step], res["restic"][step]
        lines += [
            f"| {step}: wall | {f['wall_s']:.2f} s | {r['wall_s']:.2f} s | **{f['wall_s'] / r['wall_s']:.2f}** |",
            f"| {step}: peak RSS | {f['rss_kib'] / 1024:.0f} MiB | {r['rss_kib'] / 1024:.0f} MiB | "
            f"**{f['rss_kib'] / r['rss_kib']:.2f}** |",
            f"| {step}: bytes added | {f['added_bytes'] / MIB:.1f} MiB ({100 * f['added_bytes'] / size:.2f}%) | "
            f"{r['added_bytes'] / MIB:.1f} MiB ({100 * r['added_bytes'] / size:.2f}%) | "
            f"**{f['added_bytes'] / max(r['added_bytes'], 1):.2f}** |",
            f"| {step}: bytes read (freezer) | {f['read_bytes'] / MIB:.1f} MiB | | |",
        ]
    rs = report["restore"]
    lines += ["", f"freezer's restore identical: {rs['identical']}; restored file {rs['apparent_kib'] // 1024} MiB, "
                  f"{rs['du_kib'] // 1024} MiB on disk"]
    print("\n".join(lines))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=1)
    return 0 if rs["identical"] else 2


def find_stats(doc):
    """The snapshot's stats in freezer's JSON report, wherever they sit."""
    if isinstance(doc, dict):
        if "bytes_read" in doc and "bytes_added" in doc:
            return doc
        for v in doc.values():
            s = find_stats(v)
            if s:
                return s
    elif isinstance(doc, list):
        for v in doc:
            s = find_stats(v)
            if s:
                return s
    return {}


if __name__ == "__main__":
    sys.exit(main())
