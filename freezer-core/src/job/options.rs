//! Upstream's `freezer_action` option map as one typed struct.
//!
//! The same struct is filled from a job document (JSON), from the `freezer` CLI flags and
//! (later) from the agent's INI file, Python dicts and C JSON: parse once, validate once.
//! Names are upstream's. Values are accepted as upstream's tools write them: booleans as
//! `true`/`"True"`/`"yes"`, numbers as numbers or strings, `exclude` as one pattern or a list.
//! Other names are kept in [`FreezerAction::other`]: storage options, upstream options that do
//! not apply here (ignored), and unknown names, which are an error unless allowed (`names`).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::storage::{Secret, StorageSpec};
use crate::error::{Error, Result};
use crate::source::fs::Dereference;

/// Options kept by name as given. `Debug` shows the names of options that may hold a secret
/// (`*password*`, `*secret*`, `*token*`, `access_key`) but not their values, nor the values of
/// names this release does not know (a misspelt `ssh_pasword` may hold one).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OtherOptions(pub BTreeMap<String, serde_json::Value>);

impl OtherOptions {
    /// Whether an option of this name may hold a secret.
    pub fn is_secret(name: &str) -> bool {
        let n = name.to_ascii_lowercase();
        ["password", "secret", "token", "access_key", "passwd"]
            .iter()
            .any(|s| n.contains(s))
    }
}

