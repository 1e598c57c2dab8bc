//! `freezer`: the command line of freezer-rs.
//!
//! A thin front-end: it parses flags (upstream's option names, dashed), turns them into
//! freezer-core's typed options, calls the library, and maps results to output and exit codes:
//! 0 success, 1 failure, 2 bad usage, 3 done but incomplete (a storage failed, a file could
//! not be read, a restored file is damaged, the snapshot to restore is damaged). Errors are
//! one line on stderr; `--json` puts one JSON document on stdout. It owns the terminal: a
//! progress bar when stderr is one.

mod api;
mod lifecycle;
mod output;
mod progress;
mod scheduler;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use freezer_core::engine::inspect;
use freezer_core::job::{self, FreezerAction, Job, RunContext, StorageSpec};
use freezer_core::repo::snapshot::{SnapshotSelector, select};
use freezer_core::repo::{Actor, InitOptions, Repository, lock};
use freezer_core::{Error, KdfParams, Passphrase};

use crate::output::{Out, outln};

/// Backup and restore, OpenStack Freezer style.
#[derive(Parser, Debug)]
#[command(name = "freezer", version, about, long_about = None)]
struct Cli {
    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// More log output on stderr (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

/// How much of the machine a backup or restore may use.
#[derive(Args, Debug, Clone)]
struct ResourceArgs {
    /// Workers of every pool (readers, compressors, fetchers, the runtime's threads); by
    /// default one per core. Fewer leave cores to the services of a node.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
    /// The memory budget of the buffers in flight (256M, 1G; at least 8M; default 32M): the
    /// run slows down when it is reached, it never fails.
    #[arg(long, value_name = "SIZE")]
    max_memory: Option<String>,
}

impl ResourceArgs {
    fn apply(&self, action: &mut job::FreezerAction) {
        action.threads = self.threads;
        action.max_memory = self.max_memory.clone();
    }
}

#[derive(Args, Debug, Clone)]
struct RepoArgs {
    /// Repository: a folder, file://PATH, s3://BUCKET/PREFIX?endpoint=URL&region=R,
    /// swift://CONTAINER/PREFIX?region=R (prefix and parameters optional),
    /// ssh://USER@HOST:PORT/PATH, ftp://USER@HOST:PORT/PATH or ftps://... (port optional;
    /// /~/PATH: in the login folder; ftps: ?ca_file=PEM to trust a private CA).
    /// Repeat to use several copies of one repository. S3 credentials come from ACCESS_KEY and
    /// SECRET_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), Swift's from OS_AUTH_URL,
    /// OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME (or ST_AUTH, ST_USER, ST_KEY), FTP passwords
    /// from FTP_PASSWORD, never from the URL.
    #[arg(long = "repo", short = 'r', value_name = "URL", required = true)]
    repos: Vec<String>,
    /// File whose first line is the passphrase (upstream's encrypt_pass_file).
    #[arg(long, value_name = "FILE")]
    encrypt_pass_file: Option<PathBuf>,
    /// Upload bandwidth limit, bytes per second (512, 10K, 1M).
    #[arg(long, value_name = "RATE")]
    upload_limit: Option<String>,
    /// Download bandwidth limit, bytes per second (512, 10K, 1M).
    #[arg(long, value_name = "RATE")]
    download_limit: Option<String>,
    /// SSH: the private key (default ~/.ssh/id_rsa, id_ecdsa or id_ed25519).
    #[arg(long, value_name = "FILE")]
    ssh_key: Option<PathBuf>,
    /// SSH: a file whose first line is the password (or FREEZER_SSH_PASSWORD).
    #[arg(long, value_name = "FILE")]
    ssh_password_file: Option<PathBuf>,
    /// SSH: the known_hosts file (default ~/.ssh/known_hosts).
    #[arg(long, value_name = "FILE")]
    ssh_known_hosts: Option<PathBuf>,
    /// SSH: learn the key of a host known_hosts does not hold (a changed key is always refused).
    #[arg(long)]
    accept_new_host_key: bool,
    /// Wait up to this many seconds for a lock another operation holds (a prune, a backup)
    /// before failing; 0 fails at once. Stale locks never wait.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    lock_wait: u64,
}

impl RepoArgs {
    fn passphrase(&self) -> freezer_core::Result<Option<Passphrase>> {
        self.encrypt_pass_file
            .as_deref()
            .map(Passphrase::from_file)
            .transpose()
    }

