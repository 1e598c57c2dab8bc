#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this). On a fresh Debian 12 machine with
# the Rust toolchain it installs what the tests need, then checks formatting, lints, docs,
# the Rust tests (unit, integration, CLI, C ABI) and the Python tests.
set -euo pipefail
cd "$(dirname "$0")"

# Each step says when it starts (seconds since the start), so a slow run shows where time went.
step() { printf '\n== %s (at %ds)\n' "$*" "$SECONDS"; }
# Free space shapes some failures (Swift refuses writes below its reserve): show it at the
# start and when a step fails.
trap 'echo "== failed; free space:"; df -h / /tmp 2>/dev/null' ERR

# A clean build gains nothing from incremental compilation, whose caches take gigabytes.
export CARGO_INCREMENTAL=0

step "prerequisites"
df -h / /tmp 2>/dev/null || true
# The toolchain rust-toolchain.toml pins, with rustfmt and clippy: a machine whose stable
# toolchain is that release but not installed under its number gets it linked (no download).
want=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
if command -v rustup >/dev/null && ! rustup toolchain list | grep -q "^$want"; then
  stable_sysroot=$(rustc +stable --print sysroot 2>/dev/null || true)
  if [ -n "$stable_sysroot" ] && [ "$(rustc +stable --version | cut -d' ' -f2)" = "$want" ]; then
    ln -s "$stable_sysroot" "$(dirname "$stable_sysroot")/$want-$(rustc +stable -vV | sed -n 's/^host: //p')"
  fi
fi
cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1 || {
  echo "rustfmt and clippy are needed: rustup component add rustfmt clippy (toolchain $want)" >&2
  exit 1
}
need_apt=()
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
command -v gcc >/dev/null || need_apt+=(gcc)
command -v mount >/dev/null || need_apt+=(mount)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v c++ >/dev/null || need_apt+=(g++)
# file and diff: tests/agent (the tempest agent tests' ports) check stored data and restores.
command -v file >/dev/null || need_apt+=(file)
command -v diff >/dev/null || need_apt+=(diffutils)
# pkg-config and valgrind: the C example is built against the installed library as a user
# would (`cc example.c $(pkg-config --cflags --libs freezer)`) and run under valgrind.
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
command -v valgrind >/dev/null || need_apt+=(valgrind)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
[ "$(id -u)" = 0 ] || echo "warning: not root: the full-disk test mounts a tmpfs and will fail" >&2