impl std::ops::Deref for OtherOptions {
    type Target = BTreeMap<String, serde_json::Value>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for OtherOptions {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl std::fmt::Debug for OtherOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.0 {
            if Self::is_secret(k) || !super::names::is_known_action_option(k) {
                m.entry(k, &"<redacted>");
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

/// The on-storage format of an action ([`FreezerAction::engine`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// This release's repository (docs/FORMAT.md).
    #[default]
    Native,
    /// Upstream Freezer's `tar` engine: one GNU tar stream per level (docs/UPSTREAM-TAR.md).
    Tar,
}

/// What an action does (upstream's `action`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Back up `path_to_backup`.
    #[default]
    Backup,
    /// Restore into `restore_abs_path`.
    Restore,
    /// List backups.
    Info,
    /// Retention.
    Admin,
    /// Run a command.
    Exec,
    /// Verify the repository (an extension; `read_data` chooses how much is read).
    Check,
    /// Remove data no snapshot references (an extension; `max_unused`, `dry_run`).
    Prune,
}

/// What a backup reads (upstream's `mode`, those this release backs up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceMode {
    /// A folder or a file (`path_to_backup`).
    Fs,
    /// The stdout of `command`.
    Command,
    /// The front-end's standard input.
    Stdin,
    /// A MariaDB or MySQL server ([`crate::db::mysql`]).
    Mysql,
    /// A PostgreSQL server ([`crate::db::postgres`]).
    Postgres,
    /// A MongoDB server ([`crate::db::mongo`]).
    Mongo,
    /// A disk image (raw, or any format `qemu-img` reads) or a block device
    /// ([`crate::source::image`]).
    Image,
}

impl SourceMode {
    /// Whether the mode backs up a database server, whose restore goes back into a server
    /// (or a data folder) through [`crate::db`].
    pub fn is_database(self) -> bool {
        matches!(
            self,
            SourceMode::Mysql | SourceMode::Postgres | SourceMode::Mongo
        )
    }
}

/// Upstream's `freezer_action` options, those this release uses typed, the rest kept as-is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FreezerAction {
    /// `backup`, `restore`, `info`, `admin`, `exec`; default `backup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// What is backed up: `fs` (default), `command` (the stdout of `command`) or `stdin`; see
    /// [`FreezerAction::source_mode`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The folder or file to back up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_to_backup: Option<String>,
    /// The series' name within the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_name: Option<String>,
    /// The host the series belongs to; default this host's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Where the repository is in the storage (a folder for `local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The storage kind: `local`, `s3`, `swift`, `ssh`, `ftp` or `ftps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// S3: the access key (falls back to `ACCESS_KEY` or `AWS_ACCESS_KEY_ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<Secret>,
    /// S3: the secret key (falls back to `SECRET_KEY` or `AWS_SECRET_ACCESS_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<Secret>,
    /// S3: the endpoint URL (falls back to `ENDPOINT`, then AWS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Upload bandwidth limit in bytes per second (`512`, `10K`, `1M`; `-1`: none).
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub upload_limit: Option<String>,
    /// Download bandwidth limit, like `upload_limit`.
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub download_limit: Option<String>,
    /// More storages written in the same run (upstream's `[storage:NAME]` sections).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storages: Vec<StorageSpec>,
    /// The folder to restore into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_abs_path: Option<String>,
    /// Restore the newest backup at or before this date (`YYYY-MM-DDThh:mm:ss`, local time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from_date: Option<String>,
    /// Restore this snapshot (id or unique prefix) instead of the newest (an extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// Restore the newest snapshot that reads, passing over (and naming) unreadable ones; by
    /// default an unreadable snapshot, which may be the newest, fails the restore (an
    /// extension).
    #[serde(
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "is_false"
    )]
    pub newest_readable: bool,
    /// Restore only this path inside the backup (an extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    /// Restore into a folder that is not empty.
    #[serde(
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "is_false"
    )]
    pub overwrite: bool,
    /// Patterns to leave out.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub exclude: Vec<String>,
    /// A file whose first line is the passphrase; without it, no encryption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypt_pass_file: Option<String>,
    /// Compression: `zstd`, `zstd:N`, `none`; upstream's `gzip`, `bzip2`, `xz` select zstd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// `soft`, `hard` or `all`.
    #[serde(
        default,
        deserialize_with = "lenient_dereference",
        skip_serializing_if = "Option::is_none"
    )]
    pub dereference_symlink: Option<Dereference>,
    /// Do everything but write.
    #[serde(
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "is_false"
    )]
    pub dry_run: bool,
    /// Stay on the file system of `path_to_backup` (an extension; upstream's tar always does).
    #[serde(
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "is_false"
    )]
    pub one_file_system: bool,
    /// Trust earlier snapshots' metadata (upstream's `incremental`; on unless turned off here
    /// or by `no_incremental`).
    #[serde(
        default,
        deserialize_with = "lenient_opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub incremental: Option<bool>,
    /// Upstream's older spelling of `incremental: false`.
    #[serde(
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "is_false"
    )]
    pub no_incremental: bool,
    /// Start a new level 0 once this level is reached (0 or false: off).
    #[serde(
        default,
        deserialize_with = "lenient_level",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_level: Option<u32>,
    /// Climb to this level, then keep making it from the level below (0 or false: off).
    #[serde(
        default,
        deserialize_with = "lenient_level",
        skip_serializing_if = "Option::is_none"
    )]
    pub always_level: Option<u32>,
    /// Start a new level 0 after this many days (fractional; 0 or false: off).
    #[serde(
        default,
        deserialize_with = "lenient_days",
        skip_serializing_if = "Option::is_none"
    )]
    pub restart_always_level: Option<f64>,
    /// Retention: forget snapshots older than this many days (fractional).
    #[serde(
        default,
        deserialize_with = "lenient_days",
        skip_serializing_if = "Option::is_none"
    )]
    pub remove_older_than: Option<f64>,
    /// Retention: forget snapshots older than this date (`YYYY-MM-DDThh:mm:ss`, local time).
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub remove_from_date: Option<String>,
    /// Retention: forget snapshots older than this date or epoch number.
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub remove_before_date: Option<String>,
    /// Retention (an extension): keep the newest N of each series.
    #[serde(
        default,
        deserialize_with = "lenient_level",
        skip_serializing_if = "Option::is_none"
    )]
    pub keep_last: Option<u32>,
    /// Retention (an extension): keep the newest of each of the last N hours.
    #[serde(
        default,
        deserialize_with = "lenient_level",
        skip_serializing_if = "Option::is_none"
    )]
    pub keep_hourly: Option<u32>,
    /// ... days.
    #[serde(
        default,
        deserialize_with = "lenient_level",
        skip_serializing_if = "Option::is_none"
    )]
    pub keep_daily: Option<u32>,
    /// ... ISO weeks.
    #[serde(
        default,
        deserialize_with = "lenient_level",
        skip_serializing_if = "Option::is_none"
    )]
    pub keep_weekly: Option<u32>,
    /// ... months.
    #[serde(
        default,
        deserialize_with = "lenient_level",
        skip_serializing_if = "Option::is_none"
    )]
    pub keep_monthly: Option<u32>,
    /// ... years.
    #[serde(
        default,
        deserialize_with = "lenient_level",
        skip_serializing_if = "Option::is_none"
    )]
    pub keep_yearly: Option<u32>,
    /// Retention (an extension): keep every snapshot within this span of the newest (`10d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<String>,
    /// Store a checksum of the backed-up file set in the snapshot.
    #[serde(
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "is_false"
    )]
    pub consistency_check: bool,
    /// Restore: the file-set checksum the restored files must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency_checksum: Option<String>,
    /// `check`: which packs to read whole (`all`, `n/m`, `x%`, or `true`); none by default.
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub read_data: Option<String>,
    /// `prune`: repack a pack when more than this share of it is unused (`5%` or `0.05`).
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_unused: Option<String>,
    /// `exec`, and a backup in mode `command`: the command to run, split with POSIX
    /// shell-word rules and run without a shell (unless `shell`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// `restore`: write the restored stream into this command's stdin (split as `command`);
    /// the restore fails when the command does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_command: Option<String>,
    /// Run `command` (mode `command`) and `restore_command` through `/bin/sh -c` (an
    /// extension: pipelines, redirections, variables).
    #[serde(
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "is_false"
    )]
    pub shell: bool,
    /// `backup`: a file the backup metadata document is written to after the backup
    /// (upstream's `--metadata-out`; `-`, stdout, is written by the front-end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_out: Option<String>,
    /// `backup`, `restore`: the workers of every pool (an extension; none or 0: one per
    /// core). See [`crate::memory::Resources`].
    #[serde(
        default,
        deserialize_with = "lenient_level",
        skip_serializing_if = "Option::is_none"
    )]
    pub threads: Option<u32>,
    /// `backup`, `restore`: the memory budget of the buffers in flight, as `256M` or bytes (an
    /// extension; default [`crate::memory::DEFAULT_MAX_MEMORY`]).
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_memory: Option<String>,
    /// Accept option names this release does not know, with a warning each, instead of
    /// refusing the action (an extension, for documents written for a newer release).
    #[serde(
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "is_false"
    )]
    pub allow_unknown_options: bool,
    /// An LVM snapshot of the file system (upstream's `snapshot`, `lvm_auto_snap`, `lvm_*`).
    #[serde(flatten)]
    pub snapshot: crate::source::lvm::SnapshotOptions,
    /// The database modes' options (`mysql_conf`, ...).
    #[serde(flatten)]
    pub db: crate::db::DbOptions,
    /// Every other option, by upstream name, as given (the storage options among them are
    /// read by [`FreezerAction::all_storages`]).
    #[serde(flatten)]
    pub other: OtherOptions,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn lenient_opt_bool<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<bool>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    lenient_bool(v).map(Some).map_err(serde::de::Error::custom)
}

