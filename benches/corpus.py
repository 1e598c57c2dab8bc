#!/usr/bin/env python3
"""The project's test and benchmark corpus: a deterministic tree shaped like a server's files.

    python3 benches/corpus.py make   --out DIR [--size-mb 512] [--seed 1]
    python3 benches/corpus.py mutate --out DIR [--percent 5] [--seed 2]
    python3 benches/corpus.py many   --out DIR [--files 1000000] [--seed 1]

`make` writes about --size-mb megabytes, the same bytes, names, modes and times for the same
seed and size:

  text/    source-like text in nested folders (compresses 3-5x), sizes log-normal around 16 KiB
  small/   thousands of files under 4 KiB, where per-file costs dominate
  binary/  incompressible files of a few MiB
  images/  one disk-image-like file: runs of zeros, a repeated block, random blocks
  dumps/   an SQL dump of near-identical rows (long-range redundancy)
  odd/     the corners a backup must keep: unicode and spaces in names, an empty file and an
           empty folder, a symlink, a hard link, modes 0755 and 0600, a sparse file, a user
           xattr (where the file system has them), mtimes decades apart

`mutate` changes --percent of the regular files the way a day on a server does, in equal
shares: an overwrite inside the file, an append, a new file beside it, a deletion, a rename.

`many` writes --files tiny files (0-255 bytes) in folders of at most 1000, for the
million-file measurements.

Only the standard library is used, so a fresh checkout runs it with the system's python3.
The shares and sizes follow `../shared/bench/corpus.py` (the reference corpus the project's
published figures were first measured on), so figures stay comparable; the bytes differ.
"""
import argparse
import os
import random

MIB = 1 << 20
# Words for the text files: short tokens of code and prose.
VOCABULARY = (
    "let mut fn pub struct impl trait enum match if else for while loop return async await "
    "self crate use mod where type const static ref move box vec map iter next some none ok err "
    "backup restore level chunk pack index snapshot sink source stream tee encrypt compress "
    "the a of to and in is that for on with as it by this be from at or an"
).split()
BLOCK = 64 * 1024


def sentence_lines(rng, size):
    """About `size` bytes of indented lines of words and numbers, cut to exactly `size`."""
    out, n = [], 0
    while n < size:
        words = rng.choices(VOCABULARY, k=rng.randint(3, 14))
        line = "    " * rng.randint(0, 3) + " ".join(words) + f" = {rng.getrandbits(20)};\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def put(path, data, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if mode is not None:
        os.chmod(path, mode)


def log_normal(rng, median, sigma, lo, hi):
    return int(max(lo, min(hi, median * rng.lognormvariate(0.0, sigma))))


def make_text(rng, root, budget):
    i = 0
    while budget > 0:
        size = log_normal(rng, 16 * 1024, 1.5, 0, 2 * MIB)
        folder = os.path.join(*(f"m{rng.randrange(12)}" for _ in range(rng.randint(1, 5))))
        put(os.path.join(root, "text", folder, f"t{i}.rs"), sentence_lines(rng, size))
        budget -= max(size, 1)
        i += 1


def make_small(rng, root, budget, limit=20000):
    i = 0
    while budget > 0 and i < limit:
        size = rng.randrange(4096)
        put(os.path.join(root, "small", f"g{i % 100:02}", f"c{i}.conf"), sentence_lines(rng, size))
        budget -= max(size, 1)
        i += 1


def make_binary(rng, root, budget):
    i = 0
    while budget > 0:
        size = min(budget, log_normal(rng, 4 * MIB, 1.0, 1, 64 * MIB))
        put(os.path.join(root, "binary", f"r{i}.bin"), rng.randbytes(size))
        budget -= size
        i += 1


