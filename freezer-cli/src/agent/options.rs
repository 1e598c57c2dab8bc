//! freezer-agent's command line: upstream's option table and an argparse-compatible parser.
//!
//! Why not clap: upstream's agent is parsed by oslo.config on top of Python's argparse, and
//! scripts written for it rely on argparse's rules, which clap does not follow and cannot be
//! configured to: any unique prefix of a long option is accepted (`--compress gzip` is
//! `--compression`, the tempest gate passes exactly that), an ambiguous prefix is an error
//! naming every candidate, every boolean has an oslo `--no<name>` negation, a boolean given a
//! value (`--quiet=1`) is an error, unknown arguments are all collected into one
//! `unrecognized arguments: ...` error with exit status 2, and a value that does not parse as
//! its type fails with exit status 1. A table of upstream's options and a small parser keep
//! those rules in one readable place.
//!
//! The parser only splits and types the words; what a value means is decided once, by
//! freezer-core, when the option map becomes a [`freezer_core::job::FreezerAction`]. Secret
//! values (`--ssh-password`, `--secret-key`...) never appear in a message.

use std::collections::BTreeMap;

use serde_json::Value;

/// The type of an option's value, as oslo.config declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Any string.
    Str,
    /// An integer (oslo `IntOpt`).
    Int,
    /// A number (oslo `FloatOpt`).
    Float,
    /// A flag without value, with its `--no<name>` negation (oslo `BoolOpt`).
    Bool,
}