    async fn open(&self) -> freezer_core::Result<Repository> {
        let mut ctx = job::RunContext::current();
        ctx.env = environment();
        ctx.lock_wait = self.lock_wait();
        let r = job::open_repository(&self.action()?, &ctx).await?;
        // A config read from its copy or another storage, a key passed over: said at once.
        for w in r.warnings() {
            eprintln!("warning: {w}");
        }
        Ok(r)
    }

    fn lock_wait(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lock_wait)
    }

    fn sinks(&self) -> freezer_core::Result<Vec<std::sync::Arc<dyn freezer_core::sink::Sink>>> {
        job::sinks_of(&self.action()?, &environment())
    }

    /// Opens the repository with the current passphrase and reads the new one.
    async fn open_with_new(
        &self,
        new_pass_file: &std::path::Path,
    ) -> freezer_core::Result<(Repository, Passphrase, Passphrase)> {
        let current = self
            .passphrase()?
            .ok_or_else(|| Error::bad_input("encrypt_pass_file", "give the current passphrase"))?;
        let new = Passphrase::from_file(new_pass_file)?;
        Ok((self.open().await?, current, new))
    }

    fn action(&self) -> freezer_core::Result<FreezerAction> {
        let ssh_password = self
            .ssh_password_file
            .as_deref()
            .map(|f| job::read_secret_file(f, "ssh_password_file"))
            .transpose()?;
        let with_ssh = |mut s: StorageSpec| {
            if s.kind() == "ssh" {
                s.ssh_key = self.ssh_key.as_ref().map(|p| p.display().to_string());
                s.ssh_password = ssh_password.clone();
                s.ssh_known_hosts = self
                    .ssh_known_hosts
                    .as_ref()
                    .map(|p| p.display().to_string());
                s.ssh_accept_new_host_key = self.accept_new_host_key;
            }
            s
        };
        Ok(FreezerAction {
            storages: self
                .repos
                .iter()
                .map(|r| StorageSpec::from_url(r).map(with_ssh))
                .collect::<freezer_core::Result<_>>()?,
            encrypt_pass_file: self
                .encrypt_pass_file
                .as_ref()
                .map(|p| p.display().to_string()),
            upload_limit: self.upload_limit.clone(),
            download_limit: self.download_limit.clone(),
            ..FreezerAction::default()
        })
    }
}

use freezer_cli::term::environment;

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a repository (in every --repo given; existing ones are copied to the others).
    Init {
        #[command(flatten)]
        repo: RepoArgs,
        /// Target size of pack files, in MiB (1 to 512): larger packs mean fewer objects on
        /// remote storage, smaller ones less memory.
        #[arg(long, value_name = "MIB", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=512))]
        pack_size: u32,
    },
    /// Back up a folder or file.
    Backup(BackupArgs),
    /// Restore a backup into a folder.
    Restore(RestoreArgs),
    /// List snapshots (Freezer's `info`), or show one.
    #[command(visible_alias = "info")]
    Snapshots {
        #[command(subcommand)]
        command: Option<SnapshotsCommand>,
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        filter: lifecycle::FilterArgs,
    },
    /// Forget snapshots by retention rules (upstream's admin action) or by id (--snapshot);
    /// --prune frees their data.
    Forget(lifecycle::ForgetArgs),
    /// Remove data no snapshot references, repacking mostly unused packs.
    Prune(lifecycle::PruneArgs),
    /// Verify the whole repository: every object present, and with --read-data intact.
    Check(lifecycle::CheckArgs),
    /// Rebuild the index from the packs (index), or drop lost blobs from it (packs).
    Repair {
        #[command(subcommand)]
        command: lifecycle::RepairCommand,
    },
    /// Remove stale locks (or all locks, with --all).
    Unlock(lifecycle::UnlockArgs),
    /// Copy snapshots into another repository, sending only what it lacks (repeatable safely).
    Copy(CopyArgs),
    /// Manage the passphrases that open a repository.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Run a job document (upstream's job JSON).
    Job {
        #[command(subcommand)]
        command: JobCommand,
    },
    /// The freezer-api v2 compatible REST API: serve it, hash a password for its users.
    Api {
        #[command(subcommand)]
        command: api::ApiCommand,
    },
    /// Run jobs on their schedules, from a freezer-api or a jobs folder, until SIGTERM.
    Scheduler(scheduler::SchedulerArgs),
}