/// A level or count: a number or numeric string; 0, `false`, `""` and null mean off.
fn lenient_level<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u32>, D::Error> {
    use serde::de::Error as _;
    let v = serde_json::Value::deserialize(d)?;
    let n = match &v {
        serde_json::Value::Null | serde_json::Value::Bool(false) => return Ok(None),
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) if s.trim().is_empty() => return Ok(None),
        serde_json::Value::String(s) if s.trim().eq_ignore_ascii_case("false") => return Ok(None),
        serde_json::Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match n.map(u32::try_from) {
        Some(Ok(0)) => Ok(None),
        Some(Ok(n)) => Ok(Some(n)),
        _ => Err(D::Error::custom(format!("{v} is not a count (0 or more)"))),
    }
}

/// Days, fractional: a number or numeric string; 0, `false`, `""` and null mean off.
fn lenient_days<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<f64>, D::Error> {
    use serde::de::Error as _;
    let v = serde_json::Value::deserialize(d)?;
    let n = match &v {
        serde_json::Value::Null | serde_json::Value::Bool(false) => return Ok(None),
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) if s.trim().is_empty() => return Ok(None),
        serde_json::Value::String(s) if s.trim().eq_ignore_ascii_case("false") => return Ok(None),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match n {
        Some(0.0) => Ok(None),
        Some(d) if d.is_finite() && d > 0.0 => Ok(Some(d)),
        _ => Err(D::Error::custom(format!(
            "{v} is not a number of days (more than 0)"
        ))),
    }
}

pub(crate) fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    use serde::de::Error as _;
    let v = serde_json::Value::deserialize(d)?;
    match &v {
        serde_json::Value::Bool(b) => Ok(*b),
        serde_json::Value::Null => Ok(false),
        serde_json::Value::Number(n) => Ok(n.as_f64() != Some(0.0)),
        serde_json::Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => Ok(true),
            "false" | "no" | "0" | "off" | "none" | "" => Ok(false),
            _ => Err(D::Error::custom(format!(
                "{s:?} is not a boolean (true or false)"
            ))),
        },
        other => Err(D::Error::custom(format!("{other} is not a boolean"))),
    }
}

fn lenient_string<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s)),
        serde_json::Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(serde::de::Error::custom(format!(
            "{other} is not a number or a string"
        ))),
    }
}

pub(crate) fn lenient_port<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<u16>, D::Error> {
    match lenient_string(d)? {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => s.trim().parse::<u16>().map(Some).map_err(|_| {
            serde::de::Error::custom(format!("{s:?} is not a port number (1 to 65535)"))
        }),
    }
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
        Null,
    }
    Ok(
        match OneOrMany::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected a pattern or a list of patterns"))?
        {
            OneOrMany::One(s) if s.is_empty() => vec![],
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
            OneOrMany::Null => vec![],
        },
    )
}

fn lenient_dereference<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Dereference>, D::Error> {
    let v: Option<String> = Option::deserialize(d)?;
    match v.as_deref().map(str::trim) {
        None | Some("") | Some("none") => Ok(None),
        Some("soft") => Ok(Some(Dereference::Soft)),
        Some("hard") => Ok(Some(Dereference::Hard)),
        Some("all") => Ok(Some(Dereference::All)),
        Some(other) => Err(serde::de::Error::custom(format!(
            "{other:?} is not one of soft, hard, all"
        ))),
    }
}