/// What the agent does with an option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Passed to freezer-core under its `dest` name.
    Action,
    /// Read by the agent itself (output, logging, configuration files).
    Agent,
    /// Accepted and without effect here; the text says why (docs/COMPAT.md too).
    Ignored(&'static str),
    /// Refused when set to anything but empty or false; the text says why.
    Refused(&'static str),
}

/// One upstream option.
#[derive(Clone, Copy, Debug)]
pub struct Opt {
    /// The long name, without `--`.
    pub name: &'static str,
    /// Upstream's `dest`: the key in `--config` files, job documents and the action.
    pub dest: &'static str,
    /// The one-letter short form, if any.
    pub short: Option<char>,
    /// The value's type.
    pub kind: Kind,
    /// What the agent does with it.
    pub usage: Use,
    /// One line of help.
    pub help: &'static str,
}

const fn opt(
    name: &'static str,
    dest: &'static str,
    short: Option<char>,
    kind: Kind,
    usage: Use,
    help: &'static str,
) -> Opt {
    Opt {
        name,
        dest,
        short,
        kind,
        usage,
        help,
    }
}

use Kind::{Bool, Float, Int, Str};
use Use::{Action, Agent, Ignored, Refused};

const CLOUD: &str =
    "OpenStack clients are not used by this agent (Swift credentials come from OS_* variables)";
const MEDIA: &str = "backing up Cinder volumes, Nova instances or Glance images is not supported by this agent (it backs up files, streams and databases)";
const LOGGING: &str = "logging goes to --log-file (or --log-dir) only, as plain text";

/// Upstream's options (freezer 19.0.0 `freezer/common/config.py` `_COMMON`, and those oslo.config
/// and oslo.log add), sorted by name as argparse lists them. `--help` and `--version` are
/// handled by the parser itself.
pub const OPTIONS: &[Opt] = &[
    opt(
        "access-key",
        "access_key",
        None,
        Str,
        Action,
        "S3: the access key (default: ACCESS_KEY from the environment)",
    ),
    opt(
        "action",
        "action",
        None,
        Str,
        Action,
        "backup (default), restore, info, admin or exec",
    ),
    opt(
        "always-level",
        "always_level",
        None,
        Int,
        Action,
        "climb to level N, then keep making level N backups from level N-1 (needs --incremental)",
    ),
    opt(
        "backup-id",
        "backup_id",
        None,
        Str,
        Ignored(
            "a freezer-api backup id pre-allocated by the scheduler; the metadata names the backup by its snapshot id",
        ),
        "pre-allocated freezer-api backup id (ignored)",
    ),
    opt(
        "backup-name",
        "backup_name",
        Some('N'),
        Str,
        Action,
        "the name of the backup series (default freezer_{mode}_{resource_id}, literally, as upstream's storage paths)",
    ),
    opt(
        "cinder-vol-id",
        "cinder_vol_id",
        None,
        Str,
        Refused(MEDIA),
        "refused: Cinder volumes",
    ),
    opt(
        "cinder-vol-name",
        "cinder_vol_name",
        None,
        Str,
        Refused(MEDIA),
        "refused: Cinder volumes",
    ),
    opt(
        "cinderbrick-vol-id",
        "cinderbrick_vol_id",
        None,
        Str,
        Refused(MEDIA),
        "refused: Cinder volumes",
    ),
    opt(
        "cindernative-backup-az",
        "cindernative_backup_az",
        None,
        Str,
        Ignored(MEDIA),
        "Cinder native backups (ignored)",
    ),
    opt(
        "cindernative-backup-container",
        "cindernative_backup_container",
        None,
        Str,
        Ignored(MEDIA),
        "Cinder native backups (ignored)",
    ),
    opt(
        "cindernative-backup-id",
        "cindernative_backup_id",
        None,
        Str,
        Refused(MEDIA),
        "refused: Cinder native backups",
    ),
    opt(
        "cindernative-freezer-only",
        "cindernative_freezer_only",
        None,
        Bool,
        Ignored(MEDIA),
        "Cinder native backups (ignored)",
    ),
    opt(
        "cindernative-vol-id",
        "cindernative_vol_id",
        None,
        Str,
        Refused(MEDIA),
        "refused: Cinder native backups",
    ),
    opt(
        "command",
        "command",
        None,
        Str,
        Action,
        "exec: the command to run; backup in mode command: the command whose stdout is backed up",
    ),
    opt(
        "compression",
        "compression",
        None,
        Str,
        Action,
        "gzip (default), bzip2 or xz; with --engine native also zstd, zstd:N, none",
    ),
    opt(
        "config",
        "config",
        None,
        Str,
        Agent,
        "an INI job file: its options, [storage:NAME] sections for several storages (the command line wins over it)",
    ),
    opt(
        "config-dir",
        "config_dir",
        None,
        Str,
        Agent,
        "a folder of *.conf files read as --config-file, sorted",
    ),
    opt(
        "config-file",
        "config_file",
        None,
        Str,
        Agent,
        "an oslo config file: options in its [DEFAULT] section (repeatable; the command line wins)",
    ),
    opt(
        "consistency-check",
        "consistency_check",
        None,
        Bool,
        Action,
        "store a checksum of the backed-up file set in the metadata",
    ),
    opt(
        "consistency-checksum",
        "consistency_checksum",
        None,
        Str,
        Action,
        "restore: fail unless the restored files have this checksum",
    ),
    opt(
        "container",
        "container",
        Some('C'),
        Str,
        Action,
        "where backups are: a folder (local), bucket[/prefix] (s3), container[/prefix] (swift), a remote path (ssh, ftp)",
    ),
    opt(
        "debug",
        "debug",
        Some('d'),
        Bool,
        Agent,
        "log at level debug (to --log-file)",
    ),
    opt(
        "dereference-symlink",
        "dereference_symlink",
        None,
        Str,
        Action,
        "soft, hard or all: follow symlinks, split hard links, or both",
    ),
    opt(
        "download-limit",
        "download_limit",
        None,
        Str,
        Action,
        "download bandwidth limit, bytes per second (512, 10K, 1M; -1: none)",
    ),
    opt(
        "dry-run",
        "dry_run",
        None,
        Bool,
        Action,
        "do everything but write or remove",
    ),
    opt(
        "encrypt-pass-file",
        "encrypt_pass_file",
        None,
        Str,
        Action,
        "a file whose first line is the passphrase; without it, no encryption",
    ),
    opt(
        "endpoint",
        "endpoint",
        None,
        Str,
        Action,
        "S3: the endpoint URL (default: ENDPOINT from the environment)",
    ),
    opt(
        "engine",
        "engine_name",
        Some('e'),
        Str,
        Action,
        "tar (default: upstream's format) or native (this project's repository)",
    ),
    opt(
        "exclude",
        "exclude",
        None,
        Str,
        Action,
        "leave out files matching this pattern",
    ),
    opt(
        "ftp-certfile",
        "ftp_certfile",
        None,
        Str,
        Action,
        "FTPS: the client certificate",
    ),
    opt(
        "ftp-host",
        "ftp_host",
        None,
        Str,
        Action,
        "FTP, FTPS: the server",
    ),
    opt(
        "ftp-keyfile",
        "ftp_keyfile",
        None,
        Str,
        Action,
        "FTPS: the client key",
    ),
    opt(
        "ftp-password",
        "ftp_password",
        None,
        Str,
        Action,
        "FTP, FTPS: the password (or FTP_PASSWORD from the environment)",
    ),
    opt(
        "ftp-port",
        "ftp_port",
        None,
        Int,
        Action,
        "FTP, FTPS: the port (21)",
    ),
    opt(
        "ftp-username",
        "ftp_username",
        None,
        Str,
        Action,
        "FTP, FTPS: the user",
    ),
    opt(
        "fullbackup-rotation",
        "fullbackup_rotation",
        None,
        Int,
        Ignored(MEDIA),
        "Cinder native backups (ignored)",
    ),
    opt(
        "glance-image-id",
        "glance_image_id",
        None,
        Str,
        Refused(MEDIA),
        "refused: Glance images",
    ),
    opt(
        "glance-image-name",
        "glance_image_name",
        None,
        Str,
        Refused(MEDIA),
        "refused: Glance images",
    ),
    opt(
        "glance-image-name-filter",
        "glance_image_name_filter",
        None,
        Str,
        Refused(MEDIA),
        "refused: Glance images",
    ),
    opt(
        "hostname",
        "hostname",
        None,
        Str,
        Action,
        "the host the backups belong to (default: this host)",
    ),
    opt(
        "incremental",
        "incremental",
        None,
        Bool,
        Action,
        "make incremental backups (default: every backup is a level 0)",
    ),
    opt(
        "insecure",
        "insecure",
        None,
        Bool,
        Ignored(CLOUD),
        "OpenStack clients (ignored)",
    ),
    opt(
        "log-config-append",
        "log_config_append",
        None,
        Str,
        Ignored(LOGGING),
        "oslo.log (ignored)",
    ),
    opt(
        "log-date-format",
        "log_date_format",
        None,
        Str,
        Ignored(LOGGING),
        "oslo.log (ignored)",
    ),
    opt(
        "log-dir",
        "log_dir",
        None,
        Str,
        Agent,
        "the folder of --log-file (default file freezer-agent.log)",
    ),
    opt(
        "log-file",
        "log_file",
        None,
        Str,
        Agent,
        "log to this file (default: no log)",
    ),
    opt(
        "lvm-dirmount",
        "lvm_dirmount",
        None,
        Str,
        Action,
        "where the LVM snapshot is mounted",
    ),
    opt(
        "lvm-snap-perm",
        "lvm_snapperm",
        None,
        Str,
        Action,
        "ro (default) or rw",
    ),
    opt(
        "lvm-snapname",
        "lvm_snapname",
        None,
        Str,
        Action,
        "the LVM snapshot's name",
    ),
    opt(
        "lvm-snapsize",
        "lvm_snapsize",
        None,
        Str,
        Action,
        "the LVM snapshot's size (1G, 500M, 80%FREE)",
    ),
    opt(
        "lvm-srcvol",
        "lvm_srcvol",
        None,
        Str,
        Action,
        "the logical volume to snapshot (default: guessed)",
    ),
    opt(
        "lvm-volgroup",
        "lvm_volgroup",
        None,
        Str,
        Action,
        "its volume group (default: guessed)",
    ),
    opt(
        "max-level",
        "max_level",
        None,
        Int,
        Action,
        "start a new level 0 once this level is reached (needs --incremental)",
    ),
    opt(
        "max-priority",
        "max_priority",
        None,
        Str,
        Ignored("the process priority is left as it is (run the agent under nice or ionice)"),
        "highest CPU and I/O priority (ignored)",
    ),
    opt(
        "max-segment-size",
        "max_segment_size",
        Some('M'),
        Int,
        Ignored("the stream is chunked by the engine"),
        "upstream's chunk size (ignored)",
    ),
    opt(
        "metadata-out",
        "metadata_out",
        None,
        Str,
        Agent,
        "write the backup metadata (JSON) to this file, or to stdout with -",
    ),
    opt(
        "mode",
        "mode",
        Some('m'),
        Str,
        Action,
        "fs (default), mysql, mongo; also command, stdin, postgres, image",
    ),
    opt(
        "mysql-conf",
        "mysql_conf",
        None,
        Str,
        Action,
        "mode mysql: the INI file naming the server",
    ),
    opt(
        "nova-inst-id",
        "nova_inst_id",
        None,
        Str,
        Refused(MEDIA),
        "refused: Nova instances",
    ),
    opt(
        "nova-inst-name",
        "nova_inst_name",
        None,
        Str,
        Refused(MEDIA),
        "refused: Nova instances",
    ),
    opt(
        "nova-restore-network",
        "nova_restore_network",
        None,
        Str,
        Ignored(MEDIA),
        "Nova instances (ignored)",
    ),
    opt(
        "os-auth-ver",
        "os_identity_api_version",
        None,
        Str,
        Ignored(CLOUD),
        "OpenStack clients (ignored)",
    ),
    opt(
        "os-identity-api-version",
        "os_identity_api_version",
        None,
        Str,
        Ignored(CLOUD),
        "OpenStack clients (ignored)",
    ),
    opt(
        "os-trust-id",
        "os_trust_id",
        None,
        Str,
        Ignored(CLOUD),
        "OpenStack clients (ignored)",
    ),
    opt(
        "os_auth_ver",
        "os_identity_api_version",
        None,
        Str,
        Ignored(CLOUD),
        "OpenStack clients (ignored)",
    ),
    opt(
        "overwrite",
        "overwrite",
        None,
        Bool,
        Action,
        "restore into a folder that is not empty",
    ),
    opt(
        "path-to-backup",
        "path_to_backup",
        Some('F'),
        Str,
        Action,
        "the folder or file to back up",
    ),
    opt(
        "project-id",
        "project_id",
        None,
        Str,
        Ignored(MEDIA),
        "OpenStack projects (ignored)",
    ),
    opt(
        "proxy",
        "proxy",
        None,
        Str,
        Ignored("proxies come from HTTP_PROXY and HTTPS_PROXY in the environment"),
        "HTTP proxy (ignored)",
    ),
    opt(
        "quiet",
        "quiet",
        Some('q'),
        Bool,
        Agent,
        "no error message on stderr",
    ),
    opt(
        "remove-before-date",
        "remove_before_date",
        None,
        Str,
        Action,
        "admin: remove backups older than this date (YYYY-MM-DDThh:mm:ss)",
    ),
    opt(
        "remove-from-date",
        "remove_from_date",
        None,
        Str,
        Action,
        "admin: remove backups older than this date (YYYY-MM-DDThh:mm:ss)",
    ),
    opt(
        "remove-older-than",
        "remove_older_than",
        Some('R'),
        Float,
        Action,
        "admin: remove backups older than this many days",
    ),
    opt(
        "restart-always-level",
        "restart_always_level",
        None,
        Float,
        Action,
        "start a new level 0 after this many days",
    ),
    opt(
        "restore-abs-path",
        "restore_abs_path",
        None,
        Str,
        Action,
        "restore: the folder to restore into",
    ),
    opt(
        "restore-from-date",
        "restore_from_date",
        None,
        Str,
        Action,
        "restore: the newest backup at or before this date (YYYY-MM-DDThh:mm:ss)",
    ),
    opt(
        "rsync-block-size",
        "rsync_block_size",
        None,
        Int,
        Ignored("the rsync engines are not supported"),
        "rsync engines (ignored)",
    ),
    opt(
        "secret-key",
        "secret_key",
        None,
        Str,
        Action,
        "S3: the secret key (default: SECRET_KEY from the environment)",
    ),
    opt(
        "shell_completion",
        "shell_completion",
        None,
        Str,
        Refused("this agent prints no shell completion script"),
        "refused",
    ),
    opt(
        "snapshot",
        "snapshot",
        Some('s'),
        Str,
        Action,
        "back up an LVM snapshot of the volume holding --path-to-backup (any non-empty value)",
    ),
    opt(
        "sql-server-conf",
        "sql_server_conf",
        None,
        Str,
        Refused("mode sqlserver (Windows SQL Server) is not supported by this agent"),
        "refused: SQL Server",
    ),
    opt("ssh-host", "ssh_host", None, Str, Action, "SSH: the server"),
    opt(
        "ssh-key",
        "ssh_key",
        None,
        Str,
        Action,
        "SSH: the private key (default ~/.ssh/id_rsa)",
    ),
    opt(
        "ssh-password",
        "ssh_password",
        None,
        Str,
        Action,
        "SSH: the password",
    ),
    opt(
        "ssh-port",
        "ssh_port",
        None,
        Int,
        Action,
        "SSH: the port (22)",
    ),
    opt(
        "ssh-username",
        "ssh_username",
        None,
        Str,
        Action,
        "SSH: the user",
    ),
    opt(
        "storage",
        "storage",
        None,
        Str,
        Action,
        "swift (default), local, ssh, s3, ftp or ftps",
    ),
    opt(
        "sync",
        "sync",
        None,
        Bool,
        Ignored("the engine reads files as they are; run sync first if needed"),
        "sync before a backup (ignored)",
    ),
    opt(
        "syslog-log-facility",
        "syslog_log_facility",
        None,
        Str,
        Ignored(LOGGING),
        "oslo.log (ignored)",
    ),
    opt(
        "temp-resource-prefix",
        "temp_resource_prefix",
        None,
        Str,
        Ignored(MEDIA),
        "cloud resources (ignored)",
    ),
    opt(
        "timeout",
        "timeout",
        None,
        Int,
        Ignored(CLOUD),
        "OpenStack wait loops (ignored)",
    ),
    opt(
        "upload-limit",
        "upload_limit",
        None,
        Str,
        Action,
        "upload bandwidth limit, bytes per second (512, 10K, 1M; -1: none)",
    ),
    opt(
        "use-journal",
        "use_journal",
        None,
        Bool,
        Ignored(LOGGING),
        "oslo.log (ignored)",
    ),
    opt(
        "use-json",
        "use_json",
        None,
        Bool,
        Ignored(LOGGING),
        "oslo.log (ignored)",
    ),
    opt(
        "use-syslog",
        "use_syslog",
        None,
        Bool,
        Ignored(LOGGING),
        "oslo.log (ignored)",
    ),
];

/// The option of this `dest` (the first, for aliases).
pub fn by_dest(dest: &str) -> Option<&'static Opt> {
    OPTIONS.iter().find(|o| o.dest == dest)
}

