#!/usr/bin/env python3
"""The in-memory index: bytes per blob, freezer-rs against restic (issue 13).

    python3 benches/index.py --work DIR [--files 1020000] [--seeds 1,2] [--tiny-files 1000]
                             [--runs 3] [--also-check] [--freezer PATH] [--freezer-args ARGS]
                             [--idle-timeout 300] [--json-out FILE] [--markdown-out FILE]
    python3 benches/index.py --work DIR --reuse [--runs N ...]   # measure again in the kept repositories
    python3 benches/index.py --quick                      # 2 x 20000 files, one run: a sanity check

Neither tool reports its own index memory, so it is measured from outside, the same way for
both: the peak RSS (os.wait4, through compare.py's Runner) of a command that loads the whole
index and does little else, a backup of a small new folder (a few files of fresh random bytes,
a new folder and, for freezer, a new backup name every time: no parent snapshot to read). Both
tools load every index file before a backup (freezer: `Repository::load_index`, restic:
`Repository.LoadIndex`). It runs against three repositories per tool:

  big    `corpus.py many --files N --seed S` for every seed in --seeds, each backed up once:
         every distinct tiny file is one blob in both tools (both store a file under 512 KiB as
         one chunk), every folder one tree blob. Files of 0-2 bytes repeat (there are only 1,
         256 and 65536 of them), so the blobs are counted in the repositories, never taken
         from the file count: about 99.2% of the files give a blob, and the 2 x 1,020,000
         files of the default make about 2.03 million blobs (issue 13 asks for at least 2
         million; fewer fail the "blobs" row of the targets).
  mid    a copy of the big repository made right after its first seed's backup (when --seeds
         names two or more): about half the blobs.
  tiny   one backup of `corpus.py many --files TINY_FILES --seed 99` (1000 files).

  bytes per blob = (peak RSS big - peak RSS tiny) / (blobs big - blobs tiny)

per run (the median of --runs is reported, with its range), the blob counts being those of the
index the measured command loaded: for freezer from the `backup: index loaded ... blobs=N`
line of its log (-v), for restic from `restic list blobs` just before. The target of issue 13:
freezer at most 0.5x restic's bytes per blob.

The same between the mid and the big repository is shown too, because peak RSS is a maximum
over the whole command: both tools start by deriving the key from the passphrase (freezer:
Argon2id, 32 MiB, a 48 MiB peak for `freezer snapshots` here; restic: scrypt N=2^15 r=8,
32 MiB, calibrated at init), a peak the index must first exceed (freezer's allocator returns
that memory, restic's Go heap reuses it). In the tiny repository the peak is the key
derivation's, so big - tiny leaves out up to that much of the index (some 16 bytes per blob
at 2 million blobs, for each tool); big - mid has both ends above it.
Hash tables grow by doubling, so a tool's figure also depends on where the counts fall
between its doublings; the report shows, next to the measurement, what each tool's code
predicts for the counts measured.

`--also-check` also measures `freezer check` and `restic check` (no pack data read) the same way;
those walk every tree too, so their figure is more than the index, and is shown apart.

Building the big repositories takes long (two million files written, then backed up by each
tool), so it is done once, into --work, and every step is recorded in WORK/state.json: a later
invocation with `--work DIR --reuse` (the corpus options default to the recorded ones) skips
what is done (an interrupted build resumes at the step it was in) and only measures, e.g. with
a newer freezer binary (which must still read the repository). Nothing is deleted between steps, nor in a --work folder at all: on ext4 without a
journal, creating many files within minutes of deleting many is several times slower (see
compare.py), which would distort the build and the probes. Without --work, a new folder under
/tmp is used and deleted at the end (`--keep` keeps it); do not start a measurement within 5
minutes of deleting a big work folder.

Layout of WORK: state.json; data/seed-S, data/tiny (the corpora); repos/TOOL-{tiny,mid,big};
cache/ (restic's caches); probes/ (the small folders backed up, one per measurement);
logs/STAMP/ (every command's output, per invocation); bin/ (a private copy of freezer);
secrets/; tmp/ (TMPDIR of the commands).

The exit code is 0 when every command worked, whatever the numbers say (a measurement, not a
test); 2 when a command failed (its logs stay). Only the Python standard library is used.
"""

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the runner, the tools' settings, machine and version facts)
from compare import CORPUS_PY, CommandFailed, Runner, say  # noqa: E402