impl FreezerAction {
    /// Parses a `freezer_action` JSON object; errors name the offending field.
    pub fn from_json(text: &str) -> Result<Self> {
        parse_json(text, "freezer_action")
    }

    /// Parses from a JSON value; `at` prefixes field names in errors.
    pub fn from_value(v: serde_json::Value, at: &str) -> Result<Self> {
        serde_path_to_error::deserialize(v).map_err(|e| field_error(at, e))
    }

    /// The action, `backup` by default.
    pub fn action(&self) -> Action {
        self.action.unwrap_or_default()
    }

    /// The mode, `fs` by default.
    pub fn mode(&self) -> &str {
        self.mode.as_deref().unwrap_or("fs")
    }

    /// The mode, parsed; a mode this release does not back up is refused, naming it.
    pub fn source_mode(&self) -> Result<SourceMode> {
        match self.mode().trim() {
            "fs" => Ok(SourceMode::Fs),
            "command" => Ok(SourceMode::Command),
            "stdin" => Ok(SourceMode::Stdin),
            "mysql" => Ok(SourceMode::Mysql),
            "postgres" => Ok(SourceMode::Postgres),
            "mongo" => Ok(SourceMode::Mongo),
            "image" => Ok(SourceMode::Image),
            m => Err(Error::unsupported(format!(
                "mode {m:?} (this release backs up modes fs, command, stdin, image, mysql, postgres and mongo)"
            ))),
        }
    }

    /// The command of mode `command`, with `shell` and the environment `env` it gets.
    pub fn stream_command(
        &self,
        env: std::collections::BTreeMap<String, String>,
    ) -> crate::source::stream::StreamCommand {
        crate::source::stream::StreamCommand {
            line: self.command.clone().unwrap_or_default(),
            shell: self.shell,
            env,
            argv: None,
        }
    }

    /// The command of a restore into a command (`restore_command`), if any.
    pub fn restore_stream_command(
        &self,
        env: std::collections::BTreeMap<String, String>,
    ) -> Option<crate::source::stream::StreamCommand> {
        self.restore_command
            .as_ref()
            .map(|line| crate::source::stream::StreamCommand {
                line: line.clone(),
                shell: self.shell,
                env,
                argv: None,
            })
    }

    /// Whether a restore writes one stream (to stdout, `restore_abs_path` `-`, or into
    /// `restore_command`) instead of a folder.
    pub fn restores_a_stream(&self) -> bool {
        self.restore_command.is_some() || self.restore_abs_path.as_deref() == Some("-")
    }