/// Whether an option of this name may hold a secret: its value is never shown.
pub fn is_secret(dest: &str) -> bool {
    freezer_core::job::OtherOptions::is_secret(dest)
}

/// What the command line asked for.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Parsed {
    /// Values by `dest`, typed (the last given wins, as argparse's).
    pub values: BTreeMap<&'static str, Value>,
    /// `--help` or `-h`.
    pub help: bool,
    /// `--version`.
    pub version: bool,
    /// `--config-file` (repeatable).
    pub config_files: Vec<String>,
}

/// Why the command line cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// argparse's usage errors (`unrecognized arguments: ...`, `ambiguous option: ...`,
    /// `expected one argument`): usage and message on stderr, exit status 2.
    Usage(String),
    /// A value that does not parse as its option's type (oslo's check): exit status 1.
    Value(String),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Usage(m) | ParseError::Value(m) => f.write_str(m),
        }
    }
}

/// How a word was recognised.
enum Word<'a> {
    /// An option (`--name`, `--noname`, `-x`), negated or not, with the value written in the
    /// same word (`--name=value`, `-xvalue`).
    Opt {
        opt: Option<&'static Opt>,
        negated: bool,
        shown: String,
        inline: Option<&'a str>,
        /// `-qd`: the characters after a short flag are more short options.
        short_rest: bool,
    },
    /// An option-looking word no option matches.
    Unknown,
    /// A value or a stray word.
    Plain,
}