#[derive(Args, Debug)]
struct BackupArgs {
    #[command(flatten)]
    repo: RepoArgs,
    #[command(flatten)]
    resources: ResourceArgs,
    /// What to back up: a folder or a file (mode fs); `-` or nothing in modes command and stdin.
    #[arg(long)]
    path_to_backup: Option<PathBuf>,
    /// fs (a folder or file), command (the stdout of --command), stdin (this program's
    /// standard input): a stream is stored as one file, deduplicated like any other; image
    /// (a raw image read sparse-aware, a qcow2 or other image read through qemu-img, or a
    /// block device: restored to a file with its holes, or to a device); mysql, postgres,
    /// mongo: a database server, through its dump tools.
    #[arg(long, value_parser = ["fs", "command", "stdin", "image", "mysql", "postgres", "mongo"], default_value = "fs")]
    mode: String,
    /// Mode command: the command whose stdout is backed up, split into words without a shell
    /// (quotes as in sh); it must exit 0 or the backup fails and leaves no snapshot.
    #[arg(long, value_name = "COMMAND")]
    command: Option<String>,
    /// Run --command through /bin/sh -c (pipelines, redirections, variables).
    #[arg(long)]
    shell: bool,
    /// The name of the backup series.
    #[arg(long, short = 'N')]
    backup_name: String,
    /// The host the series belongs to (default: this host).
    #[arg(long)]
    hostname: Option<String>,
    /// Leave out entries matching this glob (repeatable).
    #[arg(long)]
    exclude: Vec<String>,
    /// zstd, zstd:N, none (upstream's gzip, bzip2, xz select zstd).
    #[arg(long, visible_alias = "compress")]
    compression: Option<String>,
    /// Follow symlinks (soft), split hard links (hard), or both (all).
    #[arg(long, value_parser = ["soft", "hard", "all"])]
    dereference_symlink: Option<String>,
    /// Do not go inside folders on other file systems.
    #[arg(long)]
    one_file_system: bool,
    /// Read and hash everything, store nothing.
    #[arg(long)]
    dry_run: bool,
    /// Trust the previous snapshot's metadata for unchanged files (the default).
    #[arg(long, overrides_with = "no_incremental")]
    incremental: bool,
    /// Read every file again: every backup is a level 0.
    #[arg(long)]
    no_incremental: bool,
    /// Start a new level 0 once this level is reached.
    #[arg(long, value_name = "N")]
    max_level: Option<u32>,
    /// Climb to level N, then keep making level N backups from level N-1.
    #[arg(long, value_name = "N")]
    always_level: Option<u32>,
    /// Start a new level 0 once the current one is this many days old (fractional).
    #[arg(long, value_name = "DAYS")]
    restart_always_level: Option<f64>,
    /// Store a checksum of the backed-up file set in the snapshot (reads every file).
    #[arg(long)]
    consistency_check: bool,
    /// Write upstream's backup metadata document (JSON) to FILE, or to stdout with `-`
    /// (instead of the report), as freezer-agent's `--metadata-out`.
    #[arg(long, value_name = "FILE|-")]
    metadata_out: Option<String>,
    /// Back up an LVM snapshot of the volume holding --path-to-backup (created, mounted
    /// read-only, removed afterwards on every path, SIGTERM included).
    #[arg(long)]
    snapshot: bool,
    /// The logical volume to snapshot (default: guessed from the mount table).
    #[arg(long, value_name = "DEVICE")]
    lvm_srcvol: Option<String>,
    /// Its volume group (default: guessed).
    #[arg(long, value_name = "VG")]
    lvm_volgroup: Option<String>,
    /// The snapshot's name (default freezer_backup_snap_RANDOM).
    #[arg(long, value_name = "NAME")]
    lvm_snapname: Option<String>,
    /// The snapshot's size: 1G (default), 500M, or extents such as 80%FREE.
    #[arg(long, value_name = "SIZE")]
    lvm_snapsize: Option<String>,
    /// ro (default) or rw.
    #[arg(long, value_parser = ["ro", "rw"])]
    lvm_snap_perm: Option<String>,
    /// Where the snapshot is mounted (default /var/lib/freezer/mount_RANDOM).
    #[arg(long, value_name = "DIR")]
    lvm_dirmount: Option<String>,
    #[command(flatten)]
    db: DbArgs,
    /// Mode mysql: logical (mariadb-dump or mysqldump, the default) or physical (a hot copy
    /// streamed by mariadb-backup or xtrabackup).
    #[arg(long, value_parser = ["logical", "physical"])]
    mysql_method: Option<String>,
    /// Mode postgres: logical (pg_dump -Fc of each database and the globals, the default) or
    /// physical (pg_basebackup).
    #[arg(long, value_parser = ["logical", "physical"])]
    postgres_method: Option<String>,
}