INIT_KINDS = ("tiny", "big")  # "mid" is a copy of "big" after its first seed
TARGET_RATIO = 0.5
DEFAULT_FILES = 1_020_000
DEFAULT_SEEDS = "1,2"
TINY_SEED = 99
PROBE_FILES = 4
PROBE_BYTES = 16 * 1024
STATE = "state.json"
INDEX_LOADED = re.compile(r"index loaded.*?\bblobs=(\d+)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# ---------------------------------------------------------------------------------------------
# The work folder and its state


def open_work(args):
    """The work folder (created; an existing non-empty one only with --reuse) and its state."""
    if args.work:
        work = os.path.abspath(args.work)
        os.makedirs(work, exist_ok=True)
        entries = os.listdir(work)
        if entries and not args.reuse:
            sys.exit(f"--work {work}: not empty; --reuse measures the repositories it holds "
                     "(deleting it would slow the next file creations: see the docstring)")
        if entries and not os.path.exists(os.path.join(work, STATE)):
            sys.exit(f"--work {work}: not empty and without {STATE}: not a work folder of index.py")
    else:
        work = tempfile.mkdtemp(prefix="index-", dir="/tmp")
    for sub in ("bin", "data", "repos", "cache", "probes", "logs", "tmp"):
        os.makedirs(os.path.join(work, sub), exist_ok=True)
    os.makedirs(os.path.join(work, "secrets"), mode=0o700, exist_ok=True)
    say(f"work folder {work}")
    state = {"params": None, "steps": {}}
    path = os.path.join(work, STATE)
    if os.path.exists(path):
        with open(path) as f:
            state = json.load(f)
    return work, state


def save_state(work, state):
    path = os.path.join(work, STATE)
    with open(path + ".new", "w") as f:
        json.dump(state, f, indent=1)
        f.write("\n")
    os.replace(path + ".new", path)


def check_params(state, params):
    """Stores the build parameters, or refuses a reused folder built with others."""
    if state["params"] is None:
        state["params"] = params
    elif state["params"] != params:
        sys.exit(f"the work folder was built with {state['params']}, not {params}: "
                 "give the same --files, --seeds and --tiny-files, or another --work")


def step(work, state, runner, name, cmd, env=None):
    """Runs one build step unless state.json says it is done; records its wall time and peak
    RSS. A step that was interrupted runs again from the start (each is safe to repeat)."""
    done = state["steps"].get(name)
    if done:
        say(f"{name}: done before ({done['wall_s']:.0f} s), skipped")
        return
    say(f"{name}: {shlex.join(cmd) if len(shlex.join(cmd)) < 160 else cmd[0] + ' ...'}")
    wall, rss = runner.measure(name.replace(" ", "-"), cmd, env=env, sync=False)
    state["steps"][name] = {"wall_s": wall, "rss_kib": rss,
                            "at": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    save_state(work, state)
    say(f"{name}: {wall:.1f} s, peak RSS {rss / 1024:.0f} MiB")


# ---------------------------------------------------------------------------------------------
# The tools: compare.py's, with the commands this benchmark needs


class Tool:
    """One tool's commands on this benchmark's repositories."""

    def __init__(self, base, work, extra=()):
        self.base = base
        self.name = base.name
        self.work = work
        self.extra = list(extra)

    def repo(self, kind):
        return os.path.join(self.work, "repos", f"{self.name}-{kind}")

    def cache(self, kind):
        return os.path.join(self.work, "cache", f"{self.name}-{kind}")

    def env(self, kind):
        env = dict(self.base.env_for(self.repo(kind), self.cache(kind)))
        env["TMPDIR"] = os.path.join(self.work, "tmp")
        return env

    def init(self, kind):
        os.makedirs(self.cache(kind), exist_ok=True)
        return self.base.init(self.repo(kind), self.cache(kind))

    def backup(self, kind, src, name, verbose=False):
        if self.name == "freezer":
            return [self.base.binary, *(["-v"] if verbose else []), "backup", "--json", "--repo", self.repo(kind),
                    "--encrypt-pass-file", self.base.pass_file, "--path-to-backup", src, "-N", name, *self.extra]
        return ["restic", "-r", self.repo(kind), "backup", "--host", "bench", src]

    def check(self, kind):
        if self.name == "freezer":
            return [self.base.binary, "check", "--json", "--repo", self.repo(kind),
                    "--encrypt-pass-file", self.base.pass_file]
        return ["restic", "-r", self.repo(kind), "check"]

    def inputs(self, kind):
        """What a probe reads: the repository without its packs, and the cache."""
        repo = self.repo(kind)
        out = [os.path.join(repo, e) for e in sorted(os.listdir(repo)) if e != "data"]
        return out + [self.cache(kind)]


def restic_count(runner, tool, kind, label):
    """Blobs in the index of restic's repository (`restic list blobs`): (all, data, tree)."""
    runner.run(label, ["restic", "-r", tool.repo(kind), "list", "blobs"], env=tool.env(kind))
    data = tree = 0
    with open(last_log(runner, label) + ".out") as f:
        for line in f:
            if line.startswith("data "):
                data += 1
            elif line.startswith("tree "):
                tree += 1
    return data + tree, data, tree


def last_log(runner, label):
    """The log path (without .out/.err) of the command the runner ran last."""
    return os.path.join(runner.logs, f"{runner.n:03d}-{label}")


class NoBlobCount(CommandFailed):
    """freezer worked but did not log how many blobs its index holds (the line changed?)."""

    def __init__(self, cmd, log):
        Exception.__init__(self, f"no 'index loaded ... blobs=N' line in the log of {shlex.join(cmd)} "
                                 f"(logs: {log}.out/.err)")
        self.log = log


def make_probe(path):
    """A small new folder of fresh random bytes: new blobs in both tools, no parent snapshot."""
    os.makedirs(path)
    for i in range(PROBE_FILES):
        with open(os.path.join(path, f"r{i}.bin"), "wb") as f:
            f.write(os.urandom(PROBE_BYTES))


# ---------------------------------------------------------------------------------------------
# Build and measure


def build(args, work, state, runner, tools):
    seeds = state["params"]["seeds"]
    files = state["params"]["files"]
    for t in tools:
        for kind in INIT_KINDS:
            if not state["steps"].get(f"{t.name} init {kind}") and os.path.exists(t.repo(kind)):
                sys.exit(f"{t.repo(kind)}: exists, but its init was never recorded as done: "
                         "delete it (then wait 5 minutes) or use another --work")
            step(work, state, runner, f"{t.name} init {kind}", t.init(kind), env=t.env(kind))
    tiny = os.path.join(work, "data", "tiny")
    step(work, state, runner, "corpus tiny", [sys.executable, CORPUS_PY, "many", "--out", tiny,
                                               "--files", str(state["params"]["tiny_files"]),
                                               "--seed", str(TINY_SEED)])
    for t in tools:
        step(work, state, runner, f"{t.name} backup tiny", t.backup("tiny", tiny, "tiny"), env=t.env("tiny"))
    for i, s in enumerate(seeds):
        data = os.path.join(work, "data", f"seed-{s}")
        step(work, state, runner, f"corpus seed-{s}", [sys.executable, CORPUS_PY, "many", "--out", data,
                                                       "--files", str(files), "--seed", str(s)])
        for t in tools:
            step(work, state, runner, f"{t.name} backup big seed-{s}", t.backup("big", data, f"seed-{s}"),
                 env=t.env("big"))
            if i == 0 and len(seeds) > 1:
                copy_mid(work, state, runner, t, seeds)


def copy_mid(work, state, runner, t, seeds):
    """The mid repository: a copy of the big one (and of its cache) holding the first seed only."""
    name = f"{t.name} copy big to mid"
    if state["steps"].get(name):
        return step(work, state, runner, name, [])
    if state["steps"].get(f"{t.name} backup big seed-{seeds[1]}"):
        say(f"{name}: too late, the big repository holds more than the first seed; no mid repository")
        return
    for path in (t.repo("mid"), t.cache("mid")):
        if os.path.exists(path):
            sys.exit(f"{path}: exists, but its copy was never recorded as done: "
                     "delete it (then wait 5 minutes) or use another --work")
    step(work, state, runner, name, ["sh", "-c", 'cp -a "$1" "$2" && cp -a "$3" "$4"', "copy",
                                     t.repo("big"), t.repo("mid"), t.cache("big"), t.cache("mid")])


def measured_kinds(state, tools):
    """The repositories to measure: tiny, mid (when every tool has one) and big."""
    mid = all(state["steps"].get(f"{t.name} copy big to mid") for t in tools)
    return ["tiny", "mid", "big"] if mid else ["tiny", "big"]


def probe(runner, tool, kind, path, label):
    """Measures one backup of a new small folder; returns the sample."""
    make_probe(path)
    if tool.name == "restic":
        blobs, data, tree = restic_count(runner, tool, kind, f"{label}-count")
    cmd = tool.backup(kind, path, os.path.basename(path), verbose=True)
    wall, rss = runner.measure(label, cmd, env=tool.env(kind), inputs=tool.inputs(kind) + [path])
    log = last_log(runner, label)
    sample = {"label": label, "tool": tool.name, "kind": kind, "wall_s": wall, "rss_kib": rss,
              "other_cpu_share": runner.samples[-1]["other_cpu_share"]}
    if tool.name == "restic":
        sample.update(blobs=blobs, data_blobs=data, tree_blobs=tree)
    else:
        with open(log + ".err", errors="replace") as f:
            m = INDEX_LOADED.search(ANSI.sub("", f.read()))
        if not m:
            raise NoBlobCount(cmd, log)
        sample["blobs"] = int(m.group(1))
        try:
            with open(log + ".out") as f:
                sample["self_peak_rss_kib"] = json.load(f)["memory"]["peak_rss"] // 1024
        except (OSError, ValueError, KeyError, TypeError):
            sample["self_peak_rss_kib"] = None
    say(f"{label}: {rss / 1024:7.1f} MiB peak RSS, {wall:6.2f} s, {sample['blobs']} blobs in the index")
    return sample


def measure_check(runner, tool, kind, label, blobs):
    cmd = tool.check(kind)
    wall, rss = runner.measure(label, cmd, env=tool.env(kind), inputs=tool.inputs(kind))
    say(f"{label}: {rss / 1024:7.1f} MiB peak RSS, {wall:6.2f} s")
    return {"label": label, "tool": tool.name, "kind": kind, "wall_s": wall, "rss_kib": rss, "blobs": blobs,
            "other_cpu_share": runner.samples[-1]["other_cpu_share"]}


def one_run(k, args, stamp, runner, tools, kinds):
    """Run k: for each tool (their order rotates from run to run), each repository from the
    smallest; returns its samples."""
    order = tools[(k - 1) % len(tools):] + tools[:(k - 1) % len(tools)]
    out = {"order": [t.name for t in order], "probe": [], "check": []}
    for t in order:
        for kind in kinds:
            path = os.path.join(args.work, "probes", f"{stamp}-r{k}-{t.name}-{kind}")
            out["probe"].append(probe(runner, t, kind, path, f"r{k}-{t.name}-{kind}-probe"))
        if args.also_check:
            for kind in kinds:
                blobs = next(s["blobs"] for s in out["probe"] if s["tool"] == t.name and s["kind"] == kind)
                out["check"].append(measure_check(runner, t, kind, f"r{k}-{t.name}-{kind}-check", blobs))
    return out


# ---------------------------------------------------------------------------------------------
# What the code says: the expected bytes per blob of each tool's index


def freezer_model(n):
    """Bytes of freezer's `Index` blob table (freezer-core/src/repo/index.rs) holding n blob
    locations: (steady, peak). Each location is a 48-byte slot in one array sorted by id, with a
    fan-out table of 4-byte starts, one per 8 slots rounded to a power of two; the slots added
    since the last sort (at most an eighth of the whole, or 4096) are copied aside while they
    are merged in (the peak). A vector's spare capacity is never touched, so it is not resident."""
    bits = min(max((n // 8).bit_length(), 0), 24)
    fanout = 4 * ((1 << bits) + 1) if bits else 0
    steady = 48 * n + fanout
    return steady, steady + 48 * min(n, max(4096, n // 8))


def restic_model(data, tree):
    """Bytes of restic 0.14's indexMaps (internal/repository/indexmap.go) holding `data` and
    `tree` entries, live heap: an indexEntry is 64 bytes on amd64 (ID 32, next 8, packIndex 8,
    3 x uint32, padded), allocated 4 at a time (256 B, an exact size class); the bucket array
    holds 8-byte pointers, 64 at first, doubled when entries reach 4 per bucket. Without the
    garbage of loading (JSON decoding; MergeFinalIndexes copies every entry of the other
    indexes into the first one), which Go's collector (GOGC=100) lets grow to about the live
    heap again before it runs."""
    total = 0
    for n in (data, tree):
        if n == 0:
            continue
        buckets = 64
        while n > 4 * buckets:
            buckets *= 2
        total += ((n + 3) // 4) * 256 + 8 * buckets
    return total


# ---------------------------------------------------------------------------------------------
# Summary and report


def per_blob(samples_by_run, tool, lo, hi):
    """Bytes per blob of `tool` between its `lo` and `hi` repositories, per run, with the
    medians of what it is computed from; None when not measured."""
    pairs = []
    for samples in samples_by_run:
        got = {x["kind"]: x for x in samples if x["tool"] == tool}
        if lo in got and hi in got and got[hi]["blobs"] > got[lo]["blobs"]:
            pairs.append((got[lo], got[hi]))
    if not pairs:
        return None
    bpb = [(h["rss_kib"] - l["rss_kib"]) * 1024 / (h["blobs"] - l["blobs"]) for l, h in pairs]
    return {"from": lo, "to": hi, "bytes_per_blob": statistics.median(bpb),
            "bytes_per_blob_range": [min(bpb), max(bpb)], "runs": len(pairs)}


def repo_figures(samples_by_run, tool, kind):
    """Medians (and ranges) of one tool's measurements on one repository."""
    got = [x for samples in samples_by_run for x in samples if x["tool"] == tool and x["kind"] == kind]
    if not got:
        return None
    out = {"blobs": int(compare.median([x["blobs"] for x in got])),
           "rss_kib": compare.median([x["rss_kib"] for x in got]),
           "rss_kib_range": [min(x["rss_kib"] for x in got), max(x["rss_kib"] for x in got)],
           "wall_s": compare.median([x["wall_s"] for x in got])}
    last = got[-1]
    for key in ("data_blobs", "tree_blobs"):
        if key in last:
            out[key] = last[key]
    if tool == "freezer":
        out["self_peak_rss_kib"] = compare.median([x.get("self_peak_rss_kib") for x in got])
    return out


def model(tool, fig_lo, fig_hi):
    """What the tool's code predicts for `key` bytes per blob between two repositories."""
    d = fig_hi["blobs"] - fig_lo["blobs"]
    if tool == "freezer":
        (sh, ph), (sl, pl) = freezer_model(fig_hi["blobs"]), freezer_model(fig_lo["blobs"])
        return {"steady": (sh - sl) / d, "peak": (ph - pl) / d}
    if "data_blobs" not in fig_hi or "data_blobs" not in fig_lo:
        return None
    return {"live": (restic_model(fig_hi["data_blobs"], fig_hi["tree_blobs"])
                     - restic_model(fig_lo["data_blobs"], fig_lo["tree_blobs"])) / d}


def summarize(report):
    runs = report["runs"]
    kinds = report["config"]["kinds"]
    probes = [r["probe"] for r in runs]
    s = {"repos": {}, "per_blob": {}, "check": {}, "targets": []}
    spans = [("tiny", "big")] + ([("mid", "big")] if "mid" in kinds else [])
    for tool in ("freezer", "restic"):
        s["repos"][tool] = {k: repo_figures(probes, tool, k) for k in kinds}
        s["per_blob"][tool] = {}
        for lo, hi in spans:
            f = per_blob(probes, tool, lo, hi)
            if f and s["repos"][tool][lo] and s["repos"][tool][hi]:
                f["model"] = model(tool, s["repos"][tool][lo], s["repos"][tool][hi])
            s["per_blob"][tool][f"{lo}-{hi}"] = f
        if any(r["check"] for r in runs):
            s["check"][tool] = {"repos": {k: repo_figures([r["check"] for r in runs], tool, k) for k in kinds},
                                "per_blob": per_blob([r["check"] for r in runs], tool, "tiny", "big")}
    need = report["config"]["min_blobs"]
    big = [s["repos"][t]["big"] for t in ("freezer", "restic")]
    fewest = min(b["blobs"] for b in big) if all(big) else 0
    enough = fewest >= need
    s["targets"].append({"target": f"big repositories hold >= {need:,} blobs", "value": fewest,
                         "limit": need, "pass": enough})
    for lo, hi in spans:
        a, b = (s["per_blob"][t].get(f"{lo}-{hi}") for t in ("freezer", "restic"))
        if not a or not b or b["bytes_per_blob"] <= 0:
            continue
        ratio = a["bytes_per_blob"] / b["bytes_per_blob"]
        s["ratio" if lo == "tiny" else f"ratio_{lo}_{hi}"] = ratio
        what = ("index bytes per blob (big - tiny) <= 0.5x restic's" if lo == "tiny" else
                f"the same, between {lo} and {hi} (above the key derivation's peak)")
        s["targets"].append({"target": what, "value": ratio, "limit": TARGET_RATIO,
                             "pass": (ratio <= TARGET_RATIO) if enough else None})
    if len(s["check"]) == 2 and all(s["check"][t]["per_blob"] for t in s["check"]):
        s["check_ratio"] = (s["check"]["freezer"]["per_blob"]["bytes_per_blob"]
                            / s["check"]["restic"]["per_blob"]["bytes_per_blob"])
    return s


def fmt(x, digits=1):
    return "-" if x is None else f"{x:,.{digits}f}"


def render(report):
    s, cfg, p = report["summary"], report["config"], report["params"]
    kinds, n, tools = cfg["kinds"], cfg["runs"], ("freezer", "restic")
    lines = []
    add = lines.append
    add(f"Big repository: `corpus.py many --files {p['files']:,}` for seeds {', '.join(map(str, p['seeds']))} "
        f"({p['files'] * len(p['seeds']):,} files), one backup each"
        + ("; mid: a copy after the first seed" if "mid" in kinds else "")
        + f"; tiny: one backup of {p['tiny_files']:,} files. Measured: a backup of {PROBE_FILES} new files of "
        f"{PROBE_BYTES // 1024} KiB random bytes (loads the whole index); {n} run(s), medians [min-max].")
    add("")
    add("| | freezer | restic | freezer/restic |")
    add("|---|---:|---:|---:|")

    def cells(vals, digits, ratio):
        q = fmt(vals[0] / vals[1], 2) if ratio and None not in vals and vals[1] else ""
        return " | ".join(fmt(v, digits) for v in vals) + f" | {q}"

    def rng(v, r, digits):
        return fmt(v, digits) + (f" [{fmt(r[0], digits)}-{fmt(r[1], digits)}]" if n > 1 and r else "")

    repos = s["repos"]
    for k in kinds:
        got = [repos[t][k] for t in tools]
        add(f"| blobs in the index, {k} | {cells([g and g['blobs'] for g in got], 0, False)} |")
    for k in kinds:
        got = [repos[t][k] for t in tools]
        vals = [g and g["rss_kib"] / 1024 for g in got]
        shown = [rng(v, g and [x / 1024 for x in g["rss_kib_range"]], 1) for v, g in zip(vals, got)]
        q = fmt(vals[0] / vals[1], 2) if None not in vals else ""
        add(f"| peak RSS {k}, MiB | {shown[0]} | {shown[1]} | {q} |")
    got = [repos[t]["big"] for t in tools]
    add(f"| wall time big, s | {cells([g and g['wall_s'] for g in got], 2, True)} |")
    for span in ("tiny-big", "mid-big"):
        got = [s["per_blob"][t].get(span) for t in tools]
        if not any(got):
            continue
        vals = [g and g["bytes_per_blob"] for g in got]
        shown = [rng(v, g and g["bytes_per_blob_range"], 1) for v, g in zip(vals, got)]
        q = fmt(vals[0] / vals[1], 2) if None not in vals and vals[1] else ""
        lo, hi = span.split("-")
        label = f"**bytes per blob ({hi} - {lo})**" if lo == "tiny" else f"bytes per blob ({hi} - {lo})"
        add(f"| {label} | {shown[0]} | {shown[1]} | {q} |")
        models = [g and g.get("model") for g in got]
        fm = models[0] and f"{models[0]['steady']:.1f} steady, {models[0]['peak']:.1f} peak"
        rm = models[1] and f"{models[1]['live']:.1f} live heap"
        add(f"| from the code ({hi} - {lo}) | {fm or '-'} | {rm or '-'} | |")
    add("")
    big = repos["restic"].get("big")
    if big and "data_blobs" in big:
        add(f"restic's big index: {big['data_blobs']:,} data and {big['tree_blobs']:,} tree blobs for "
            f"{p['files'] * len(p['seeds']):,} files (the tiny files of 0-2 bytes repeat).")
    fb = repos["freezer"].get("big")
    if fb:
        add(f"freezer's own report of its peak RSS (VmHWM) on the big repository: "
            f"{fmt(fb['self_peak_rss_kib'] and fb['self_peak_rss_kib'] / 1024)} MiB.")
    add("From the code: freezer's blob table (48-byte slots in one sorted array and a fan-out table; "
        "at the peak, the slots added since the last sort copied aside while merged in); restic 0.14's indexMaps (64-byte entries, 8-byte buckets, 2-4 entries each) as "
        "live heap, before the garbage of loading and Go's collector (GOGC=100).")
    add("")
    if s["check"]:
        add("Also measured, `check` without reading packs (it walks every tree too: more than the index):")
        add("")
        add("| | freezer | restic | freezer/restic |")
        add("|---|---:|---:|---:|")
        c = s["check"]
        for k in kinds:
            got = [c[t]["repos"][k] for t in tools]
            add(f"| peak RSS {k}, MiB | {cells([g and g['rss_kib'] / 1024 for g in got], 1, True)} |")
        got = [c[t]["repos"]["big"] for t in tools]
        add(f"| wall time big, s | {cells([g and g['wall_s'] for g in got], 2, True)} |")
        got = [c[t]["per_blob"] for t in tools]
        add(f"| bytes per blob (big - tiny) | {cells([g and g['bytes_per_blob'] for g in got], 1, True)} |")
        add("")
    steps = report["build_steps"]
    if steps:
        add("Build steps (from state.json: this invocation's, or an earlier one's with --reuse):")
        add("")
        add("| step | wall s | peak RSS MiB | done at |")
        add("|---|---:|---:|---|")
        for name, v in steps.items():
            add(f"| {name} | {v['wall_s']:.1f} | {v['rss_kib'] / 1024:.0f} | {v['at']} |")
        add("")
    i = s.get("interference")
    if i:
        add(f"Interference: CPU time of the machine beyond the measured command's, as a share of all cores: "
            f"median {i['median']:.0%}, max {i['max']:.0%} ({i['max_label']}); "
            f"{i['waited_s']:.0f} s spent waiting for an idle machine.")
        add("")
    add("Targets")
    add("")
    add("| target | value | limit | result |")
    add("|---|---:|---:|---|")
    for x in s["targets"]:
        v = f"{x['value']:.2f}" if isinstance(x["value"], float) else f"{x['value']:,}"
        res = {True: "PASS", False: "FAIL", None: "n/a (too few blobs)"}[x["pass"]]
        add(f"| {x['target']} | {v} | {x['limit']:,} | {res} |")
    add("")
    return "\n".join(lines)


def render_markdown(report):
    title = "In-memory index: bytes per blob, freezer-rs vs restic"
    return compare.markdown_header(report, title, ("restic",)) + render(report) + "\n"


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", help="work folder: the repositories are built there once and kept "
                                   "(default: a new folder under /tmp, deleted at the end unless --keep)")
    ap.add_argument("--reuse", action="store_true",
                    help="measure in an existing --work folder, skipping the build steps it records as done")
    ap.add_argument("--files", type=int, default=None,
                    help=f"files per seed in the big repository (default {DEFAULT_FILES:,}; 20,000 with --quick)")
    ap.add_argument("--seeds", default=None, help=f"corpus seeds of the big repository (default {DEFAULT_SEEDS})")
    ap.add_argument("--tiny-files", type=int, default=None, help="files of the tiny repository (default 1000)")
    ap.add_argument("--min-blobs", type=int, default=2_000_000,
                    help="blobs the big repositories must hold (a target row; default 2,000,000)")
    ap.add_argument("--runs", type=int, default=None, help="measurements per repository (default 3; 1 with --quick)")
    ap.add_argument("--also-check", action="store_true", help="also measure `check` (no pack data read)")
    ap.add_argument("--freezer", help="the freezer binary (default: target/release/freezer, built if missing)")
    ap.add_argument("--freezer-args", default="", help="options added to freezer's backups, e.g. '--threads 2'")
    ap.add_argument("--idle-timeout", type=float, default=None,
                    help="before each measurement wait until the CPUs are < 15%% busy, at most this many "
                         "seconds (default 300; 0 with --quick; 0 disables)")
    ap.add_argument("--json-out", help="write every measurement and the summary as JSON")
    ap.add_argument("--markdown-out", help="write the tables as Markdown")
    ap.add_argument("--quick", action="store_true", help="2 x 20,000 files and one run: a sanity check")
    ap.add_argument("--keep", action="store_true", help="keep the work folder when it is a temporary one")
    args = ap.parse_args()
    built = None
    if args.reuse and args.work and os.path.exists(os.path.join(args.work, STATE)):
        with open(os.path.join(args.work, STATE)) as f:
            built = json.load(f).get("params")  # what --reuse measures unless told otherwise
    if built:
        args.files = built["files"] if args.files is None else args.files
        args.seeds = ",".join(map(str, built["seeds"])) if args.seeds is None else args.seeds
        args.tiny_files = built["tiny_files"] if args.tiny_files is None else args.tiny_files
    args.seeds = DEFAULT_SEEDS if args.seeds is None else args.seeds
    args.tiny_files = 1000 if args.tiny_files is None else args.tiny_files
    files = args.files if args.files is not None else (20_000 if args.quick else DEFAULT_FILES)
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    if args.idle_timeout is None:
        args.idle_timeout = 0.0 if args.quick else 300.0
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    except ValueError:
        ap.error("--seeds: comma-separated integers")
    if files < 1 or args.tiny_files < 1 or runs < 1 or not seeds or len(set(seeds)) != len(seeds) or TINY_SEED in seeds:
        ap.error(f"--files, --tiny-files and --runs must be at least 1; --seeds distinct, without {TINY_SEED}")
    if args.reuse and not args.work:
        ap.error("--reuse needs --work")
    if shutil.which("restic") is None:
        sys.exit("restic is not installed (apt-get install restic)")
    binary = compare.ensure_freezer(args.freezer)

    temporary = not args.work
    work, state = open_work(args)
    args.work = work
    check_params(state, {"files": files, "seeds": seeds, "tiny_files": args.tiny_files})
    save_state(work, state)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    binary_info = compare.binary_facts(binary)
    private = compare.private_copy(binary, work)
    secrets = os.path.join(work, "secrets")
    runner = Runner(os.path.join(work, "logs", stamp), args.idle_timeout)
    tools = [Tool(compare.Freezer(private, secrets), work, shlex.split(args.freezer_args)),
             Tool(compare.Restic(secrets), work)]
    report = {
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "config": {"command": "python3 benches/index.py " + shlex.join(sys.argv[1:]), "runs": runs,
                   "work": work, "freezer": binary, "min_blobs": args.min_blobs, "also_check": args.also_check,
                   "probe": {"files": PROBE_FILES, "bytes": PROBE_BYTES}},
        "params": state["params"],
        "machine": compare.machine_info(work),
        "versions": dict(compare.versions(private), freezer_binary=binary_info),
        "runs": [],
    }
    code = 0
    try:
        started = time.monotonic()
        build(args, work, state, runner, tools)
        kinds = measured_kinds(state, tools)
        report["config"]["kinds"] = kinds
        say(f"build: {time.monotonic() - started:.0f} s in this invocation")
        for k in range(1, runs + 1):
            report["runs"].append(one_run(k, args, stamp, runner, tools, kinds))
    except CommandFailed as e:
        compare.report_failure(e)
        code = 2
    report["build_steps"] = state["steps"]
    report["measurements"] = runner.samples
    if report["runs"]:
        report["summary"] = summarize(report)
        if runner.samples:
            i = compare.interference_summary(runner.samples)
            report["summary"]["interference"] = {
                "max": i["max_other_cpu_share"], "max_label": i["max_other_cpu_label"],
                "median": i["median_other_cpu_share"], "waited_s": i["waited_for_idle_s"],
            }
        print(render(report))
        compare.write_outputs(report, args.json_out, args.markdown_out, render_markdown)
    if temporary:
        compare.finish_work(work, args.keep, failed=code != 0)
    else:
        say(f"work folder kept: {work} (measure again with --work {work} --reuse)")
    return code


if __name__ == "__main__":
    sys.exit(main())