/// `--version`: a flag of the parser itself (no `--noversion`), not listed with the others.
const VERSION_OPT: Opt = opt(
    "version",
    "version",
    None,
    Bool,
    Agent,
    "show program's version number and exit",
);
const VERSION: &str = "version";

/// Every long option string argparse would know: the table's names, `--no<name>` for each
/// boolean, `--help` and `--version`.
fn long_strings() -> Vec<(String, Option<&'static Opt>, bool)> {
    let mut v: Vec<(String, Option<&'static Opt>, bool)> = Vec::new();
    for o in OPTIONS {
        v.push((format!("--{}", o.name), Some(o), false));
        if o.kind == Bool {
            v.push((format!("--no{}", o.name), Some(o), true));
        }
    }
    v.push(("--help".into(), None, false));
    v.push(("--version".into(), Some(&VERSION_OPT), false));
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A negative number is a value, not an option (argparse's rule when no option looks like one).
fn is_negative_number(w: &str) -> bool {
    let Some(rest) = w.strip_prefix('-') else {
        return false;
    };
    !rest.is_empty()
        && rest.chars().all(|c| c.is_ascii_digit() || c == '.')
        && rest.chars().filter(|c| *c == '.').count() <= 1
        && rest != "."
}

/// Whether argparse would take `w` as the value of an option (its "A" class).
fn is_value_word(w: &str) -> Result<bool, ParseError> {
    Ok(matches!(classify(w)?, Word::Plain))
}

fn short_opt(c: char) -> Option<Option<&'static Opt>> {
    if c == 'h' {
        return Some(None);
    }
    OPTIONS.iter().find(|o| o.short == Some(c)).map(Some)
}

fn display_name(opt: Option<&'static Opt>, negated: bool) -> String {
    match opt {
        None => "--help/-h".into(),
        Some(o) if negated => format!("--no{}", o.name),
        Some(o) => match o.short {
            Some(s) => format!("--{}/-{s}", o.name),
            None => format!("--{}", o.name),
        },
    }
}

/// Recognises one word as argparse's `_parse_optional` does.
fn classify(w: &str) -> Result<Word<'_>, ParseError> {
    if !w.starts_with('-') || w == "-" || is_negative_number(w) {
        return Ok(Word::Plain);
    }
    let longs = long_strings();
    if let Some((_, o, neg)) = longs.iter().find(|(s, _, _)| s == w) {
        return Ok(Word::Opt {
            opt: *o,
            negated: *neg,
            shown: w.to_string(),
            inline: None,
            short_rest: false,
        });
    }
    if w.starts_with("--") {
        let (name, inline) = match w.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (w, None),
        };
        if let Some((s, o, neg)) = longs.iter().find(|(s, _, _)| s == name) {
            return Ok(Word::Opt {
                opt: *o,
                negated: *neg,
                shown: s.clone(),
                inline,
                short_rest: false,
            });
        }
        let matches: Vec<&(String, Option<&'static Opt>, bool)> = longs
            .iter()
            .filter(|(s, _, _)| s.starts_with(name))
            .collect();
        return match matches.as_slice() {
            [] if w.contains(' ') => Ok(Word::Plain),
            [] => Ok(Word::Unknown),
            [(s, o, neg)] => Ok(Word::Opt {
                opt: *o,
                negated: *neg,
                shown: s.clone(),
                inline,
                short_rest: false,
            }),
            many => Err(ParseError::Usage(format!(
                "ambiguous option: {w} could match {}",
                many.iter()
                    .map(|(s, _, _)| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        };
    }
    // A single dash: `-C`, `-Cvalue`, `-qd`.
    let mut chars = w[1..].chars();
    let Some(c) = chars.next() else {
        return Ok(Word::Plain);
    };
    match short_opt(c) {
        Some(o) => {
            let rest = chars.as_str();
            Ok(Word::Opt {
                opt: o,
                negated: false,
                shown: format!("-{c}"),
                inline: (!rest.is_empty()).then_some(rest),
                short_rest: o.is_none_or(|o| o.kind == Bool),
            })
        }
        None if w.contains(' ') => Ok(Word::Plain),
        None => Ok(Word::Unknown),
    }
}

/// Converts a value given on the command line to its option's type; a failure is oslo's
/// message (exit status 1), without the value when it may be secret.
pub fn typed(o: &Opt, raw: &str) -> Result<Value, ParseError> {
    let bad = |what: &str| {
        let shown = if is_secret(o.dest) { "<hidden>" } else { raw };
        ParseError::Value(format!(
            "argument --{}: Invalid {what} value: {shown}",
            o.name
        ))
    };
    match o.kind {
        Str | Bool => Ok(Value::String(raw.to_string())),
        Int => raw
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| bad("Integer")),
        Float => raw
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::from)
            .ok_or_else(|| bad("Float")),
    }
}

/// Parses the arguments (without the program name).
pub fn parse(args: &[String]) -> Result<Parsed, ParseError> {
    let mut p = Parsed::default();
    let mut unrecognized: Vec<String> = Vec::new();
    let mut i = 0;
    let mut after_dashes = false;
    while i < args.len() {
        let w = args[i].as_str();
        i += 1;
        if after_dashes {
            unrecognized.push(w.to_string());
            continue;
        }
        if w == "--" {
            after_dashes = true;
            continue;
        }
        match classify(w)? {
            Word::Plain => unrecognized.push(w.to_string()),
            Word::Unknown => unrecognized.push(w.to_string()),
            Word::Opt {
                opt,
                negated,
                shown,
                inline,
                short_rest,
            } => {
                let mut pending = Some((opt, negated, shown, inline, short_rest));
                while let Some((opt, negated, _shown, inline, short_rest)) = pending.take() {
                    let takes_value = opt.is_some_and(|o| o.kind != Bool);
                    if !takes_value {
                        // A flag: `--quiet=1` is an error, `-qd` is `-q -d`.
                        match (inline, short_rest) {
                            (Some(rest), true) => {
                                let mut cs = rest.chars();
                                let c = cs.next().expect("not empty");
                                match short_opt(c) {
                                    Some(next) => {
                                        let more = cs.as_str();
                                        pending = Some((
                                            next,
                                            false,
                                            format!("-{c}"),
                                            (!more.is_empty()).then_some(more),
                                            next.is_none_or(|o| o.kind == Bool),
                                        ));
                                    }
                                    None => {
                                        return Err(ParseError::Usage(format!(
                                            "argument {}: ignored explicit argument '{rest}'",
                                            display_name(opt, negated)
                                        )));
                                    }
                                }
                            }
                            (Some(rest), false) => {
                                return Err(ParseError::Usage(format!(
                                    "argument {}: ignored explicit argument '{rest}'",
                                    display_name(opt, negated)
                                )));
                            }
                            (None, _) => {}
                        }
                        match opt {
                            None => p.help = true,
                            Some(o) => {
                                p.values.insert(o.dest, Value::Bool(!negated));
                            }
                        }
                        continue;
                    }
                    let o = opt.expect("takes a value");
                    let raw = match inline {
                        Some(v) => v.to_string(),
                        None => match args.get(i) {
                            Some(next) if is_value_word(next)? => {
                                i += 1;
                                next.clone()
                            }
                            _ => {
                                return Err(ParseError::Usage(format!(
                                    "argument {}: expected one argument",
                                    display_name(opt, false)
                                )));
                            }
                        },
                    };
                    if o.dest == "config_file" {
                        p.config_files.push(raw);
                        continue;
                    }
                    let v = typed(o, &raw)?;
                    p.values.insert(o.dest, v);
                }
            }
        }
    }
    if p.values.remove(VERSION).is_some() {
        p.version = true;
    }
    if !unrecognized.is_empty() {
        return Err(ParseError::Usage(format!(
            "unrecognized arguments: {}",
            unrecognized.join(" ")
        )));
    }
    Ok(p)
}

/// Usage line(s) as argparse prints them, wrapped.
pub fn usage() -> String {
    let prefix = "usage: freezer-agent ";
    let mut parts = vec!["[-h]".to_string()];
    for (s, o, _) in long_strings() {
        match o {
            None => {}
            Some(o) if o.kind == Bool => parts.push(format!("[{s}]")),
            Some(o) => parts.push(format!("[{s} {}]", metavar(o))),
        }
    }
    let mut out = String::from(prefix);
    let mut col = prefix.len();
    for part in parts {
        if col + part.len() + 1 > 79 && col > prefix.len() {
            out.push('\n');
            out.push_str(&" ".repeat(prefix.len()));
            col = prefix.len();
        } else if col > prefix.len() {
            out.push(' ');
            col += 1;
        }
        out.push_str(&part);
        col += part.len();
    }
    out.push('\n');
    out
}

fn metavar(o: &Opt) -> String {
    o.dest.to_ascii_uppercase()
}

/// The whole help text.
pub fn help() -> String {
    let mut out = usage();
    out.push_str(
        "\nfreezer-rs's freezer-agent: upstream OpenStack Freezer's agent command line.\n\noptions:\n  -h, --help            show this help message and exit\n  --version             show program's version number and exit\n",
    );
    for o in OPTIONS {
        let mut head = format!("--{}", o.name);
        if o.kind != Bool {
            head.push(' ');
            head.push_str(&metavar(o));
        }
        if let Some(s) = o.short {
            head.push_str(&format!(", -{s}"));
            if o.kind != Bool {
                head.push(' ');
                head.push_str(&metavar(o));
            }
        }
        if head.len() <= 20 {
            out.push_str(&format!("  {head:<20}  {}\n", o.help));
        } else {
            out.push_str(&format!("  {head}\n                        {}\n", o.help));
        }
        if o.kind == Bool {
            out.push_str(&format!(
                "  --no{:<18}  The inverse of --{}\n",
                o.name, o.name
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn ok(a: &[&str]) -> Parsed {
        parse(&args(a)).unwrap_or_else(|e| panic!("{a:?}: {e}"))
    }

    fn usage_err(a: &[&str]) -> String {
        match parse(&args(a)) {
            Err(ParseError::Usage(m)) => m,
            other => panic!("{a:?}: {other:?}"),
        }
    }

    #[test]
    fn every_long_name_is_unique_and_every_dest_consistent() {
        let mut names: Vec<&str> = OPTIONS.iter().map(|o| o.name).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len());
        for o in OPTIONS {
            assert_eq!(by_dest(o.dest).unwrap().kind, o.kind, "{}", o.name);
        }
    }

    #[test]
    fn prefixes_and_equals() {
        let p = ok(&[
            "--compress",
            "gzip",
            "--cont=/bk",
            "--path-to-b",
            "/src",
            "--metadata-o=-",
        ]);
        assert_eq!(p.values["compression"], "gzip");
        assert_eq!(p.values["container"], "/bk");
        assert_eq!(p.values["path_to_backup"], "/src");
        assert_eq!(p.values["metadata_out"], "-");
        // An exact name wins over longer ones it prefixes.
        let p = ok(&["--consistency-check"]);
        assert_eq!(p.values["consistency_check"], true);
        // The last occurrence wins.
        assert_eq!(
            ok(&["-N", "a", "--backup-name=b"]).values["backup_name"],
            "b"
        );
    }

    #[test]
    fn an_ambiguous_prefix_lists_the_candidates() {
        let m = usage_err(&["--max", "3"]);
        assert_eq!(
            m,
            "ambiguous option: --max could match --max-level, --max-priority, --max-segment-size"
        );
        let m = usage_err(&["--co=1"]);
        assert!(
            m.starts_with("ambiguous option: --co=1 could match --command,"),
            "{m}"
        );
        assert!(usage_err(&["--no"]).contains("--nova-inst-id"));
    }

    #[test]
    fn negations_and_flags() {
        let p = ok(&["--noincremental", "--nosync", "--quiet", "--nodry-run"]);
        assert_eq!(p.values["incremental"], false);
        assert_eq!(p.values["sync"], false);
        assert_eq!(p.values["quiet"], true);
        assert_eq!(p.values["dry_run"], false);
        assert_eq!(
            ok(&["--incremental", "--noincr"]).values["incremental"],
            false
        );
        assert_eq!(
            usage_err(&["--quiet=1"]),
            "argument --quiet/-q: ignored explicit argument '1'"
        );
        assert_eq!(
            usage_err(&["--noquiet=yes"]),
            "argument --noquiet: ignored explicit argument 'yes'"
        );
    }

    #[test]
    fn short_options() {
        let p = ok(&[
            "-Cbk", "-N", "n", "-qd", "-e", "native", "-R", "2.5", "-m", "fs",
        ]);
        assert_eq!(p.values["container"], "bk");
        assert_eq!(p.values["backup_name"], "n");
        assert_eq!(p.values["quiet"], true);
        assert_eq!(p.values["debug"], true);
        assert_eq!(p.values["engine_name"], "native");
        assert_eq!(p.values["remove_older_than"], 2.5);
        assert_eq!(
            usage_err(&["-qx"]),
            "argument --quiet/-q: ignored explicit argument 'x'"
        );
        assert!(ok(&["-h"]).help);
        assert!(ok(&["--vers"]).version);
    }

    #[test]
    fn values_that_look_like_options() {
        // A negative number and `-` are values; another option is not.
        assert_eq!(ok(&["--upload-limit", "-1"]).values["upload_limit"], "-1");
        assert_eq!(ok(&["--metadata-out", "-"]).values["metadata_out"], "-");
        assert_eq!(
            usage_err(&["--action", "--quiet"]),
            "argument --action: expected one argument"
        );
        assert_eq!(
            usage_err(&["--container"]),
            "argument --container/-C: expected one argument"
        );
    }

    #[test]
    fn unknown_arguments_are_collected() {
        assert_eq!(
            usage_err(&["--foo", "1", "bar", "-q"]),
            "unrecognized arguments: --foo 1 bar"
        );
        assert_eq!(usage_err(&["-z"]), "unrecognized arguments: -z");
        assert_eq!(usage_err(&["--", "-q"]), "unrecognized arguments: -q");
    }

    #[test]
    fn typed_values() {
        assert_eq!(ok(&["--max-level", "3"]).values["max_level"], 3);
        assert_eq!(
            ok(&["--restart-always-level=0.5"]).values["restart_always_level"],
            0.5
        );
        assert_eq!(
            parse(&args(&["--max-level", "x"])),
            Err(ParseError::Value(
                "argument --max-level: Invalid Integer value: x".into()
            ))
        );
        // A secret's value is never shown (ports are not secrets, but the check is by name).
        assert_eq!(typed(by_dest("ssh_password").unwrap(), "x").unwrap(), "x");
    }

    #[test]
    fn config_files_repeat() {
        let p = ok(&["--config-file", "a.conf", "--config-file=b.conf"]);
        assert_eq!(p.config_files, ["a.conf", "b.conf"]);
    }
}
