//! `freezer-agent`: a drop-in for upstream OpenStack Freezer's agent command line.
//!
//! Upstream's options (parsed as argparse does, [`options`]), its `--config` job file and
//! oslo's `--config-file` ([`ini`]) become one option map under upstream's names, which
//! freezer-core reads into a [`FreezerAction`] and validates; the action runs through
//! [`job::run_action`], as every front-end's does. What the agent owns is upstream's surface:
//!
//! - exit status 0 on success, 1 on any failure with `Critical Error: <message>` on stderr
//!   (nothing with `--quiet`), 2 for argparse's usage errors, 1 with the help when called
//!   without arguments;
//! - after a backup, upstream's metadata document ([`job::backup_metadata`]): a "Property |
//!   Value" table on stdout, or JSON with `--metadata-out FILE` (mode 0600) or `-` (stdout);
//! - logging only into `--log-file` (or `--log-dir`), never on the terminal.
//!
//! Precedence, lowest first: upstream's defaults, `--config-file`/`--config-dir` (`[DEFAULT]`),
//! the `--config` job file, the command line. Upstream lets the job file override the command
//! line, contrary to its own help text; here the command line wins (docs/COMPAT.md).

pub mod ini;
pub mod options;
pub mod table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use freezer_core::job::{self, ActionOutcome, FreezerAction, RunContext};
use serde_json::{Map, Value};

use crate::term::{write_stderr, write_stdout};
use options::{Kind, Opt, ParseError, Parsed, Use};

/// Upstream's default backup name, kept literally: upstream's storage paths hold it unformatted.
pub const DEFAULT_BACKUP_NAME: &str = "freezer_{mode}_{resource_id}";

/// Engines: upstream's format and this project's repository.
pub const ENGINES: &[&str] = &["tar", "native"];
/// Upstream's engines this agent refuses.
const REFUSED_ENGINES: &[&str] = &["rsync", "rsyncv2", "nova", "osbrick", "glance"];
/// Upstream's modes this agent refuses, and why.
const REFUSED_MODES: &[(&str, &str)] = &[
    ("sqlserver", "SQL Server backups need Windows (VSS)"),
    ("cinder", "Cinder volumes are cloud resources"),
    ("cindernative", "Cinder native backups are cloud resources"),
    ("glance", "Glance images are cloud resources"),
    ("nova", "Nova instances are cloud resources"),
];
/// Upstream's actions.
const ACTIONS: &[&str] = &["backup", "restore", "info", "admin", "exec"];

/// What the agent will do: the action's option map and the agent's own settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The `freezer_action` option map, upstream's names.
    pub action: Map<String, Value>,
    /// `--quiet`: no error message on stderr.
    pub quiet: bool,
    /// `--debug`: log at level debug.
    pub debug: bool,
    /// `--metadata-out`.
    pub metadata_out: Option<String>,
    /// `--log-file` (within `--log-dir` when relative).
    pub log_file: Option<PathBuf>,
}

/// Where a value came from: a file's or the command line's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum From {
    File,
    Cli,
}

fn set(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.trim().is_empty(),
        _ => true,
    }
}

/// A value read from a file, typed as its option's (the command line's are typed by the
/// parser). `None`: unset (upstream's `False`/`None` for a non-boolean option).
fn typed_from_file(o: &Opt, v: Value, file: &str) -> Result<Option<Value>, String> {
    let shown = |s: &str| {
        if options::is_secret(o.dest) {
            "<hidden>".to_string()
        } else {
            format!("{s:?}")
        }
    };
    match (o.kind, v) {
        (Kind::Bool, Value::Bool(b)) => Ok(Some(Value::Bool(b))),
        (Kind::Bool, Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "yes" | "on" => Ok(Some(Value::Bool(true))),
            "0" | "no" | "off" | "" => Ok(Some(Value::Bool(false))),
            _ => Err(format!(
                "{file}: option {}: {} is not a boolean (true or false)",
                o.dest,
                shown(&s)
            )),
        },
        (_, Value::Bool(false)) => Ok(None),
        (_, Value::Bool(true)) => typed_from_file(o, Value::String("True".into()), file),
        (Kind::Int | Kind::Float, Value::String(s)) if s.trim().is_empty() => Ok(None),
        (Kind::Int | Kind::Float, Value::String(s)) => {
            options::typed(o, &s).map(Some).map_err(|_| {
                format!(
                    "{file}: option {}: {} is not a {}",
                    o.dest,
                    shown(&s),
                    if o.kind == Kind::Int {
                        "whole number"
                    } else {
                        "number"
                    }
                )
            })
        }
        (_, v) => Ok(Some(v)),
    }
}