/// The connection options of the database modes (mysql, postgres, mongo).
#[derive(Args, Debug, Default)]
struct DbArgs {
    /// Mode mysql: an INI file naming the server in its section default (or client): host,
    /// port, user, password, socket; as freezer-agent's --mysql-conf.
    #[arg(long, value_name = "FILE")]
    mysql_conf: Option<String>,
    /// Mode postgres: an INI file as --mysql-conf (host, port, user, password).
    #[arg(long, value_name = "FILE")]
    postgres_conf: Option<String>,
    /// Mode mongo: an INI file as --mysql-conf (host, localhost by default; port, 27017 by
    /// default; user, password, auth_source, tls, tls_ca_file, timeout).
    #[arg(long, value_name = "FILE")]
    mongo_conf: Option<String>,
}

impl DbArgs {
    fn options(self) -> freezer_core::db::DbOptions {
        freezer_core::db::DbOptions {
            mysql_conf: self.mysql_conf,
            postgres_conf: self.postgres_conf,
            mongo_conf: self.mongo_conf,
            ..Default::default()
        }
    }
}

#[derive(Args, Debug)]
struct CopyArgs {
    /// The repository to copy from (--repo) and its passphrase (--encrypt-pass-file).
    #[command(flatten)]
    repo: RepoArgs,
    /// The repository to copy into, created with `freezer init` (repeat for its replicas).
    #[arg(long = "to", value_name = "URL", required = true)]
    to: Vec<String>,
    /// The target's passphrase file (default: --encrypt-pass-file).
    #[arg(long, value_name = "FILE")]
    to_encrypt_pass_file: Option<PathBuf>,
    /// Copy this snapshot (id or unique prefix; repeatable). Default: every snapshot.
    #[arg(long)]
    snapshot: Vec<String>,
    /// Only snapshots of this host.
    #[arg(long)]
    hostname: Option<String>,
    /// Only snapshots of this backup name.
    #[arg(long, short = 'N')]
    backup_name: Option<String>,
}

impl CopyArgs {
    /// The repository copied into: `--to`, with `--to-encrypt-pass-file` (default: the
    /// source's pass file) and the source's other settings.
    fn target(&self) -> RepoArgs {
        RepoArgs {
            repos: self.to.clone(),
            encrypt_pass_file: self
                .to_encrypt_pass_file
                .clone()
                .or_else(|| self.repo.encrypt_pass_file.clone()),
            ..self.repo.clone()
        }
    }
}

