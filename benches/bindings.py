#!/usr/bin/env python3
"""The bindings against the CLI: one backup of the same corpus through each front-end.

    python3 benches/bindings.py [--runs 3] [--size-mb 512] [--work DIR] [--python PY]

Builds (release) the CLI and the C library, and a virtual environment holding freezer_py
(`pip install ./freezer-py`, the README's command) unless --python names an interpreter that
has it. Makes the corpus (benches/corpus.py, seed 1), then in each run, for each front-end in
turn (the order rotates), with a fresh encrypted repository made by `freezer init` (not
measured) and the corpus read once before (a warm page cache), measures one process that backs
the corpus up:

  cli     freezer backup --repo R --encrypt-pass-file P --path-to-backup C --backup-name b
  python  python3 -c 'freezer_py.run_action({...})'       (the same options as a dict)
  c       a C program calling freezer_run_action("{...}")  (the same options as JSON)

Each process opens the repository once (one Argon2id derivation) and backs the corpus up; wall
time, CPU time and peak RSS come from os.wait4. Prints the medians and each binding's ratio to
the CLI. Exit code 0 when every command worked (a measurement, not a test).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PASSPHRASE = "bindings.py benchmark passphrase, not a secret"

C_DRIVER = r"""
#include <stdio.h>
#include <freezer.h>
int main(int argc, char **argv) {
    if (argc != 2) return 2;
    char *doc = NULL;
    FreezerResult r = freezer_run_action(argv[1], &doc);
    if (r != FREEZER_RESULT_OK) fprintf(stderr, "result %d: %s\n", (int)r, doc ? doc : "");
    freezer_string_free(doc);
    return r == FREEZER_RESULT_OK ? 0 : 1;
}
"""

PY_DRIVER = "import json, sys, freezer_py; freezer_py.run_action(json.loads(sys.argv[1]))"


def say(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    subprocess.run(cmd, check=True, **kw)


def warm(root):
    buf = bytearray(1 << 20)
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            try:
                with open(p, "rb", buffering=0) as f:
                    while f.readinto(buf):
                        pass
            except OSError:
                pass


def measure(cmd, env, log):
    os.sync()
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)} (log: {log})")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "rss_mib": usage.ru_maxrss / 1024}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=512)
    ap.add_argument("--work", default=None, help="working folder (default: a new one under /tmp)")
    ap.add_argument("--python", default=None, help="an interpreter that has freezer_py installed")
    ap.add_argument("--keep", action="store_true", help="keep the working folder")
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="freezer-bindings-")
    os.makedirs(work, exist_ok=True)
    target = os.path.abspath(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")))
    release = os.path.join(target, "release")

    say("building the CLI and the C library (release)")
    run(["cargo", "build", "--release", "--locked", "-p", "freezer-cli", "-p", "freezer-ffi"], cwd=ROOT)
    freezer = os.path.join(release, "freezer")
    libdir = os.path.join(work, "lib")
    os.makedirs(libdir, exist_ok=True)
    for name in ("libfreezer.so.0", "libfreezer_ffi.so"):
        link = os.path.join(libdir, name)
        if not os.path.lexists(link):
            os.symlink(os.path.join(release, "libfreezer_ffi.so"), link)
    with open(os.path.join(work, "driver.c"), "w") as f:
        f.write(C_DRIVER)
    c_driver = os.path.join(work, "driver")
    run(["cc", "-O2", os.path.join(work, "driver.c"), "-I", os.path.join(ROOT, "freezer-ffi", "include"),
         "-L", libdir, "-lfreezer_ffi", "-o", c_driver])

    python = args.python
    if python is None:
        venv = os.path.join(work, "venv")
        if not os.path.exists(os.path.join(venv, "bin", "python")):
            say("pip install ./freezer-py into a new virtual environment (a release build)")
            run([sys.executable, "-m", "venv", venv])
            run([os.path.join(venv, "bin", "pip"), "install", "-q", "--disable-pip-version-check",
                 os.path.join(ROOT, "freezer-py")], cwd=work)
        python = os.path.join(venv, "bin", "python")

    corpus = os.path.join(work, "corpus")
    if not os.path.exists(corpus):
        say(f"making the corpus ({args.size_mb} MiB)")
        run([sys.executable, os.path.join(HERE, "corpus.py"), "make", "--out", corpus,
             "--size-mb", str(args.size_mb)], stdout=subprocess.DEVNULL)
    pass_file = os.path.join(work, "passphrase")
    with open(pass_file, "w") as f:
        f.write(PASSPHRASE + "\n")
    os.chmod(pass_file, 0o600)

    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
           "LD_LIBRARY_PATH": libdir}
    logs = os.path.join(work, "logs")
    os.makedirs(logs, exist_ok=True)
    fronts = ["cli", "python", "c"]
    samples = {f: [] for f in fronts}
    for i in range(args.runs):
        order = fronts[i % 3:] + fronts[:i % 3]
        for front in order:
            repo = os.path.join(work, f"repo-{front}-{i}")
            shutil.rmtree(repo, ignore_errors=True)
            run([freezer, "init", "--repo", repo, "--encrypt-pass-file", pass_file],
                stdout=subprocess.DEVNULL, env=env)
            options = {"action": "backup", "path_to_backup": corpus, "backup_name": "b",
                       "container": repo, "encrypt_pass_file": pass_file}
            cmd = {
                "cli": [freezer, "backup", "--repo", repo, "--encrypt-pass-file", pass_file,
                        "--path-to-backup", corpus, "--backup-name", "b"],
                "python": [python, "-c", PY_DRIVER, json.dumps(options)],
                "c": [c_driver, json.dumps(options)],
            }[front]
            warm(corpus)
            s = measure(cmd, env, os.path.join(logs, f"{i}-{front}.log"))
            samples[front].append(s)
            say(f"run {i + 1} {front}: {s['wall_s']:.2f} s wall, {s['cpu_s']:.2f} s CPU, {s['rss_mib']:.0f} MiB")
            shutil.rmtree(repo, ignore_errors=True)

    def med(front, key):
        return statistics.median(s[key] for s in samples[front])
    print(f"\nfirst backup of a {args.size_mb} MiB corpus, median of {args.runs} "
          f"(this machine: {os.cpu_count()} cores)\n")
    print("| front-end | wall s | CPU s | peak RSS MiB | wall / CLI | CPU / CLI |")
    print("|---|---|---|---|---|---|")
    for front in fronts:
        print(f"| {front} | {med(front, 'wall_s'):.2f} | {med(front, 'cpu_s'):.2f} | "
              f"{med(front, 'rss_mib'):.0f} | {med(front, 'wall_s') / med('cli', 'wall_s'):.3f} | "
              f"{med(front, 'cpu_s') / med('cli', 'cpu_s'):.3f} |")
    if not args.keep and args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
