#!/usr/bin/env python3
"""Make tar-engine backup fixtures with upstream Freezer's own agent (freezer==19.0.0).

Standard library only. For each compression upstream supports (gzip, bzip2, xz; zstd is
probed and recorded as refused) and with/without --encrypt-pass-file, it builds a source
tree and makes a level chain 0..3 on the local storage, editing the tree between levels
(content edits, new files, a deleted file, a deleted folder, symlink retarget, file->symlink
type change, mode-only change, old/future mtimes, a renamed folder). The gzip chain without
encryption gets one more backup: a second level-0 chain, so restore_from_date has to pick.

It writes OUT/manifest.json: for each backup the agent args, level, level-0 timestamp,
timestamp (the `T` in `L_T`), on-storage paths and the expected tree after restoring that
backup (every path: type, mode, size, sha256, mtime (int seconds), uid/gid, symlink
target; deleted paths are absent).

    python3 make_upstream_backups.py --agent /tmp/fa/bin/freezer-agent --out /tmp/fx [--self-check]

--self-check restores every backup with upstream's agent (--action restore
--restore-from-date <T>) into OUT/restore/... and compares with the manifest.

Upstream's agent needs no cloud for local storage when PYTHONPATH holds the nocloud
sitecustomize (default: tests/upstream/nocloud beside this script, or --nocloud DIR, or
$FREEZER_NOCLOUD).
"""
import argparse
import datetime
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time

HOST = "fixture-host"
PASSWORD = "fixture pass phrase\n"
ODD_UID, ODD_GID = 1234, 5678


# ----------------------------------------------------------------------------- tree helpers

def blob(seed, n):
    """Deterministic pseudo-random bytes."""
    out = bytearray()
    h = seed.encode()
    while len(out) < n:
        h = hashlib.sha256(h).digest()
        out += h
    return bytes(out[:n])


def write(root, rel, data, mode=None, mtime=None):
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    if mode is not None:
        os.chmod(p, mode)
    if mtime is not None:
        os.utime(p, ns=(mtime * 10**9, mtime * 10**9))


def symlink(root, rel, target):
    p = os.path.join(root, rel)
    if os.path.lexists(p):
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)
    os.symlink(target, p)


LONG = "long_" + "x" * 120 + "/" + "name_" + "y" * 130 + ".txt"  # >100 chars: GNU 'L' records


def level0(root):
    os.makedirs(root)
    write(root, "a.txt", "alpha\n" * 10)
    write(root, "bin.dat", blob("bin", 20000))
    write(root, "dir1/b.txt", "bravo\n")
    write(root, "dir1/sub/c.txt", "charlie\n")
    write(root, "deldir/x.txt", "x-ray\n")
    write(root, "deldir/y/z.txt", "zulu\n")
    write(root, "del.txt", "to be deleted at level 1\n")
    write(root, "mode600.txt", "private\n", mode=0o600)
    write(root, "ro.txt", "read only\n", mode=0o444)
    write(root, "exec.sh", "#!/bin/sh\necho hi\n", mode=0o755)
    write(root, "setgid.sh", "#!/bin/sh\n", mode=0o2755)
    write(root, "old.txt", "old mtime\n", mtime=1000000000)
    write(root, "swap", "regular file at levels 0-1, symlink from level 2\n")
    write(root, "sp ace \u00fc\u00e9.txt", "unicode name\n")
    write(root, LONG, "long path\n")
    write(root, "priv/secret.txt", "in a 0700 dir\n")
    os.chmod(os.path.join(root, "priv"), 0o700)
    os.makedirs(os.path.join(root, "emptydir"))
    os.makedirs(os.path.join(root, "sticky"))
    os.chmod(os.path.join(root, "sticky"), 0o1777)
    symlink(root, "link_rel", "a.txt")
    symlink(root, "link_dangling", "does/not/exist")
    symlink(root, "link_dir", "dir1")
    os.link(os.path.join(root, "exec.sh"), os.path.join(root, "hard_exec.sh"))
    if os.geteuid() == 0:
        write(root, "owned.txt", "odd owner\n")
        os.chown(os.path.join(root, "owned.txt"), ODD_UID, ODD_GID)


