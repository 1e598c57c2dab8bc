#!/usr/bin/env bash
# The main job on a fresh machine: build freezer, back up a folder into a new local
# repository (encrypted), back it up again (unchanged files are not read), restore it
# elsewhere and compare. Usage: ./demo.sh [FOLDER]  (default: /usr/share/doc).
set -euo pipefail
cd "$(dirname "$0")"
src=$(realpath "${1:-/usr/share/doc}")
cargo build --release --locked -p freezer-cli
# Cargo puts the binary under CARGO_TARGET_DIR when it is set (a relative one is taken from here).
freezer=$(realpath -m "${CARGO_TARGET_DIR:-target}")/release/freezer
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077
head -c 24 /dev/urandom | base64 > "$work/passphrase"

set -x
"$freezer" init --repo "$work/repo" --encrypt-pass-file "$work/passphrase"
"$freezer" backup --repo "$work/repo" --encrypt-pass-file "$work/passphrase" \
  --path-to-backup "$src" --backup-name demo
"$freezer" backup --repo "$work/repo" --encrypt-pass-file "$work/passphrase" \
  --path-to-backup "$src" --backup-name demo
"$freezer" snapshots --repo "$work/repo" --encrypt-pass-file "$work/passphrase"
"$freezer" restore --repo "$work/repo" --encrypt-pass-file "$work/passphrase" \
  --backup-name demo --restore-abs-path "$work/restored"
diff -r --no-dereference "$src" "$work/restored"
set +x
echo "demo: $src was backed up and restored identical"