def make_image(rng, root, budget):
    path = os.path.join(root, "images", "vda.raw")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    same = rng.randbytes(BLOCK)
    zero = bytes(BLOCK)
    with open(path, "wb") as f:
        for _ in range(budget // BLOCK):
            x = rng.random()
            f.write(zero if x < 0.4 else same if x < 0.6 else rng.randbytes(BLOCK))


def make_dump(rng, root, budget):
    rows, n, k = [], 0, 0
    while n < budget:
        row = (f"INSERT INTO jobs VALUES ({k}, 'node{rng.randrange(50)}', 'backup', "
               f"{rng.getrandbits(30)}, 'done');\n")
        rows.append(row)
        n += len(row)
        k += 1
    put(os.path.join(root, "dumps", "jobs.sql"), "".join(rows).encode()[:budget])


def make_odd(rng, root):
    odd = os.path.join(root, "odd")
    put(os.path.join(odd, "a folder", "naïve café ✓.txt"), b"a unicode name\n")
    put(os.path.join(odd, "empty"), b"")
    put(os.path.join(odd, "run.sh"), b"#!/bin/sh\nexit 0\n", 0o755)
    put(os.path.join(odd, "private.pem"), b"not a real key\n", 0o600)
    os.makedirs(os.path.join(odd, "empty folder"), exist_ok=True)
    link = os.path.join(odd, "run-link")
    if not os.path.lexists(link):
        os.symlink("run.sh", link)
    hard = os.path.join(odd, "run-hard.sh")
    if not os.path.exists(hard):
        os.link(os.path.join(odd, "run.sh"), hard)
    # 32 MiB long, 2 MiB of data in two extents.
    with open(os.path.join(odd, "sparse.img"), "wb") as f:
        for at in (8 * MIB, 24 * MIB):
            f.seek(at)
            f.write(rng.randbytes(MIB))
        f.truncate(32 * MIB)
    try:
        os.setxattr(os.path.join(odd, "run.sh"), "user.note", b"kept by the backup")
    except OSError:  # no user xattrs on this file system
        pass


def regular_files(root):
    for folder, _, names in os.walk(root):
        for name in names:
            p = os.path.join(folder, name)
            if not os.path.islink(p):
                yield p


def settle_times(root):
    """Fixed mtimes, so that the same seed gives the same metadata too."""
    for k, p in enumerate(sorted(regular_files(root))):
        t = 1_700_000_000 + (k * 7919) % 10_000_000
        os.utime(p, (t, t))
    odd = os.path.join(root, "odd")
    os.utime(os.path.join(odd, "empty"), (946_684_800, 946_684_800))  # 2000
    os.utime(os.path.join(odd, "private.pem"), (1_262_304_000, 1_262_304_000))  # 2010


def make(root, size_mb, seed):
    rng = random.Random(seed)
    budget = size_mb * MIB
    make_text(rng, root, budget * 35 // 100)
    make_small(rng, root, budget * 5 // 100)
    make_binary(rng, root, budget * 20 // 100)
    make_image(rng, root, budget * 30 // 100)
    make_dump(rng, root, budget * 10 // 100)
    make_odd(rng, root)
    settle_times(root)


def mutate(root, percent, seed):
    rng = random.Random(seed)
    files = sorted(regular_files(root))
    picked = rng.sample(files, max(1, len(files) * percent // 100))
    for k, p in enumerate(picked):
        change = k % 5
        if change == 0:
            with open(p, "r+b") as f:
                f.seek(rng.randrange(max(1, os.path.getsize(p))))
                f.write(sentence_lines(rng, 256))
        elif change == 1:
            with open(p, "ab") as f:
                f.write(sentence_lines(rng, 4096))
        elif change == 2:
            put(f"{p}.added{seed}", sentence_lines(rng, 8192))
        elif change == 3:
            os.remove(p)
        else:
            os.rename(p, p + ".renamed")


def many(root, files, seed):
    rng = random.Random(seed)
    for i in range(files):
        folder = os.path.join(root, f"p{i // 1_000_000}", f"q{i // 1000 % 1000:03}")
        if i % 1000 == 0:
            os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"f{i}"), "wb") as f:
            f.write(rng.randbytes(rng.randrange(256)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("verb", choices=["make", "mutate", "many"])
    ap.add_argument("--out", required=True, help="the folder to write or change")
    ap.add_argument("--size-mb", type=int, default=512, help="make: about this many megabytes")
    ap.add_argument("--percent", type=int, default=5, help="mutate: the share of files changed")
    ap.add_argument("--files", type=int, default=1_000_000, help="many: how many files")
    ap.add_argument("--seed", type=int, default=None, help="make, many: 1; mutate: 2")
    a = ap.parse_args()
    if a.size_mb < 1 or not 0 < a.percent <= 100 or a.files < 0:
        ap.error("--size-mb must be at least 1, --percent in 1..100, --files not negative")
    if a.verb == "make":
        make(a.out, a.size_mb, 1 if a.seed is None else a.seed)
    elif a.verb == "mutate":
        mutate(a.out, a.percent, 2 if a.seed is None else a.seed)
    else:
        many(a.out, a.files, 1 if a.seed is None else a.seed)


if __name__ == "__main__":
    main()