step "test servers"
# Real servers on loopback, started by the tests that need them (freezer-core/tests/it/servers.rs).
# vsftpd for the ftp/ftps tests: they start their own instance on their own ports with their own
# configuration. The package must not start a system instance on port 21: a policy-rc.d that
# refuses service starts is put in place for the install (and removed after, if it was ours).
pkgs=()
[ -x /usr/sbin/vsftpd ] || pkgs+=(vsftpd)
command -v openssl >/dev/null || pkgs+=(openssl)
# qemu-img for the image tests (mode image reads qcow2 through it).
command -v qemu-img >/dev/null || pkgs+=(qemu-utils)
# btrfs-progs and filefrag (e2fsprogs) for the image tests on btrfs (a loop-mounted file system:
# reading only what changed).
command -v mkfs.btrfs >/dev/null && command -v btrfs >/dev/null || pkgs+=(btrfs-progs)
command -v filefrag >/dev/null || pkgs+=(e2fsprogs)
if [ ${#pkgs[@]} -gt 0 ]; then
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
  [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
fi
tools="$PWD/target/tools"
if [ ! -x "$tools/bin/s3s-fs" ]; then
  CARGO_INSTALL_ROOT="$tools" cargo install s3s-fs --version 0.14.1 --features binary --locked --quiet
fi
# Swift (proxy with tempauth, s3api and SLO; account, container and object servers; memcached)
# and a real Keystone with keystonemiddleware, for the swift tests (Debian's own packages).
swift_apt=()
command -v swift-proxy-server >/dev/null || swift_apt+=(swift swift-proxy python3-swiftclient)
command -v swift-account-server >/dev/null || swift_apt+=(swift-account)
command -v swift-container-server >/dev/null || swift_apt+=(swift-container)
command -v swift-object-server >/dev/null || swift_apt+=(swift-object)
command -v memcached >/dev/null || swift_apt+=(memcached)
command -v keystone-manage >/dev/null || swift_apt+=(keystone)
/usr/bin/python3 -c 'import keystonemiddleware' 2>/dev/null || swift_apt+=(python3-keystonemiddleware)
if [ ${#swift_apt[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${swift_apt[@]}"
fi

# MariaDB for the store tests (freezer-core/tests/it/service_store/mariadb.rs) and for mode mysql
# (freezer-core/tests/it/db_mysql.rs, which also needs mariadb-backup and mbstream): they start
# their own mariadbd on a free loopback port with its own data folder. The package must not start
# the system's server: a policy-rc.d that refuses service starts is put in place for the install.
if [ ! -x /usr/sbin/mariadbd ] || ! command -v mariadb-install-db >/dev/null || ! command -v mariadb >/dev/null \
  || ! command -v mariadb-backup >/dev/null || ! command -v mbstream >/dev/null; then
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mariadb-server mariadb-client mariadb-backup
  [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
fi

# PostgreSQL for mode postgres (freezer-core/tests/it/db_postgres.rs): the tests run initdb and
# postgres as user postgres on free loopback ports with their own data folders. The system's
# cluster must not start: the same policy-rc.d as for MariaDB during the install.
if ! ls /usr/lib/postgresql/*/bin/pg_basebackup >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15 postgresql-client-15
  [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
fi

# nx-27017 for the mongo tests (freezer-core/tests/it/db_mongo.rs): a MongoDB wire-protocol server
# over SQLite, from PyPI (no real mongod or mongodump installs here); the tests start their own on
# a free loopback port. docs/COMPAT.md says what it proves and what it does not.
mongo_venv=target/mongo-venv
[ -x "$mongo_venv/bin/python" ] || python3 -m venv "$mongo_venv"
"$mongo_venv/bin/pip" install -q --disable-pip-version-check 'nx-27017==0.8.1'

# The downloaded packages are no longer needed once installed.
apt-get clean 2>/dev/null || true

# Both lock files are current (a stale one fails here, not after the long test run).
cargo metadata --locked --format-version 1 >/dev/null
cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null

step "format"
cargo fmt --all --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

# keystoneauth1 from PyPI, for the standalone identity's test (service_auth): the client library
# of python-freezerclient and upstream's scheduler logs in to our /identity/v3.
ks_venv=target/keystoneauth-venv
[ -x "$ks_venv/bin/python" ] || python3 -m venv "$ks_venv"
"$ks_venv/bin/pip" install -q --disable-pip-version-check 'keystoneauth1>=5,<6'

# Upstream's own agent (freezer==19.0.0), for the tests that restore its tar backups
# (freezer-core/tests/it/upstream_tar.rs runs tests/upstream/make_upstream_backups.py with it) and
# for the scheduler tests at the end.
fa=target/upstream-agent
[ -x "$fa/bin/python" ] || python3 -m venv "$fa"
"$fa/bin/pip" install -q --disable-pip-version-check 'freezer==19.0.0'

step "rust tests"
cargo test --workspace --locked

step "fuzz targets build"
cargo check --manifest-path fuzz/Cargo.toml --all-targets --locked

step "python tests"
venv=target/pyenv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check 'maturin>=1.16,<2' pytest mypy
(cd freezer-py && VIRTUAL_ENV="$PWD/../$venv" "../$venv/bin/maturin" develop -q --locked)
"$venv/bin/pytest" -q freezer-py/tests

step "upstream's agent tests (freezer-tempest-plugin, ported to pytest) against our freezer-agent"
# Run with the upstream agent's own environment: the scheduler test there runs its
# freezer-scheduler, which launches our freezer-agent from PATH.
"$fa/bin/pip" install -q --disable-pip-version-check pytest
FREEZER_AGENT_BIN="$PWD/target/debug/freezer-agent" "$fa/bin/pytest" -q tests/agent

step "upstream clients against our API, our scheduler against upstream's API"
# python-freezerclient and upstream's freezer-scheduler (with its freezer-agent), unmodified from
# PyPI, each in its own virtual environment: both install a console script named `freezer`.
fc=target/upstream-client
[ -x "$fc/bin/python" ] || python3 -m venv "$fc"
"$fc/bin/pip" install -q --disable-pip-version-check 'python-freezerclient==6.5.0' pytest requests
# $fa (upstream's agent, with its freezer-scheduler) was installed before the rust tests.
# And the other way round: our scheduler against upstream's freezer-api (gunicorn, SQLite,
# keystonemiddleware validating tokens against our standalone identity).
ua=target/upstream-api
[ -x "$ua/bin/python" ] || python3 -m venv "$ua"
"$ua/bin/pip" install -q --disable-pip-version-check 'freezer-api==19.0.0' gunicorn
FREEZER_CLIENT_BIN="$PWD/$fc/bin/freezer" FREEZER_SCHEDULER_BIN="$PWD/$fa/bin/freezer-scheduler" \
  UPSTREAM_API_VENV="$PWD/$ua" "$fc/bin/pytest" -q tests/service

step "all tests passed"