/// oslo.config's default places for `freezer<ext>` and `freezer-agent<ext>` (project
/// `freezer`, program `freezer-agent`): for each name, the first of `~/.freezer/`, `~/`,
/// `/etc/freezer/`, `/etc/` that holds it, the project's before the program's.
fn oslo_defaults(home: Option<&Path>, ext: &str, exists: fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(h) = home {
        dirs.push(h.join(".freezer"));
        dirs.push(h.to_path_buf());
    }
    dirs.push(PathBuf::from("/etc/freezer"));
    dirs.push(PathBuf::from("/etc"));
    ["freezer", "freezer-agent"]
        .iter()
        .filter_map(|name| {
            dirs.iter()
                .map(|d| d.join(format!("{name}{ext}")))
                .find(|p| exists(p))
        })
        .collect()
}

/// Builds the plan from the parsed command line, reading the files it names.
pub fn plan(parsed: &Parsed) -> Result<Plan, String> {
    let mut merged: BTreeMap<String, (Value, From)> = BTreeMap::new();
    // Layers, lowest first: oslo config files, the job file, the command line.
    // As oslo: without `--config-file`, the files found in its default places; without
    // `--config-dir`, the `.conf.d` folders found there. Found files are not the operator's
    // request for this run: their keys that are not the agent's (the scheduler's, say, in a
    // shared freezer.conf) are left alone, as oslo leaves them; the files named are strict.
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut oslo_files: Vec<(PathBuf, bool)> = if parsed.config_files.is_empty() {
        oslo_defaults(home.as_deref(), ".conf", Path::is_file)
            .into_iter()
            .map(|p| (p, false))
            .collect()
    } else {
        parsed
            .config_files
            .iter()
            .map(|p| (PathBuf::from(p), true))
            .collect()
    };
    let dirs: Vec<(PathBuf, bool)> = match parsed.values.get("config_dir") {
        Some(Value::String(dir)) => vec![(PathBuf::from(dir), true)],
        _ => oslo_defaults(home.as_deref(), ".conf.d", Path::is_dir)
            .into_iter()
            .map(|p| (p, false))
            .collect(),
    };
    for (dir, strict) in dirs {
        let mut confs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| {
                let label = if strict {
                    "--config-dir"
                } else {
                    "config folder"
                };
                format!("{label} {}: {e}", dir.display())
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        confs.sort();
        oslo_files.extend(confs.into_iter().map(|p| (p, strict)));
    }
    let mut layer = |entries: Vec<(String, Value)>, file: &str| -> Result<(), String> {
        for (k, v) in entries {
            match options::by_dest(&k) {
                Some(o) => match typed_from_file(o, v, file)? {
                    Some(v) => {
                        merged.insert(o.dest.to_string(), (v, From::File));
                    }
                    None => {
                        merged.remove(o.dest);
                    }
                },
                None => {
                    merged.insert(k, (v, From::File));
                }
            }
        }
        Ok(())
    };
    for (f, strict) in &oslo_files {
        let ini = ini::Ini::read(f)?;
        let entries = ini
            .defaults
            .iter()
            .map(|(k, v)| (k.replace('-', "_"), ini::upstream_value(v)))
            .filter(|(k, _)| *strict || options::by_dest(k).is_some())
            .collect();
        let label = if *strict {
            "--config-file"
        } else {
            "config file"
        };
        layer(entries, &format!("{label} {}", f.display()))?;
    }
    let job_file = match parsed.values.get("config") {
        Some(Value::String(path)) if !path.is_empty() => {
            let jf = ini::JobFile::read(Path::new(path))?;
            layer(jf.options.clone(), &format!("--config {path}"))?;
            Some((path.clone(), jf))
        }
        _ => None,
    };
    for (k, v) in &parsed.values {
        merged.insert(k.to_string(), (v.clone(), From::Cli));
    }

    let mut plan = Plan::default();
    let mut action = Map::new();
    for (k, (v, from)) in merged {
        let Some(o) = options::by_dest(&k) else {
            // Not an agent option (a job file's own key): freezer-core knows it, ignores it
            // knowingly, or refuses it naming the closest known name.
            action.insert(k, v);
            continue;
        };
        match o.usage {
            Use::Action => {
                action.insert(o.dest.to_string(), v);
            }
            Use::Ignored(_) => {}
            Use::Refused(why) if set(&v) => {
                let by = if from == From::Cli {
                    format!("--{}", o.name)
                } else {
                    format!("{} (in a configuration file)", o.dest)
                };
                return Err(format!("{by}: {why}"));
            }
            Use::Refused(_) => {}
            Use::Agent => match o.dest {
                "quiet" => plan.quiet = v == Value::Bool(true),
                "debug" => plan.debug = v == Value::Bool(true),
                "metadata_out" => {
                    plan.metadata_out = v.as_str().filter(|s| !s.is_empty()).map(String::from)
                }
                "log_file" => {
                    plan.log_file = v.as_str().filter(|s| !s.is_empty()).map(PathBuf::from)
                }
                "log_dir" => {
                    if let Some(d) = v.as_str().filter(|s| !s.is_empty()) {
                        let file = plan
                            .log_file
                            .take()
                            .unwrap_or_else(|| "freezer-agent.log".into());
                        plan.log_file = Some(Path::new(d).join(file));
                    }
                }
                _ => {}
            },
        }
    }
    // `--log-dir` may have come before `--log-file` in the map's order.
    if let (Some(Value::String(d)), Some(f)) = (
        parsed.values.get("log_dir"),
        parsed.values.get("log_file").and_then(Value::as_str),
    ) && Path::new(f).is_relative()
    {
        plan.log_file = Some(Path::new(d).join(f));
    }

    // The choices freezer-core does not know as upstream's agent does.
    if let Some(a) = action.get("action").and_then(Value::as_str)
        && !ACTIONS.contains(&a)
    {
        return Err(format!(
            "argument --action: Invalid String(choices={ACTIONS:?}) value: {a}"
        ));
    }
    let engine = match action.get("engine_name") {
        Some(Value::String(e)) if !e.trim().is_empty() => e.trim().to_string(),
        _ => "tar".to_string(),
    };
    if REFUSED_ENGINES.contains(&engine.as_str()) {
        return Err(format!(
            "--engine {engine} is not supported by this agent: the engines are tar (upstream's format, the default) and native (freezer-rs's repository: deduplicated, encrypted with a key file)"
        ));
    }
    if !ENGINES.contains(&engine.as_str()) {
        return Err(format!(
            "argument --engine: Invalid String(choices=['tar', 'rsync', 'rsyncv2', 'nova', 'osbrick', 'glance', 'native']) value: {engine}"
        ));
    }
    action.insert("engine_name".into(), Value::from(engine.clone()));
    if let Some(Value::String(m)) = action.get("mode")
        && let Some((_, why)) = REFUSED_MODES.iter().find(|(name, _)| name == m)
    {
        return Err(format!("--mode {m} is not supported by this agent: {why}"));
    }
    if engine == "tar" && !action.contains_key("compression") {
        action.insert("compression".into(), Value::from("gzip"));
    }
    // `info` lists every backup of the host (upstream's lists the storage's content); the
    // others act on one series, upstream's default name when none is given.
    if action.get("action").and_then(Value::as_str) != Some("info") {
        action
            .entry("backup_name")
            .or_insert_with(|| Value::from(DEFAULT_BACKUP_NAME));
    }
    action.entry("incremental").or_insert(Value::Bool(false));

    match &job_file {
        Some((path, jf)) if !jf.storages.is_empty() => {
            for key in ["storage", "container"] {
                if parsed.values.contains_key(key) {
                    return Err(format!(
                        "--{key} given with [storage:*] sections in --config {path}: the sections name the storages; leave out --{key}"
                    ));
                }
                // As upstream: with storage sections, the top-level storage is not used.
                action.remove(key);
            }
            let mut list = Vec::new();
            for (name, entries) in &jf.storages {
                let mut m = Map::new();
                for (k, v) in entries {
                    match v {
                        Value::Bool(false) => {}
                        Value::Bool(true) => {
                            m.insert(k.clone(), Value::from("True"));
                        }
                        v => {
                            m.insert(k.clone(), v.clone());
                        }
                    }
                }
                if !m.contains_key("container") {
                    return Err(format!("--config {path}: [{name}] has no container"));
                }
                list.push(Value::Object(m));
            }
            action.insert("storages".into(), Value::Array(list));
        }
        _ => {
            action
                .entry("storage")
                .or_insert_with(|| Value::from("swift"));
            action
                .entry("container")
                .or_insert_with(|| Value::from("freezer_backups"));
        }
    }
    plan.action = action;
    Ok(plan)
}

/// Why a run failed: printed as `Critical Error: <message>`.
struct Failure(String);

impl<E: std::fmt::Display> std::convert::From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

/// Writes the metadata document to `path`, readable by its owner only, whole or not at all.
fn write_private(path: &str, doc: &Value) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let p = Path::new(path);
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = p
        .file_name()
        .ok_or_else(|| std::io::Error::other("names a folder, not a file"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(serde_json::to_string(doc).unwrap_or_default().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, p)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Writes a backup's metadata document where `--metadata-out` says (`-`: stdout, as JSON), or
/// upstream's Property | Value table on stdout.
fn emit_metadata(plan: &Plan, doc: &serde_json::Value) -> Result<(), Failure> {
    match plan.metadata_out.as_deref() {
        Some("-") => write_stdout(format_args!("{doc}\n")),
        Some(path) => {
            write_private(path, doc).map_err(|e| Failure(format!("metadata_out {path}: {e}")))?
        }
        None => write_stdout(format_args!("{}\n", table::property_value(doc))),
    }
    Ok(())
}

/// Runs the action and prints its result as upstream's agent does.
async fn run(plan: &Plan, action: &FreezerAction) -> Result<(), Failure> {
    let mut ctx = RunContext::current();
    ctx.env = crate::term::environment();
    ctx.exec_env = job::exec_environment(std::env::vars());
    ctx.std_streams = job::StdStreams::new(Box::new(std::io::stdin()), Box::new(std::io::stdout()));
    crate::term::cancel_on_signal("freezer-agent", &ctx.cancel);
    tracing::info!(
        action = ?action.action(),
        mode = action.mode(),
        options = ?plan.action.keys().collect::<Vec<_>>(),
        "freezer-agent starts"
    );
    let outcome = job::run_action(action, &ctx).await?;
    match &outcome {
        ActionOutcome::Backup(b) => {
            emit_metadata(plan, &job::backup_metadata(action, b, &ctx))?;
            if !plan.quiet {
                for w in &b.warnings {
                    write_stderr(format_args!("warning: {w}\n"));
                }
            }
            let failed: Vec<String> = b
                .sinks
                .iter()
                .filter(|s| !s.holds_snapshot)
                .map(|s| match &s.error {
                    Some(e) => format!("{}: {e}", s.sink),
                    None => format!("{}: does not hold the backup", s.sink),
                })
                .collect();
            if !failed.is_empty() {
                return Err(Failure(format!(
                    "the backup is not on every storage: {}",
                    failed.join("; ")
                )));
            }
        }
        ActionOutcome::TarBackup(b) => {
            emit_metadata(
                plan,
                &freezer_core::upstream::run::backup_metadata(action, b, &ctx),
            )?;
            if !plan.quiet {
                for w in &b.warnings {
                    write_stderr(format_args!("warning: {w}\n"));
                }
            }
            let failed: Vec<String> = b
                .storages
                .iter()
                .filter(|s| !s.complete)
                .map(|s| format!("{}: {}", s.storage, s.error.as_deref().unwrap_or("failed")))
                .collect();
            if !failed.is_empty() {
                return Err(Failure(format!(
                    "the backup is not on every storage: {}",
                    failed.join("; ")
                )));
            }
        }
        ActionOutcome::TarRestore(r) if !plan.quiet => {
            for w in &r.warnings {
                write_stderr(format_args!("warning: {w}\n"));
            }
        }
        ActionOutcome::TarInfo { backups, .. } => {
            let rows: Vec<Vec<String>> = backups
                .iter()
                .map(|b| {
                    vec![
                        b.name.clone(),
                        b.level.to_string(),
                        b.time.clone(),
                        b.compression.clone(),
                        b.encrypted.to_string(),
                    ]
                })
                .collect();
            if !rows.is_empty() {
                write_stdout(format_args!(
                    "{}\n",
                    table::render(
                        &["Backup", "Level", "Time", "Compression", "Encrypted"],
                        &rows
                    )
                ));
            }
        }
        ActionOutcome::Restore(r) => {
            if !plan.quiet {
                for w in r.warnings.iter().chain(&r.passed_over) {
                    write_stderr(format_args!("warning: {w}\n"));
                }
            }
            if !r.is_complete() {
                let what: Vec<String> = r
                    .damaged
                    .iter()
                    .map(|d| format!("{}: {}", d.object, d.error))
                    .chain(r.skipped.iter().map(|s| format!("skipped {s}")))
                    .collect();
                return Err(Failure(format!(
                    "the restore is incomplete: {}",
                    what.join("; ")
                )));
            }
        }
        ActionOutcome::Info { snapshots } => {
            let tz = freezer_core::TimeZone::system();
            let rows: Vec<Vec<String>> = snapshots
                .iter()
                .map(|s| {
                    vec![
                        s.backup_name.clone(),
                        s.hostname.clone(),
                        s.level.to_string(),
                        freezer_core::local_display(s.time, &tz).to_string(),
                        s.files.to_string(),
                        s.size.to_string(),
                        s.id.to_string(),
                    ]
                })
                .collect();
            if !rows.is_empty() {
                write_stdout(format_args!(
                    "{}\n",
                    table::render(
                        &[
                            "Backup name",
                            "Hostname",
                            "Level",
                            "Time",
                            "Files",
                            "Size",
                            "Snapshot id"
                        ],
                        &rows
                    )
                ));
            }
        }
        other if !other.is_complete() => {
            return Err(Failure(format!(
                "the {} action did not complete: {}",
                serde_json::to_value(action.action())
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                serde_json::to_string(other).unwrap_or_default()
            )));
        }
        _ => {}
    }
    Ok(())
}

/// Sets up logging into the log file, if one is asked for.
fn logging(plan: &Plan) -> Result<(), String> {
    let Some(path) = &plan.log_file else {
        return Ok(());
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("--log-file {}: {e}", path.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("--log-file {}: {e}", path.display()))?;
    let level = if plan.debug { "debug" } else { "info" };
    tracing_subscriber::fmt()
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
            "freezer_core={level},freezer_cli={level},freezer_agent={level}"
        )))
        .init();
    Ok(())
}

fn critical(quiet: bool, msg: &str) -> ExitCode {
    tracing::error!("Critical Error: {msg}");
    if !quiet {
        write_stderr(format_args!("Critical Error: {msg}\n"));
    }
    ExitCode::from(1)
}

/// The whole agent: arguments in, exit status out.
pub fn main() -> ExitCode {
    crate::term::quiet_panics("freezer-agent");
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if args.is_empty() {
        write_stdout(format_args!("{}", options::help()));
        return ExitCode::from(1);
    }
    let parsed = match options::parse(&args) {
        Ok(p) => p,
        Err(ParseError::Usage(m)) => {
            write_stderr(format_args!(
                "{}freezer-agent: error: {m}\n",
                options::usage()
            ));
            return ExitCode::from(2);
        }
        Err(ParseError::Value(m)) => {
            write_stderr(format_args!("{m}\n"));
            return ExitCode::from(1);
        }
    };
    if parsed.help {
        write_stdout(format_args!("{}", options::help()));
        return ExitCode::SUCCESS;
    }
    if parsed.version {
        write_stdout(format_args!("{}\n", env!("CARGO_PKG_VERSION")));
        return ExitCode::SUCCESS;
    }
    let quiet = parsed.values.get("quiet") == Some(&Value::Bool(true));
    let plan = match plan(&parsed) {
        Ok(p) => p,
        Err(m) => return critical(quiet, &m),
    };
    if let Err(m) = logging(&plan) {
        return critical(plan.quiet, &m);
    }
    let action = match FreezerAction::from_value(Value::Object(plan.action.clone()), "") {
        Ok(a) => a,
        Err(e) => return critical(plan.quiet, &e.to_string()),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return critical(plan.quiet, &format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(run(&plan, &action)) {
        Ok(()) => {
            tracing::info!("freezer-agent succeeded");
            ExitCode::SUCCESS
        }
        Err(Failure(m)) => {
            let code = critical(plan.quiet, &m);
            // Cancelled by SIGTERM: die by it, as upstream's agent (its scheduler's "aborted").
            crate::term::die_by_sigterm_if_received();
            code
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(a: &[&str]) -> Result<Plan, String> {
        let args: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        plan(&options::parse(&args).unwrap())
    }

    #[test]
    fn upstream_defaults() {
        let p = plan_of(&["--path-to-backup", "/src"]).unwrap();
        assert_eq!(p.action["engine_name"], "tar");
        assert_eq!(p.action["compression"], "gzip");
        assert_eq!(p.action["storage"], "swift");
        assert_eq!(p.action["container"], "freezer_backups");
        assert_eq!(p.action["backup_name"], DEFAULT_BACKUP_NAME);
        assert_eq!(p.action["incremental"], false);
        // The native engine keeps its own compression default.
        let p = plan_of(&["-e", "native"]).unwrap();
        assert!(!p.action.contains_key("compression"));
        // The agent's own options stay out of the action; ignored ones are dropped.
        let p = plan_of(&["-q", "--metadata-out", "-", "--nosync", "-M", "5"]).unwrap();
        assert!(p.quiet);
        assert_eq!(p.metadata_out.as_deref(), Some("-"));
        for k in ["quiet", "metadata_out", "sync", "max_segment_size"] {
            assert!(!p.action.contains_key(k), "{k}");
        }
    }

    #[test]
    fn the_command_line_wins_over_the_job_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("job.ini");
        std::fs::write(
            &f,
            "[action]\nbackup_name = file\nmax_level = 3\nincremental = True\nquiet = false\ncompression = None\n",
        )
        .unwrap();
        let conf = dir.path().join("oslo.conf");
        std::fs::write(
            &conf,
            "[DEFAULT]\nhostname = from-oslo\nbackup_name = oslo\n",
        )
        .unwrap();
        let p = plan_of(&[
            "--config-file",
            conf.to_str().unwrap(),
            "--config",
            f.to_str().unwrap(),
            "-N",
            "cli",
        ])
        .unwrap();
        assert_eq!(p.action["backup_name"], "cli");
        assert_eq!(p.action["hostname"], "from-oslo");
        assert_eq!(p.action["max_level"], 3);
        assert_eq!(p.action["incremental"], true);
        // `None` unsets a string option: the default comes back.
        assert_eq!(p.action["compression"], "gzip");
    }

    #[test]
    fn refusals_name_the_option() {
        assert!(
            plan_of(&["--engine", "rsyncv2"])
                .unwrap_err()
                .contains("--engine rsyncv2 is not supported")
        );
        assert!(
            plan_of(&["-m", "cindernative"])
                .unwrap_err()
                .contains("--mode cindernative")
        );
        assert!(
            plan_of(&["--nova-inst-id", "x"])
                .unwrap_err()
                .starts_with("--nova-inst-id: ")
        );
        assert!(
            plan_of(&["--action", "check"])
                .unwrap_err()
                .contains("Invalid String(choices=")
        );
        // Set empty, a refused option is no request.
        assert!(plan_of(&["--cinder-vol-id", ""]).is_ok());
    }
}