#[derive(Args, Debug)]
struct RestoreArgs {
    #[command(flatten)]
    repo: RepoArgs,
    #[command(flatten)]
    resources: ResourceArgs,
    /// The folder to restore into (created if missing); `-` writes a stream backup (mode
    /// command or stdin) to stdout; for a mode image backup, the image file (holes kept) or
    /// block device to write.
    #[arg(long, required_unless_present_any = ["restore_command", "mode"])]
    restore_abs_path: Option<PathBuf>,
    /// mysql, postgres, mongo: restore a database backup into the server its options name
    /// (without --restore-abs-path). Without it, a restore writes files or a stream.
    #[arg(long, value_parser = ["fs", "command", "stdin", "mysql", "postgres", "mongo"])]
    mode: Option<String>,
    /// Write a stream backup into this command's stdin (split as --command is); the restore
    /// fails when the command does.
    #[arg(long, value_name = "COMMAND", conflicts_with = "restore_abs_path")]
    restore_command: Option<String>,
    /// Run --restore-command through /bin/sh -c.
    #[arg(long)]
    shell: bool,
    /// The backup series to restore from.
    #[arg(long, short = 'N')]
    backup_name: Option<String>,
    /// The host of the series (default: this host).
    #[arg(long)]
    hostname: Option<String>,
    /// Restore the newest snapshot at or before this date (YYYY-MM-DDThh:mm:ss, local time).
    #[arg(long)]
    restore_from_date: Option<String>,
    /// Restore this snapshot (id or unique prefix).
    #[arg(long)]
    snapshot: Option<String>,
    /// Restore the newest snapshot that reads, passing over unreadable ones (named in the
    /// report). Without it, an unreadable snapshot, which may be the newest, fails the restore
    /// (exit 3).
    #[arg(long, conflicts_with = "snapshot")]
    newest_readable: bool,
    /// Restore only this path inside the backup.
    #[arg(long)]
    sub_path: Option<String>,
    /// Restore into a folder that is not empty, replacing what is in the way (mode mongo:
    /// drop the collections that hold documents, then restore them).
    #[arg(long)]
    overwrite: bool,
    /// Read and verify everything, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Fail (exit 1) unless the restored files have this file-set checksum (from a backup
    /// made with --consistency-check).
    #[arg(long, value_name = "CHECKSUM")]
    consistency_checksum: Option<String>,
    #[command(flatten)]
    db: DbArgs,
    /// A physical database backup (mysql or postgres): the empty data folder to unpack,
    /// prepare and place it into, with the server stopped (files get the folder's owner).
    #[arg(long, value_name = "DIR")]
    restore_datadir: Option<String>,
}