def level1(root):
    with open(os.path.join(root, "a.txt"), "a") as f:
        f.write("appended at level 1\n")
    write(root, "new1.txt", "new at level 1\n")
    os.unlink(os.path.join(root, "del.txt"))
    os.chmod(os.path.join(root, "mode600.txt"), 0o640)  # mode-only change: ctime
    write(root, "bin.dat", blob("bin1", 20000), mtime=1100000000)  # content + OLD mtime
    write(root, "dir1/sub/c2.txt", "new in old dir\n")


def level2(root):
    shutil.rmtree(os.path.join(root, "deldir"))
    write(root, "newdir/n.txt", "new dir at level 2\n")
    write(root, "newdir/deeper/m.txt", "deeper\n", mode=0o604)
    symlink(root, "link_rel", "dir1/b.txt")  # retarget
    symlink(root, "swap", "a.txt")  # file -> symlink
    write(root, "dir1/b.txt", "bravo edited at level 2\n")
    with open(os.path.join(root, "exec.sh"), "a") as f:  # hard_exec.sh shares the inode
        f.write("echo level 2\n")


def level3(root):
    write(root, "bin.dat", b"")  # truncated to empty
    os.rename(os.path.join(root, "dir1/sub"), os.path.join(root, "dir1/sub2"))
    os.utime(os.path.join(root, "old.txt"), ns=(1900000000 * 10**9,) * 2)  # future mtime
    write(root, "emptydir/now_full.txt", "level 3\n")
    os.unlink(os.path.join(root, "new1.txt"))


def chain2(root):
    write(root, "a.txt", "rewritten for the second chain\n")
    write(root, "chain2.txt", "only in the second level-0 chain\n")


EDITS = [level1, level2, level3]