    fn validate_backup_source(&self, mode: SourceMode) -> Result<()> {
        let path = self.path_to_backup.as_deref().filter(|p| !p.is_empty());
        match mode {
            SourceMode::Mysql | SourceMode::Postgres | SourceMode::Mongo => {
                if self.command.is_some() {
                    return Err(Error::bad_input(
                        "command",
                        format!(
                            "mode {} runs its own dump tool; leave out command",
                            self.mode()
                        ),
                    ));
                }
                if self.consistency_check {
                    return Err(Error::bad_input(
                        "consistency_check",
                        "it reads a file set twice; a database dump is read once",
                    ));
                }
                crate::db::validate_backup(mode, self)?;
            }
            SourceMode::Image => {
                if path.is_none() {
                    return Err(Error::bad_input(
                        "path_to_backup",
                        "mode image needs path_to_backup: an image file or a block device",
                    ));
                }
                if self.command.is_some() || self.consistency_check || !self.exclude.is_empty() {
                    return Err(Error::bad_input(
                        "mode",
                        "mode image backs up one image: leave out command, consistency_check and exclude",
                    ));
                }
            }
            SourceMode::Fs => {
                if path.is_none() && !self.snapshot.requested() {
                    return Err(Error::bad_input(
                        "path_to_backup",
                        "a backup needs path_to_backup",
                    ));
                }
                if self.command.is_some() {
                    return Err(Error::bad_input(
                        "command",
                        "a backup runs a command in mode command only (set mode to command)",
                    ));
                }
            }
            SourceMode::Command | SourceMode::Stdin => {
                if mode == SourceMode::Command {
                    if self.command.as_deref().is_none_or(|c| c.trim().is_empty()) {
                        return Err(Error::bad_input(
                            "command",
                            "mode command needs a command: the program whose stdout is backed up",
                        ));
                    }
                    self.stream_command(Default::default()).words()?;
                } else if self.command.is_some() {
                    return Err(Error::bad_input(
                        "command",
                        "mode stdin reads stdin: leave out command, or use mode command",
                    ));
                }
                if path.is_some_and(|p| p != "-") {
                    return Err(Error::bad_input(
                        "path_to_backup",
                        format!(
                            "mode {} backs up a stream: leave out path_to_backup, or give -",
                            self.mode()
                        ),
                    ));
                }
                if self.consistency_check {
                    return Err(Error::bad_input(
                        "consistency_check",
                        "it reads a file set twice; a stream is read once (mode command or stdin)",
                    ));
                }
                if !self.exclude.is_empty() {
                    return Err(Error::bad_input(
                        "exclude",
                        "there is nothing to exclude from a stream (mode command or stdin)",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every storage of the action: `storage` + `container` with the options of its kind
    /// (`endpoint`, `access_key`, `secret_key`, `ssh_*`, ...) first, then `storages`.
    /// Storage options other than the typed fields are read from [`FreezerAction::other`];
    /// an option of the wrong type is named.
    /// A `container` that is a storage URL selects that storage ([`StorageSpec::resolved`]).
    pub fn all_storages(&self) -> Result<Vec<StorageSpec>> {
        let mut out = Vec::new();
        if self.container.is_some() || self.storage.is_some() {
            let map: serde_json::Map<String, serde_json::Value> = self
                .other
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let text = serde_json::Value::Object(map).to_string();
            let rest: StorageSpec = parse_json(&text, "")?;
            let spec = StorageSpec {
                storage: self.storage.clone(),
                container: self.container.clone(),
                endpoint: self.endpoint.clone(),
                access_key: self.access_key.clone(),
                secret_key: self.secret_key.clone(),
                ..rest
            };
            out.push(spec.resolved("container")?);
        }
        for (i, s) in self.storages.iter().enumerate() {
            out.push(s.resolved(&format!("storages[{i}]"))?);
        }
        Ok(out)
    }

    /// The level options (`incremental`, `no_incremental`, `max_level`, `always_level`,
    /// `restart_always_level`), checked.
    pub fn level_policy(&self) -> Result<crate::policy::LevelPolicy> {
        if self.no_incremental && self.incremental == Some(true) {
            return Err(Error::bad_input(
                "no_incremental",
                "incremental and no_incremental are both set; keep one",
            ));
        }
        let p = crate::policy::LevelPolicy {
            incremental: self.incremental.unwrap_or(!self.no_incremental),
            max_level: self.max_level,
            always_level: self.always_level,
            restart_after_days: self.restart_always_level,
        };
        p.validate()?;
        Ok(p)
    }

    /// The retention rules (`remove_older_than`, `remove_from_date`, `remove_before_date`,
    /// `keep_*`), with dates read in `tz`; `None` when no rule is set.
    pub fn retention(&self, tz: &jiff::tz::TimeZone) -> Result<Option<crate::policy::Retention>> {
        let date = |v: &Option<String>, field: &str| -> Result<Option<jiff::Timestamp>> {
            v.as_deref()
                .filter(|d| !d.trim().is_empty())
                .map(|d| {
                    // Upstream's remove_before_date also takes an epoch number.
                    match d.trim().parse::<i64>() {
                        Ok(n) if field == "remove_before_date" => {
                            jiff::Timestamp::from_second(n).map_err(|e| Error::bad_input(field, e))
                        }
                        _ => crate::time::parse_date(d, field, tz),
                    }
                })
                .transpose()
        };
        let r = crate::policy::Retention {
            remove_older_than_days: self.remove_older_than,
            remove_from_date: date(&self.remove_from_date, "remove_from_date")?,
            remove_before_date: date(&self.remove_before_date, "remove_before_date")?,
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: self
                .keep_within
                .as_deref()
                .map(|s| crate::policy::parse_span(s, "keep_within"))
                .transpose()?,
        };
        if r.is_empty() {
            return Ok(None);
        }
        r.validate()?;
        Ok(Some(r))
    }

    /// `read_data` for a `check` action.
    pub fn read_data(&self) -> Result<crate::engine::ReadData> {
        match self.read_data.as_deref().map(str::trim) {
            None | Some("") | Some("false") | Some("False") => Ok(crate::engine::ReadData::None),
            Some("true") | Some("True") => Ok(crate::engine::ReadData::All),
            Some(s) => s.parse(),
        }
    }

    /// `max_unused` and `dry_run` for a `prune` action.
    pub fn prune_options(&self) -> Result<crate::engine::PruneOptions> {
        let mut o = crate::engine::PruneOptions {
            dry_run: self.dry_run,
            ..crate::engine::PruneOptions::default()
        };
        if let Some(s) = &self.max_unused {
            o.max_unused = crate::engine::PruneOptions::parse_share(s)?;
        }
        Ok(o)
    }

    /// `upload_limit` and `download_limit` in bytes per second.
    pub fn limits(&self) -> Result<(Option<u64>, Option<u64>)> {
        super::storage::limits(self.upload_limit.as_deref(), self.download_limit.as_deref())
    }

    /// Option names given that this release neither uses nor knowingly ignores.
    pub fn unknown_options(&self) -> Vec<String> {
        super::names::unknown_action_options(self)
    }

    /// The on-storage format the action reads or writes, from upstream's `engine_name` (or
    /// `engine`, its other spelling): `tar` is upstream's own format (docs/UPSTREAM-TAR.md),
    /// `native` (or `freezer-rs`, or none given) this release's repository. Upstream's rsync
    /// engines are refused; its nova, glance and osbrick engines are refused with the modes
    /// they back up.
    pub fn engine(&self) -> Result<Engine> {
        let mut found: Option<(&str, Engine)> = None;
        for name in ["engine_name", "engine"] {
            let value = match self.other.get(name) {
                None | Some(serde_json::Value::Null) => continue,
                Some(serde_json::Value::String(s)) if s.trim().is_empty() => continue,
                Some(serde_json::Value::String(s)) => s.trim(),
                Some(other) => {
                    return Err(Error::bad_input(
                        name,
                        format!("{other} is not an engine name (tar or native)"),
                    ));
                }
            };
            let engine = match value {
                "tar" => Engine::Tar,
                "native" | "freezer-rs" => Engine::Native,
                "rsync" | "rsyncv2" => {
                    return Err(Error::unsupported(format!(
                        "{name} {value}: upstream's rsync engines (their restore does not work in upstream 19.0.0 on Python 3); use tar (upstream's format) or native"
                    )));
                }
                other => {
                    return Err(Error::bad_input(
                        name,
                        format!(
                            "{other:?} is not an engine this release has: tar (upstream's format) or native"
                        ),
                    ));
                }
            };
            if let Some((first, e)) = found
                && e != engine
            {
                return Err(Error::bad_input(
                    name,
                    format!("{first} and {name} name different engines; keep one"),
                ));
            }
            found = Some((name, engine));
        }
        Ok(found.map_or(Engine::Native, |(_, e)| e))
    }

    /// The host named by `hostname`, or by upstream's older name for it, `restore_from_host`;
    /// `None`: this host.
    pub fn hostname_given(&self) -> Option<String> {
        self.hostname
            .clone()
            .filter(|h| !h.is_empty())
            .or_else(|| self.restore_from_host().map(str::to_string))
    }

    /// Upstream's `restore_from_host`, when given and not empty.
    pub(crate) fn restore_from_host(&self) -> Option<&str> {
        match self.other.get("restore_from_host") {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Some(s.trim()),
            _ => None,
        }
    }

    /// Checks the options make a runnable action, refusing unknown option names; errors name
    /// the field. See [`FreezerAction::validate_with`].
    pub fn validate(&self) -> Result<()> {
        self.validate_with(false).map(drop)
    }

    /// Checks the options make a runnable action; errors name the field. An option name this
    /// release does not know is refused, naming the closest known name, unless
    /// `allow_unknown` (or the action's own `allow_unknown_options`) says to accept it: the
    /// warnings returned then say which names were ignored. Values are never quoted.
    pub fn validate_with(&self, allow_unknown: bool) -> Result<Vec<String>> {
        let warnings = self.check_option_names(allow_unknown)?;
        self.validate_values()?;
        Ok(warnings)
    }

    /// Checks the option names only (for options that name a repository without being a
    /// whole action): as [`FreezerAction::validate_with`], without asking for the options an
    /// action needs. Returns a warning per unknown name accepted.
    pub fn check_option_names(&self, allow_unknown: bool) -> Result<Vec<String>> {
        let mut names = super::names::NameCheck::new(allow_unknown);
        names.action(self, "")?;
        super::names::check_upstream_values(self)?;
        Ok(names.warnings)
    }

    /// The workers and the memory budget `threads` and `max_memory` ask for.
    pub fn resources(&self) -> Result<crate::memory::Resources> {
        let threads = self.threads.unwrap_or(0) as usize;
        if threads > 1024 {
            return Err(Error::bad_input(
                "threads",
                format!("{threads} is more than 1024 workers"),
            ));
        }
        let memory = match self.max_memory.as_deref() {
            Some(m) => crate::memory::parse_max_memory("max_memory", m)?,
            None => 0,
        };
        Ok(crate::memory::Resources::new(threads, memory))
    }

    fn validate_values(&self) -> Result<()> {
        self.engine()?;
        self.resources()?;
        if self.action() == Action::Exec {
            // A command needs no storage and backs up nothing.
            crate::process::command_words(self.command.as_deref())?;
            return Ok(());
        }
        let mode = self.source_mode()?;
        match self.action() {
            Action::Backup => {
                self.snapshot.validate(self)?;
                self.validate_backup_source(mode)?
            }
            Action::Restore => {
                if mode.is_database() {
                    crate::db::validate_restore(mode, self)?;
                }
                match (&self.restore_abs_path, &self.restore_command) {
                    (Some(_), Some(_)) => {
                        return Err(Error::bad_input(
                            "restore_command",
                            "give restore_abs_path or restore_command, not both",
                        ));
                    }
                    (None, Some(_)) => {
                        self.restore_stream_command(Default::default())
                            .expect("given")
                            .words()
                            .map_err(|e| e.context("restore_command"))?;
                    }
                    (p, None) if mode.is_database() && p.as_deref().is_none_or(str::is_empty) => {
                        // Into the server the job names.
                    }
                    (p, None) if p.as_deref().is_none_or(str::is_empty) => {
                        return Err(Error::bad_input(
                            "restore_abs_path",
                            "a restore needs restore_abs_path (a folder, or - for stdout) or restore_command",
                        ));
                    }
                    _ => {}
                }
                if self.restores_a_stream() && self.sub_path.is_some() {
                    return Err(Error::bad_input(
                        "sub_path",
                        "a restore to stdout or into a command writes the whole stream; leave out sub_path",
                    ));
                }
                if self.restores_a_stream() && self.consistency_checksum.is_some() {
                    return Err(Error::bad_input(
                        "consistency_checksum",
                        "it covers a restored folder, not a stream",
                    ));
                }
                if self.consistency_checksum.is_some() && self.sub_path.is_some() {
                    return Err(Error::bad_input(
                        "consistency_checksum",
                        "it covers a whole backup; leave out sub_path",
                    ));
                }
            }
            Action::Admin => {
                if self.retention(&jiff::tz::TimeZone::UTC)?.is_none() {
                    return Err(Error::bad_input(
                        "remove_older_than",
                        "an admin action needs a retention rule: remove_older_than, remove_from_date, remove_before_date or keep_*",
                    ));
                }
            }
            Action::Info => {}
            Action::Check => {
                self.read_data()?;
            }
            Action::Prune => {
                self.prune_options()?;
            }
            Action::Exec => {}
        }
        self.level_policy()?;
        self.retention(&jiff::tz::TimeZone::UTC)?;
        let storages = self.all_storages()?;
        if storages.is_empty() {
            return Err(Error::bad_input(
                "container",
                "no storage given: set container (a folder for storage local, bucket[/prefix] for s3)",
            ));
        }
        let offset = usize::from(self.container.is_some() || self.storage.is_some());
        for (i, s) in storages.iter().enumerate() {
            let field = if i < offset {
                "container".to_string()
            } else {
                format!("storages[{}]", i - offset)
            };
            s.validate(&field)?;
        }
        self.limits()?;
        if let Some(c) = &self.compression {
            c.parse::<crate::engine::Compression>()?;
        }
        if let Some(d) = &self.restore_from_date {
            crate::time::parse_date(d, "restore_from_date", &jiff::tz::TimeZone::UTC)?;
        }
        Ok(())
    }
}

pub(crate) fn field_error(at: &str, e: serde_path_to_error::Error<serde_json::Error>) -> Error {
    let path = e.path().to_string();
    let field = match (at.is_empty(), path.as_str()) {
        (true, ".") => "document".to_string(),
        (true, p) => p.to_string(),
        (false, ".") => at.to_string(),
        (false, p) => format!("{at}.{p}"),
    };
    Error::bad_input(field, e.into_inner())
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(text: &str, at: &str) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            Error::bad_input(at, format!("malformed JSON: {inner}"))
        } else {
            field_error(at, e)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_spellings_are_accepted() {
        let a = FreezerAction::from_json(
            r#"{"action":"backup","mode":"fs","path_to_backup":"/data","backup_name":"web",
                "container":"/bk","storage":"local","overwrite":"True","dry_run":"false",
                "exclude":"*.log","dereference_symlink":"soft","engine_name":"tar","max_level":"3",
                "always_level":0,"restart_always_level":"0.5","incremental":"True",
                "lvm_srcvol":"/dev/vg/lv","exlcude":"*.tmp"}"#,
        )
        .unwrap();
        assert!(a.overwrite && !a.dry_run);
        assert_eq!(a.exclude, ["*.log"]);
        assert_eq!(a.dereference_symlink, Some(Dereference::Soft));
        // lvm_srcvol is upstream's and does not apply: known; the misspelt exclude is not.
        assert_eq!(a.unknown_options(), ["exlcude"]);
        let e = a.validate().unwrap_err();
        assert!(e.to_string().contains("did you mean exclude?"), "{e}");
        assert_eq!(a.validate_with(true).unwrap().len(), 1);
        let mut a = a;
        a.other.remove("exlcude");
        let levels = a.level_policy().unwrap();
        assert_eq!(levels.max_level, Some(3));
        assert_eq!(
            levels.always_level, None,
            "0 is off, as the dashboard sends it"
        );
        assert_eq!(levels.restart_after_days, Some(0.5));
        assert!(levels.incremental);
        a.validate().unwrap();
    }

    #[test]
    fn level_and_retention_options_are_read_leniently_and_checked() {
        let a = FreezerAction::from_json(
            r#"{"action":"admin","container":"/bk","remove_older_than":"30","keep_daily":"7",
                "remove_before_date":"1795000000","remove_from_date":"2026-11-01T00:00:00"}"#,
        )
        .unwrap();
        a.validate().unwrap();
        let r = a.retention(&jiff::tz::TimeZone::UTC).unwrap().unwrap();
        assert_eq!(r.remove_older_than_days, Some(30.0));
        assert_eq!(r.keep_daily, Some(7));
        assert_eq!(r.remove_before_date.unwrap().as_second(), 1_795_000_000);
        assert_eq!(
            r.remove_from_date.unwrap(),
            "2026-11-01T00:00:00Z".parse::<jiff::Timestamp>().unwrap()
        );
        for (bad, field) in [
            (r#"{"max_level":"three"}"#, "max_level"),
            (r#"{"restart_always_level":-2}"#, "restart_always_level"),
            (r#"{"remove_older_than":[]}"#, "remove_older_than"),
            (r#"{"incremental":"perhaps"}"#, "incremental"),
        ] {
            let e = FreezerAction::from_json(bad).unwrap_err();
            assert!(e.to_string().contains(field), "{bad}: {e}");
        }
        let off = FreezerAction::from_json(r#"{"no_incremental":true,"always_level":2}"#).unwrap();
        let e = off.level_policy().unwrap_err();
        assert!(e.to_string().contains("always_level"), "{e}");
        let e = FreezerAction::from_json(r#"{"remove_from_date":"yesterday"}"#)
            .unwrap()
            .retention(&jiff::tz::TimeZone::UTC)
            .unwrap_err();
        assert!(e.to_string().contains("remove_from_date"), "{e}");
        let e = FreezerAction::from_json(r#"{"keep_within":"soon"}"#)
            .unwrap()
            .retention(&jiff::tz::TimeZone::UTC)
            .unwrap_err();
        assert!(e.to_string().contains("keep_within"), "{e}");
    }

    #[test]
    fn upstream_ftp_options_make_a_storage() {
        let a = FreezerAction::from_json(
            r#"{"action":"backup","path_to_backup":"/data","container":"/srv/bk","storage":"ftps",
                "ftp_host":"ftp.example.org","ftp_port":"2121","ftp_username":"bk",
                "ftp_password":"pw-do-not-show","ftp_certfile":"/etc/c.pem","ftp_keyfile":"/etc/k.pem"}"#,
        )
        .unwrap();
        assert!(a.unknown_options().is_empty(), "{:?}", a.unknown_options());
        a.validate().unwrap();
        let s = &a.all_storages().unwrap()[0];
        assert_eq!(s.kind(), "ftps");
        assert_eq!(s.ftp_port, Some(2121));
        assert_eq!(s.ftp_host.as_deref(), Some("ftp.example.org"));
        assert_eq!(s.ftp_certfile.as_deref(), Some("/etc/c.pem"));
        assert!(!format!("{a:?} {s:?}").contains("pw-do-not-show"));
        let e = FreezerAction::from_json(
            r#"{"action":"backup","path_to_backup":"/d","container":"/bk","storage":"ftp","ftp_port":"twenty-one"}"#,
        )
        .unwrap()
        .validate()
        .unwrap_err();
        assert!(e.to_string().starts_with("ftp_port:"), "{e}");
        let e = FreezerAction::from_json(
            r#"{"action":"backup","path_to_backup":"/d","container":"/bk","storage":"ftp","ftp_username":"u"}"#,
        )
        .unwrap()
        .validate()
        .unwrap_err();
        assert!(e.to_string().starts_with("ftp_host:"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        let e = FreezerAction::from_json(r#"{"action":"backup","overwrite":"maybe"}"#).unwrap_err();
        assert!(
            e.to_string().starts_with("freezer_action.overwrite:"),
            "{e}"
        );
        let e = FreezerAction::from_json(r#"{"action":"fly"}"#).unwrap_err();
        assert!(e.to_string().starts_with("freezer_action.action:"), "{e}");
        let e = FreezerAction::from_json(r#"{"action": "backup""#).unwrap_err();
        assert!(e.to_string().contains("malformed JSON"), "{e}");
        let e = FreezerAction::from_json(r#"{"action":"backup","container":"/x"}"#)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().starts_with("path_to_backup:"), "{e}");
        let e = FreezerAction::from_json(r#"{"action":"restore","restore_abs_path":"/r","container":"/x","restore_from_date":"soon"}"#)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().starts_with("restore_from_date:"), "{e}");
    }
}