#[derive(Subcommand, Debug)]
enum SnapshotsCommand {
    /// List snapshots (the default).
    List,
    /// Show one snapshot and check that everything it needs is there.
    Show {
        /// Snapshot id or unique prefix.
        id: String,
        /// Also read and verify every chunk.
        #[arg(long)]
        read_data: bool,
    },
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// List the keys.
    List {
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Add a passphrase.
    Add {
        #[command(flatten)]
        repo: RepoArgs,
        /// File whose first line is the new passphrase.
        #[arg(long, value_name = "FILE")]
        new_pass_file: PathBuf,
    },
    /// Remove a key (not the one in use, not the last one).
    Remove {
        #[command(flatten)]
        repo: RepoArgs,
        /// Key id or unique prefix.
        id: String,
    },
    /// Change the passphrase in use.
    Passwd {
        #[command(flatten)]
        repo: RepoArgs,
        /// File whose first line is the new passphrase.
        #[arg(long, value_name = "FILE")]
        new_pass_file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum JobCommand {
    /// Run every action of a job file, in order. Exit 1 when an action failed, 3 when every
    /// action ran but one did not complete everything.
    Run {
        /// The job document (JSON), or - for stdin.
        file: PathBuf,
        /// Accept option names this release does not know (a document written for a newer
        /// release), with a warning each, instead of refusing the job.
        #[arg(long)]
        allow_unknown_options: bool,
    },
}

/// Exit codes.
const EXIT_FAILURE: u8 = 1;
const EXIT_INCOMPLETE: u8 = 3;

fn main() -> ExitCode {
    freezer_cli::term::quiet_panics("freezer");
    let cli = Cli::parse();
    let level = match cli.verbose {
        // A server logs its requests, a scheduler what it runs.
        0 if matches!(cli.command, Command::Api { .. } | Command::Scheduler(_)) => "info",
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour_on_stderr())
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
            "freezer_core={level},freezer={level}"
        )))
        .init();
    let threads = match &cli.command {
        Command::Backup(a) => a.resources.threads,
        Command::Restore(a) => a.resources.threads,
        _ => None,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n as usize);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("freezer: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let out = Out::new(cli.json);
    match runtime.block_on(run(cli.command, &out)) {
        Ok(true) => ExitCode::SUCCESS,
        // A job reported an action that failed (its error is printed with the reports).
        Ok(false) if out.failed() => ExitCode::from(EXIT_FAILURE),
        Ok(false) => ExitCode::from(EXIT_INCOMPLETE),
        Err(e) => {
            out.clear_progress();
            eprintln!("freezer: {e}");
            // Ran to its end but left part undone (a restore's damaged files): as a result
            // that says so.
            if e.kind() == freezer_core::ErrorKind::Incomplete {
                ExitCode::from(EXIT_INCOMPLETE)
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
    }
}

/// Whether log lines on stderr may carry colours: only on a terminal, and never when
/// `NO_COLOR` is set to anything but the empty string (<https://no-color.org>).
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn context(out: &Out, lock_wait: std::time::Duration) -> RunContext {
    let mut ctx = RunContext::current();
    ctx.progress = out.progress_bar();
    ctx.env = environment();
    ctx.lock_wait = lock_wait;
    ctx.exec_env = job::exec_environment(std::env::vars());
    ctx
}

/// SIGTERM or SIGINT cancels the running backup or job (exit 1, `cancelled`).
fn cancel_on_signal(token: &freezer_core::CancelToken) {
    freezer_cli::term::cancel_on_signal("freezer", token);
}

/// Runs a command; `Ok(false)` means it finished but incompletely.
async fn run(command: Command, out: &Out) -> freezer_core::Result<bool> {
    match command {
        Command::Init { repo, pack_size } => {
            let pass = repo.passphrase()?;
            let encrypted = pass.is_some();
            let mut opts = InitOptions::new(pass, Actor::current());
            opts.pack_size = pack_size << 20;
            let report = Repository::init(repo.sinks()?, opts).await?;
            out.init(&report, encrypted);
            Ok(true)
        }
        Command::Backup(a) => {
            let mut action = a.repo.action()?;
            action.action = Some(job::Action::Backup);
            action.path_to_backup = a.path_to_backup.map(|p| p.display().to_string());
            action.mode = Some(a.mode);
            action.command = a.command;
            action.shell = a.shell;
            action.backup_name = Some(a.backup_name);
            action.hostname = a.hostname;
            action.exclude = a.exclude;
            action.compression = a.compression;
            action.dereference_symlink = a
                .dereference_symlink
                .as_deref()
                .map(|d| serde_json::from_value(d.into()))
                .transpose()
                .map_err(|e| Error::bad_input("dereference_symlink", e))?;
            action.one_file_system = a.one_file_system;
            action.dry_run = a.dry_run;
            a.resources.apply(&mut action);
            action.incremental = a.incremental.then_some(true);
            action.no_incremental = a.no_incremental;
            action.max_level = a.max_level;
            action.always_level = a.always_level;
            action.restart_always_level = a.restart_always_level;
            action.consistency_check = a.consistency_check;
            action.metadata_out = a.metadata_out;
            action.snapshot = freezer_core::source::lvm::SnapshotOptions {
                snapshot: a.snapshot,
                lvm_srcvol: a.lvm_srcvol,
                lvm_volgroup: a.lvm_volgroup,
                lvm_snapname: a.lvm_snapname,
                lvm_snapsize: a.lvm_snapsize,
                lvm_snapperm: a.lvm_snap_perm,
                lvm_dirmount: a.lvm_dirmount,
                ..Default::default()
            };
            action.db = freezer_core::db::DbOptions {
                mysql_method: a.mysql_method,
                postgres_method: a.postgres_method,
                ..a.db.options()
            };
            let mut ctx = context(out, a.repo.lock_wait());
            cancel_on_signal(&ctx.cancel);
            ctx.std_streams =
                job::StdStreams::new(Box::new(std::io::stdin()), Box::new(std::io::sink()));
            // `freezer backup` goes only into a repository made with `freezer init`, so that a
            // mistyped --repo fails instead of starting a new repository; jobs create theirs.
            ctx.create_repository = false;
            let outcome = job::run_action(&action, &ctx).await?;
            if let (Some("-"), job::ActionOutcome::Backup(b)) =
                (action.metadata_out.as_deref(), &outcome)
            {
                out.clear_progress();
                outln!("{:#}", job::backup_metadata(&action, b, &ctx));
                return Ok(outcome.is_complete());
            }
            Ok(out.outcome(&outcome))
        }
        Command::Restore(a) => {
            let mut action = a.repo.action()?;
            action.action = Some(job::Action::Restore);
            action.restore_abs_path = a.restore_abs_path.map(|p| p.display().to_string());
            action.restore_command = a.restore_command;
            action.shell = a.shell;
            action.mode = a.mode;
            let to_stdout = action.restore_abs_path.as_deref() == Some("-");
            action.backup_name = a.backup_name;
            action.hostname = a.hostname;
            action.restore_from_date = a.restore_from_date;
            action.snapshot_id = a.snapshot;
            action.newest_readable = a.newest_readable;
            action.sub_path = a.sub_path;
            action.overwrite = a.overwrite;
            action.dry_run = a.dry_run;
            a.resources.apply(&mut action);
            action.consistency_checksum = a.consistency_checksum;
            action.db = freezer_core::db::DbOptions {
                restore_datadir: a.restore_datadir,
                ..a.db.options()
            };
            let mut ctx = context(out, a.repo.lock_wait());
            ctx.std_streams =
                job::StdStreams::new(Box::new(std::io::empty()), Box::new(std::io::stdout()));
            match job::run_action(&action, &ctx).await {
                // Stdout holds the stream: the report goes to stderr.
                Ok(job::ActionOutcome::Restore(r)) if to_stdout => Ok(out.restore_to_stderr(&r)),
                Ok(outcome) => Ok(out.outcome(&outcome)),
                // The snapshot to restore is unreadable (`snapshots/<id>`): exit 3, as for a
                // restore that found damaged files. A checksum mismatch stays exit 1.
                Err(e @ Error::Corrupt { .. }) if matches!(&e, Error::Corrupt { what, .. } if what.starts_with("snapshots/")) =>
                {
                    out.clear_progress();
                    eprintln!("freezer: {e}");
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        }
        Command::Snapshots {
            command,
            repo,
            filter,
        } => {
            let filter = filter.filter()?;
            let command = command.unwrap_or(SnapshotsCommand::List);
            if let SnapshotsCommand::List = command {
                // Upstream's tar backups in the same place are listed too, marked as such.
                let sinks = repo.sinks()?;
                let theirs = freezer_core::upstream::layout::list(&*sinks[0], None).await?;
                let upstream: Vec<freezer_core::upstream::run::TarBackupSummary> = theirs
                    .chains
                    .iter()
                    .flat_map(|c| c.backups.iter())
                    .filter(|b| {
                        let n = |h: &str, name: &str| {
                            b.name == freezer_core::upstream::layout::backup_name(h, name)
                        };
                        let host_ok = filter.hostname.as_ref().is_none_or(|h| {
                            b.name.starts_with(&format!("{h}_"))
                                && filter.backup_name.as_ref().is_none_or(|name| n(h, name))
                        });
                        let name_ok = filter
                            .backup_name
                            .as_ref()
                            .is_none_or(|name| b.name.ends_with(&format!("_{name}")));
                        let t = freezer_core::Timestamp::from_second(b.t).ok();
                        host_ok
                            && name_ok
                            && filter.since.is_none_or(|s| t.is_some_and(|t| t >= s))
                            && filter.until.is_none_or(|u| t.is_some_and(|t| t <= u))
                    })
                    .map(freezer_core::upstream::run::TarBackupSummary::from)
                    .collect();
                let (mut snaps, bad) = match repo.open().await {
                    Ok(r) => r.snapshots().await?,
                    Err(Error::NotFound { .. }) if !theirs.chains.is_empty() => {
                        (Vec::new(), Vec::new())
                    }
                    Err(e) => return Err(e),
                };
                snaps.retain(|(_, s)| filter.matches(s));
                out.snapshots_and_upstream(&snaps, &bad, &upstream);
                return Ok(bad.is_empty());
            }
            let mut r = repo.open().await?;
            let (snaps, _) = r.snapshots().await?;
            match command {
                SnapshotsCommand::List => unreachable!("listed above"),
                SnapshotsCommand::Show { id, read_data } => {
                    let (id, snap) = select(&snaps, &SnapshotSelector::Id(id))?.clone();
                    r.load_index().await?;
                    let found = inspect(&r, id, &snap, read_data).await?;
                    out.show(&id, &snap, &found);
                    Ok(found.damaged.is_empty())
                }
            }
        }
        Command::Copy(a) => {
            // A place holding upstream's tar backups and no repository: a migration.
            let sinks = a.repo.sinks()?;
            let native = freezer_core::sink::SinkExt::exists(&*sinks[0], "config")
                .await
                .unwrap_or(true);
            if !native
                && !freezer_core::upstream::layout::list(&*sinks[0], None)
                    .await?
                    .chains
                    .is_empty()
            {
                return migrate(a, out).await;
            }
            let mut source = a.repo.open().await?;
            let mut target = a.target().open().await?;
            let mut opts = freezer_core::engine::CopyOptions::new(Actor::current());
            if !a.snapshot.is_empty() {
                let snaps = source.snapshots().await?.0;
                for prefix in &a.snapshot {
                    opts.snapshots
                        .push(select(&snaps, &SnapshotSelector::Id(prefix.clone()))?.0);
                }
            }
            opts.hostname = a.hostname;
            opts.backup_name = a.backup_name;
            let report =
                freezer_core::engine::copy(&mut source, &mut target, &opts, out.progress_bar())
                    .await?;
            Ok(out.copy(&report))
        }
        Command::Forget(a) => lifecycle::forget(a, out).await,
        Command::Prune(a) => lifecycle::prune(a, out).await,
        Command::Check(a) => lifecycle::check(a, out).await,
        Command::Repair { command } => lifecycle::repair(command, out).await,
        Command::Unlock(a) => lifecycle::unlock(a, out).await,
        Command::Key { command } => key(command, out).await,
        Command::Api { command } => api::run(command).await,
        Command::Scheduler(a) => scheduler::run(a).await,
        Command::Job {
            command:
                JobCommand::Run {
                    file,
                    allow_unknown_options,
                },
        } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).map_err(|e| Error::io("stdin", e))?
            } else {
                std::fs::read_to_string(&file).map_err(|e| Error::io(file.display(), e))?
            };
            let job = Job::from_json(&text).map_err(|e| e.context(file.display()))?;
            // Every action is checked before the first runs: nothing is written when a name
            // is misspelt anywhere in the document.
            let warnings = job
                .validate_with(allow_unknown_options)
                .map_err(|e| e.context(file.display()))?;
            let mut ctx = context(out, lock::DEFAULT_LOCK_WAIT);
            ctx.allow_unknown_options = allow_unknown_options;
            cancel_on_signal(&ctx.cancel);
            let reports = job::run_job(&job, &ctx).await;
            Ok(out.job(&reports, &warnings))
        }
    }
}

/// `freezer copy` from upstream's tar layout: every backup becomes a snapshot of the target.
async fn migrate(a: CopyArgs, out: &Out) -> freezer_core::Result<bool> {
    if !a.snapshot.is_empty() {
        return Err(Error::bad_input(
            "snapshot",
            "upstream's backups have no snapshot ids: select with --hostname and --backup-name",
        ));
    }
    let source = a.repo.sinks()?.remove(0);
    let mut target = a.target().open().await?;
    let mut opts = freezer_core::upstream::migrate::MigrateOptions::new(Actor::current());
    if let Some(p) = &a.repo.encrypt_pass_file {
        let content = std::fs::read(p).map_err(|e| Error::io(p.display(), e))?;
        opts.passphrase =
            Some(freezer_core::upstream::openssl::passphrase_of_file(&content).to_vec());
    }
    opts.hostname = a.hostname;
    opts.backup_name = a.backup_name;
    let report = freezer_core::upstream::migrate::migrate(source, &mut target, &opts).await?;
    out.migrated(&report);
    Ok(true)
}

async fn key(command: KeyCommand, out: &Out) -> freezer_core::Result<bool> {
    let actor = Actor::current();
    match command {
        KeyCommand::List { repo } => {
            let r = repo.open().await?;
            out.keys(&r.keys().await?);
        }
        KeyCommand::Add {
            repo,
            new_pass_file,
        } => {
            let (r, current, new) = repo.open_with_new(&new_pass_file).await?;
            let id = r
                .add_key(&current, &new, KdfParams::default(), &actor)
                .await?;
            out.message("key added", &id);
        }
        KeyCommand::Remove { repo, id } => {
            let r = repo.open().await?;
            let id = r.remove_key(&id).await?;
            out.message("key removed", &id);
        }
        KeyCommand::Passwd {
            repo,
            new_pass_file,
        } => {
            let (r, current, new) = repo.open_with_new(&new_pass_file).await?;
            let id = r
                .change_passphrase(&current, &new, KdfParams::default(), &actor)
                .await?;
            out.message("passphrase changed; new key", &id);
        }
    }
    Ok(true)
}