def snapshot(root):
    """Expected tree: relative path -> attributes (lstat, no following)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        names = [(n, True) for n in dirnames] + [(n, False) for n in filenames]
        entries = []
        if dirpath == root:
            entries.append((".", root))
        for n, _ in names:
            p = os.path.join(dirpath, n)
            entries.append((os.path.relpath(p, root), p))
        for rel, p in entries:
            if rel in out:
                continue
            st = os.lstat(p)
            e = {"mode": "%04o" % stat.S_IMODE(st.st_mode), "uid": st.st_uid,
                 "gid": st.st_gid, "mtime": int(st.st_mtime)}
            if stat.S_ISLNK(st.st_mode):
                e["type"] = "symlink"
                e["target"] = os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                e["type"] = "dir"
            else:
                e["type"] = "file"
                with open(p, "rb") as f:
                    data = f.read()
                e["size"] = len(data)
                e["sha256"] = hashlib.sha256(data).hexdigest()
            out[rel] = e
    return dict(sorted(out.items()))


# ----------------------------------------------------------------------------- agent helpers

class Agent:
    def __init__(self, agent, nocloud, logdir):
        self.agent = agent
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = nocloud + (
            os.pathsep + self.env["PYTHONPATH"] if self.env.get("PYTHONPATH") else "")
        self.logdir = logdir
        self.calls = 0
        self.seconds = 0.0

    def run(self, args, check=True, env=None):
        self.calls += 1
        log = os.path.join(self.logdir, "agent-%03d.log" % self.calls)
        argv = [self.agent] + args + ["--log-file", log]
        t = time.monotonic()
        p = subprocess.run(argv, env=env or self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           cwd=self.logdir)
        dt = time.monotonic() - t
        self.seconds += dt
        if check and p.returncode != 0:
            sys.stderr.write(p.stdout.decode(errors="replace")[-4000:])
            raise SystemExit("freezer-agent failed (rc %d): %s" % (p.returncode, " ".join(argv)))
        return p, dt


def find_new_backup(storage, name, seen):
    """Return (T0, L, T) of the backup under metadata/tar/<host>_<name> not in `seen`."""
    base = os.path.join(storage, "metadata", "tar", "%s_%s" % (HOST, name))
    found = []
    for t0 in os.listdir(base):
        for lt in os.listdir(os.path.join(base, t0)):
            key = (int(t0),) + tuple(int(x) for x in lt.split("_"))
            if key not in seen:
                found.append(key)
    if len(found) != 1:
        raise SystemExit("expected one new backup for %s, found %r" % (name, found))
    seen.add(found[0])
    return found[0]


def iso(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def wait_next_second(last_t):
    # T has one-second resolution; two backups in the same second would share a name.
    while time.time() < last_t + 1.05:
        time.sleep(0.05)


# ----------------------------------------------------------------------------- main

def make(args):
    out = os.path.abspath(args.out)
    if os.path.exists(out):
        shutil.rmtree(out)
    for d in ("src", "storage", "logs"):
        os.makedirs(os.path.join(out, d))
    storage = os.path.join(out, "storage")
    passfile = os.path.join(out, "pass")
    with open(passfile, "w") as f:
        f.write(PASSWORD)
    agent = Agent(args.agent, args.nocloud, os.path.join(out, "logs"))
    t_start = time.monotonic()

    manifest = {
        "generator": "tests/upstream/make_upstream_backups.py",
        "upstream": "freezer==19.0.0",
        "hostname": HOST,
        "storage": "local",
        "container": "storage",
        "password_file": "pass",
        "password_first_line": PASSWORD.rstrip("\n"),
        "tools": {},
        "unsupported": {},
        "chains": [],
    }
    for tool, argv in (("tar", ["tar", "--version"]), ("openssl", ["openssl", "version"])):
        try:
            manifest["tools"][tool] = subprocess.run(
                argv, stdout=subprocess.PIPE).stdout.decode().splitlines()[0]
        except OSError:
            manifest["tools"][tool] = None

    common = ["--action", "backup", "--mode", "fs", "--storage", "local",
              "--container", storage, "--hostname", HOST, "--incremental", "--max-level", "3"]

    # zstd: probe once, record upstream's answer
    if "zstd" in args.compressions:
        probe_src = os.path.join(out, "src", "zstd-probe")
        level0(probe_src)
        p, dt = agent.run(common + ["--backup-name", "zstd", "--path-to-backup", probe_src,
                                    "--compression", "zstd"], check=False)
        text = p.stdout.decode(errors="replace")
        err = [l for l in text.splitlines() if "zstd" in l and ("rror" in l or "choice" in l)]
        manifest["unsupported"]["zstd"] = {"returncode": p.returncode,
                                           "error": err[-1].strip() if err else text[-500:]}
        shutil.rmtree(probe_src)

    for comp in [c for c in args.compressions if c != "zstd"]:
        for enc in (False, True):
            name = comp + ("-enc" if enc else "")
            src = os.path.join(out, "src", name)
            level0(src)
            chain = {"backup_name": name, "hostname_backup_name": "%s_%s" % (HOST, name),
                     "compression": comp, "encrypted": enc, "source": os.path.relpath(src, out),
                     "backups": []}
            seen = set()
            last_t = 0
            steps = [None] + EDITS + ([chain2] if (comp == "gzip" and not enc) else [])
            for i, edit in enumerate(steps):
                if edit:
                    edit(src)
                wait_next_second(last_t)
                bargs = common + ["--backup-name", name, "--path-to-backup", src,
                                  "--compression", comp]
                if enc:
                    bargs += ["--encrypt-pass-file", passfile]
                _, dt = agent.run(bargs)
                t0, level, t = find_new_backup(storage, name, seen)
                last_t = t
                rel = "data/tar/%s_%s/%d/%d_%d" % (HOST, name, t0, level, t)
                chain["backups"].append({
                    "step": i,
                    "edit": edit.__name__ if edit else "level0",
                    "args": [a.replace(out + "/", "") if isinstance(a, str) else a
                             for a in bargs],
                    "level": level,
                    "level_zero_timestamp": t0,
                    "timestamp": t,
                    "restore_from_date": iso(t),
                    "metadata_path": "storage/metadata/tar/%s_%s/%d/%d_%d/metadata"
                                     % (HOST, name, t0, level, t),
                    "data_path": "storage/" + rel + "/data",
                    "engine_metadata_path": "storage/" + rel + "/engine_metadata",
                    "data_size": os.path.getsize(os.path.join(storage, rel, "data")),
                    "agent_seconds": round(dt, 2),
                    "expected": snapshot(src),
                })
                print("%-10s step %d level %d T=%d (%.1fs)" % (name, i, level, t, dt), flush=True)
            manifest["chains"].append(chain)

    if any(c["backup_name"] == "gzip-enc" for c in manifest["chains"]):
        manifest["chains"].append(make_md5_chain(out, manifest))

    manifest["backup_calls"] = agent.calls
    manifest["backup_seconds_total"] = round(time.monotonic() - t_start, 1)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)
    print("made %d agent calls in %.1fs" % (agent.calls, manifest["backup_seconds_total"]))
    return manifest


def openssl_md5_dir(out):
    """A folder with an `openssl` that adds `-md md5`: upstream's agent run with it first on
    PATH behaves as it did with OpenSSL < 1.1 (EVP_BytesToKey with MD5)."""
    d = os.path.join(out, "openssl-md5")
    os.makedirs(d, exist_ok=True)
    real = shutil.which("openssl")
    w = os.path.join(d, "openssl")
    with open(w, "w") as f:
        f.write('#!/bin/sh\nexec %s "$@" -md md5\n' % real)
    os.chmod(w, 0o755)
    return d


def make_md5_chain(out, manifest):
    """Copy the gzip-enc chain as gzip-enc-md5, re-encrypting every data object with the MD5
    key derivation, which is what upstream wrote when its openssl binary was older than 1.1."""
    src_chain = next(c for c in manifest["chains"] if c["backup_name"] == "gzip-enc")
    storage = os.path.join(out, "storage")
    old, new = "%s_gzip-enc" % HOST, "%s_gzip-enc-md5" % HOST
    for kind in ("metadata", "data"):
        shutil.copytree(os.path.join(storage, kind, "tar", old),
                        os.path.join(storage, kind, "tar", new))
    passfile = os.path.join(out, "pass")
    chain = json.loads(json.dumps(src_chain))
    chain["backup_name"] = "gzip-enc-md5"
    chain["hostname_backup_name"] = new
    chain["key_derivation_digest"] = "md5"
    chain["made_by"] = ("a copy of gzip-enc whose data objects were re-encrypted with "
                        "`openssl enc -aes-256-cfb -md md5`; --self-check restores it with "
                        "upstream's agent and an openssl wrapper adding -md md5")
    for b in chain["backups"]:
        for k in ("metadata_path", "data_path", "engine_metadata_path"):
            b[k] = b[k].replace(old, new)
        data = os.path.join(out, b["data_path"])
        plain = subprocess.run(["openssl", "enc", "-d", "-aes-256-cfb", "-md", "sha256",
                                "-pass", "file:" + passfile, "-in", data],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               check=True).stdout
        enc = subprocess.run(["openssl", "enc", "-aes-256-cfb", "-md", "md5",
                              "-pass", "file:" + passfile], input=plain,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             check=True).stdout
        with open(data, "wb") as f:
            f.write(enc)
        b["data_size"] = len(enc)
    for c in manifest["chains"]:
        if c["encrypted"]:
            c.setdefault("key_derivation_digest", "sha256")
    return chain


def diff(expected, got, ignore_dir_mtime):
    problems = []
    for k in sorted(set(expected) | set(got)):
        if k not in got:
            problems.append("missing %s" % k)
        elif k not in expected:
            problems.append("unexpected %s %r" % (k, got[k]))
        else:
            e, g = dict(expected[k]), dict(got[k])
            if ignore_dir_mtime and e.get("type") == "dir":
                e.pop("mtime"), g.pop("mtime")
            if e != g:
                problems.append("differs %s: expected %r got %r" % (k, e, g))
    return problems


def self_check(args, manifest):
    out = os.path.abspath(args.out)
    agent = Agent(args.agent, args.nocloud, os.path.join(out, "logs"))
    t_start = time.monotonic()
    failures = 0
    results = []
    for chain in manifest["chains"]:
        for b in chain["backups"]:
            dest = os.path.join(out, "restore", chain["backup_name"], str(b["step"]))
            os.makedirs(dest)
            rargs = ["--action", "restore", "--storage", "local", "--container",
                     os.path.join(out, "storage"), "--hostname", HOST,
                     "--backup-name", chain["backup_name"], "--restore-abs-path", dest,
                     "--restore-from-date", b["restore_from_date"]]
            if chain["encrypted"]:
                rargs += ["--encrypt-pass-file", os.path.join(out, "pass")]
            env = None
            if chain.get("key_derivation_digest") == "md5":
                env = dict(agent.env)
                env["PATH"] = openssl_md5_dir(out) + os.pathsep + env.get("PATH", "")
            p, dt = agent.run(rargs, check=False, env=env)
            got = snapshot(dest)
            problems = diff(b["expected"], got, args.ignore_dir_mtime)
            if p.returncode:
                problems.insert(0, "agent rc %d" % p.returncode)
            status = "ok" if not problems else "FAIL"
            failures += bool(problems)
            results.append({"chain": chain["backup_name"], "step": b["step"], "status": status,
                            "seconds": round(dt, 2), "problems": problems})
            print("restore %-10s step %d level %d: %s (%.1fs)"
                  % (chain["backup_name"], b["step"], b["level"], status, dt), flush=True)
            for pr in problems[:20]:
                print("    " + pr)
    total = round(time.monotonic() - t_start, 1)
    print("self-check: %d restores, %d failed, %.1fs" % (len(results), failures, total))
    with open(os.path.join(out, "self-check.json"), "w") as f:
        json.dump({"restores": results, "seconds_total": total, "failures": failures}, f,
                  indent=1, ensure_ascii=False)
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agent", required=True, help="path to upstream's freezer-agent")
    ap.add_argument("--out", required=True, help="output folder (wiped and recreated)")
    ap.add_argument("--nocloud", default=os.environ.get(
                        "FREEZER_NOCLOUD", os.path.join(os.path.dirname(os.path.abspath(__file__)), "nocloud")),
                    help="folder holding the nocloud sitecustomize.py")
    ap.add_argument("--compressions", default="gzip,bzip2,xz,zstd",
                    type=lambda s: s.split(","))
    ap.add_argument("--self-check", action="store_true",
                    help="restore every backup with upstream's agent and compare")
    ap.add_argument("--check-only", action="store_true",
                    help="skip making; self-check an existing OUT/manifest.json")
    ap.add_argument("--ignore-dir-mtime", action="store_true",
                    help="do not compare directory mtimes in --self-check")
    args = ap.parse_args()
    if args.check_only:
        with open(os.path.join(args.out, "manifest.json")) as f:
            manifest = json.load(f)
        shutil.rmtree(os.path.join(args.out, "restore"), ignore_errors=True)
    else:
        manifest = make(args)
    if args.self_check or args.check_only:
        sys.exit(1 if self_check(args, manifest) else 0)


if __name__ == "__main__":
    main()
