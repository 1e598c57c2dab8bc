//! LVM snapshots (upstream's `snapshot`, `lvm_*` options): a backup of a folder reads a
//! frozen view of its logical volume instead of the live files.
//!
//! [`with_snapshot`] creates the snapshot (`lvcreate --snapshot`), mounts it read-only (xfs with
//! `nouuid,norecovery`) on `lvm_dirmount`, runs the backup against the mounted view, and then
//! unmounts it, removes the mount folder it created and the logical volume (`lvremove -f`) on
//! every path: success, any error, a cancel (the backup stops, the release does not), and, as a
//! last resort, a panic or a dropped future ([`Drop`], blocking). A release that fails says what
//! is left (the mount point, the logical volume) and how to remove it. The snapshot records the
//! original `path_to_backup`: a backup through a snapshot restores as any other.
//!
//! The programs (`lvcreate`, `lvremove`, `lvs`, `mount`, `umount`) are found through the `PATH`
//! of [`crate::job::RunContext::exec_env`], run without a shell, each in its own process group.
//! This module never prints and never reads this process's environment.
//!
//! It also refuses upstream's Windows-only features (VSS shadow copies, mode `sqlserver`),
//! naming why (`refuse_windows_only`, called when option values are checked).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};

use super::fs::{FsOptions, FsSource};
use super::{ContentReader, Listing, Source, SourceEntry, SourceInfo};
use crate::error::{Error, Result};
use crate::job::FreezerAction;

/// Upstream's default snapshot size.
pub const DEFAULT_SNAPSIZE: &str = "1G";
/// Where upstream mounts a snapshot when `lvm_dirmount` is not given (`mount_<uuid>` inside).
pub const DEFAULT_MOUNT_BASEDIR: &str = "/var/lib/freezer";
/// Upstream's snapshot name prefix (`freezer_backup_snap_<uuid>`).
pub const DEFAULT_SNAP_BASENAME: &str = "freezer_backup_snap";
/// The mount table read by default.
pub const DEFAULT_MOUNT_TABLE: &str = "/proc/self/mounts";

/// The snapshot options of a `freezer_action`, by upstream's (`dest`) names.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotOptions {
    /// Take a snapshot of the file system holding `path_to_backup` (upstream's StrOpt: any
    /// value but an empty one, `false`, `no`, `0`, `off` or `none` turns it on).
    #[serde(
        default,
        deserialize_with = "truthy",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub snapshot: bool,
    /// Upstream's older form: snapshot the volume holding this path and back it up (it
    /// stands for `path_to_backup` and turns `snapshot` on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lvm_auto_snap: Option<String>,
    /// The logical volume to snapshot (`/dev/vg/lv`); guessed from the mount table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lvm_srcvol: Option<String>,
    /// Its volume group; guessed from the mount table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lvm_volgroup: Option<String>,
    /// The snapshot's name (default `freezer_backup_snap_<random>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lvm_snapname: Option<String>,
    /// Its size (`1G` by default; a value with `%`, like `80%FREE`, is given as `--extents`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lvm_snapsize: Option<String>,
    /// `ro` (default) or `rw`: the snapshot's permission and mount mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lvm_snapperm: Option<String>,
    /// Where it is mounted (default `/var/lib/freezer/mount_<random>`); a folder given must
    /// be empty, one missing is created and removed afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lvm_dirmount: Option<String>,
    /// Set by [`with_snapshot`] for the backup it runs: the folder (inside the mounted
    /// snapshot) read in place of `path_to_backup`.
    #[serde(skip)]
    pub read_from: Option<PathBuf>,
}

/// Upstream's StrOpt read as a switch.
fn truthy<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => false,
        serde_json::Value::Bool(b) => b,
        serde_json::Value::Number(n) => n.as_f64() != Some(0.0),
        serde_json::Value::String(s) => !matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "" | "false" | "no" | "0" | "off" | "none"
        ),
        _ => true,
    })
}

/// Names of upstream options that exist for Windows only, refused when set.
pub(crate) const WINDOWS_ONLY: &[&str] = &["vssadmin", "is_windows"];

/// Refuses upstream's Windows-only features: VSS shadow copies (`vssadmin`, `is_windows`,
/// `windows_volume`, a `C:\` path to snapshot) and mode `sqlserver`.
pub(crate) fn refuse_windows_only(action: &FreezerAction) -> Result<()> {
    let set = |name: &str| {
        action.other.get(name).is_some_and(|v| match v {
            serde_json::Value::Null | serde_json::Value::Bool(false) => false,
            serde_json::Value::String(s) => !matches!(
                s.trim().to_ascii_lowercase().as_str(),
                "" | "false" | "no" | "0" | "off" | "none"
            ),
            _ => true,
        })
    };
    const WHY: &str = "upstream takes Windows VSS shadow copies (vssadmin) on Windows only, and this release runs on Linux and other Unix systems; on Linux, snapshot takes an LVM snapshot";
    for name in WINDOWS_ONLY.iter().chain(&["windows_volume"]) {
        if set(name) {
            return Err(Error::unsupported(format!("{name}: {WHY}")));
        }
    }
    let windows_path = |p: &str| {
        let b = p.as_bytes();
        b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
    };
    if action.snapshot.snapshot
        && action
            .path_to_backup
            .as_deref()
            .is_some_and(|p| windows_path(p.trim()))
    {
        return Err(Error::unsupported(format!(
            "snapshot of a Windows path (a VSS shadow copy): {WHY}"
        )));
    }
    if action.mode().trim() == "sqlserver" || set("sql_server_conf") {
        return Err(Error::unsupported(
            "mode sqlserver (sql_server_conf): upstream backs up SQL Server on Windows only (it stops the SQL Server service and reads a VSS shadow copy), and this release runs on Linux and other Unix systems",
        ));
    }
    Ok(())
}

/// `ro` or `rw`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapPermission {
    /// Read-only snapshot (`--permission r`), mounted `ro`.
    ReadOnly,
    /// Writable snapshot (`--permission rw`), mounted `rw` (but xfs, always `ro`).
    ReadWrite,
}

impl SnapshotOptions {
    /// Whether a snapshot is asked for.
    pub fn requested(&self) -> bool {
        (self.snapshot
            || self
                .lvm_auto_snap
                .as_deref()
                .is_some_and(|p| !p.trim().is_empty()))
            && self.read_from.is_none()
    }

    fn permission(&self) -> Result<SnapPermission> {
        match self.lvm_snapperm.as_deref().map(str::trim) {
            None | Some("") | Some("ro") => Ok(SnapPermission::ReadOnly),
            Some("rw") => Ok(SnapPermission::ReadWrite),
            Some(other) => Err(Error::bad_input(
                "lvm_snapperm",
                format!("{other:?} is not ro or rw"),
            )),
        }
    }

    fn size(&self) -> Result<(&'static str, String)> {
        let s = self
            .lvm_snapsize
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_SNAPSIZE);
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '%');
        if !s.chars().all(ok) || !s.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(Error::bad_input(
                "lvm_snapsize",
                format!("{s:?} is not a size (500M, 8G) or a share of extents (80%FREE)"),
            ));
        }
        let flag = if s.contains('%') {
            "--extents"
        } else {
            "--size"
        };
        Ok((flag, s.to_string()))
    }

    /// Checks the options of a backup that asks for a snapshot (`mode` is the action's mode).
    pub(crate) fn validate(&self, action: &FreezerAction) -> Result<()> {
        if !self.requested() {
            return Ok(());
        }
        if action.mode().trim() != "fs" {
            return Err(Error::bad_input(
                "snapshot",
                format!(
                    "an LVM snapshot freezes a file system: mode fs only (mode is {})",
                    action.mode()
                ),
            ));
        }
        if let (Some(a), Some(p)) = (
            self.lvm_auto_snap.as_deref(),
            action.path_to_backup.as_deref(),
        ) && !a.trim().is_empty()
            && !p.trim().is_empty()
            && Path::new(a.trim()) != Path::new(p.trim())
        {
            return Err(Error::bad_input(
                "lvm_auto_snap",
                "it names the path to back up; give it or path_to_backup, not two different paths",
            ));
        }
        self.permission()?;
        self.size()?;
        for (name, v) in [
            ("lvm_snapname", &self.lvm_snapname),
            ("lvm_volgroup", &self.lvm_volgroup),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty())
                && !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+'))
            {
                return Err(Error::bad_input(
                    name,
                    format!("{v:?} is not an LVM name (letters, digits, _ - . +)"),
                ));
            }
        }
        Ok(())
    }
}

/// One line of a mount table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// The device (`/dev/mapper/vg0-data`).
    pub device: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Its file-system type (`xfs`, `ext4`).
    pub fs_type: String,
}

/// Undoes the octal escapes (`\040` for a space) of `/proc/mounts`.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads a mount table (`/proc/self/mounts` format).
pub fn read_mount_table(path: &Path) -> Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("mount table {}", path.display()), e))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some(MountEntry {
                device: unescape(f.next()?),
                mount_point: PathBuf::from(unescape(f.next()?)),
                fs_type: f.next()?.to_string(),
            })
        })
        .collect())
}

/// The mount whose point holds `path` (the longest one; the last mounted wins a tie), and
/// `path` relative to it.
pub fn mount_of<'a>(path: &Path, table: &'a [MountEntry]) -> Option<(&'a MountEntry, PathBuf)> {
    table
        .iter()
        .enumerate()
        .filter(|(_, m)| path.starts_with(&m.mount_point))
        .max_by_key(|(i, m)| (m.mount_point.components().count(), *i))
        .map(|(_, m)| {
            let rel = path
                .strip_prefix(&m.mount_point)
                .unwrap_or(Path::new(""))
                .to_path_buf();
            (m, rel)
        })
}

/// The volume group and logical volume of a device-mapper name (`/dev/mapper/vg--a-data`:
/// `vg-a`, `data`; a `-` inside a name is doubled).
pub fn mapper_names(device: &str) -> Option<(String, String)> {
    let name = device.strip_prefix("/dev/mapper/")?;
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'-' {
            if b.get(i + 1) == Some(&b'-') {
                i += 2;
                continue;
            }
            let (vg, lv) = (&name[..i], &name[i + 1..]);
            if vg.is_empty() || lv.is_empty() {
                return None;
            }
            return Some((vg.replace("--", "-"), lv.replace("--", "-")));
        }
        i += 1;
    }
    None
}

/// What a snapshot of the volume holding `path` is taken from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeGuess {
    /// The volume group.
    pub volgroup: String,
    /// The logical volume's device (`/dev/<vg>/<lv>`).
    pub srcvol: String,
    /// The mount point of the volume.
    pub mount_point: PathBuf,
    /// `path` relative to the mount point.
    pub relative: PathBuf,
    /// The file-system type in the mount table.
    pub fs_type: String,
}

/// Finds the logical volume holding `path` (absolute, symlinks resolved) from the mount
/// table at `mount_table`: a `/dev/mapper/VG-LV` device is read by name, any other device
/// is asked of `lvs --noheadings -o vg_name,lv_name DEVICE` (found through `PATH` in `env`).
pub fn guess_volume(
    path: &Path,
    mount_table: &Path,
    env: &BTreeMap<String, String>,
) -> Result<VolumeGuess> {
    let table = read_mount_table(mount_table)?;
    let (entry, relative) = mount_of(path, &table).ok_or_else(|| {
        Error::bad_input(
            "path_to_backup",
            format!(
                "{} is under no mount point of {}; give lvm_srcvol and lvm_volgroup",
                path.display(),
                mount_table.display()
            ),
        )
    })?;
    let names = match mapper_names(&entry.device) {
        Some(n) => n,
        None => {
            let words = [
                "lvs",
                "--noheadings",
                "--separator",
                "|",
                "-o",
                "vg_name,lv_name",
                &entry.device,
            ]
            .map(String::from);
            let out = run_tool(&words, env).map_err(|e| {
                Error::bad_input(
                    "path_to_backup",
                    format!(
                        "{} is on {} (mounted at {}), which is not an LVM logical volume ({e}); give lvm_srcvol and lvm_volgroup, or back up without snapshot",
                        path.display(),
                        entry.device,
                        entry.mount_point.display()
                    ),
                )
            })?;
            let line = out.lines().map(str::trim).find(|l| !l.is_empty());
            match line.and_then(|l| l.split_once('|')) {
                Some((vg, lv)) if !vg.trim().is_empty() && !lv.trim().is_empty() => {
                    (vg.trim().to_string(), lv.trim().to_string())
                }
                _ => {
                    return Err(Error::bad_input(
                        "path_to_backup",
                        format!(
                            "{} is on {} (mounted at {}), which lvs does not name as a logical volume; give lvm_srcvol and lvm_volgroup",
                            path.display(),
                            entry.device,
                            entry.mount_point.display()
                        ),
                    ));
                }
            }
        }
    };
    Ok(VolumeGuess {
        srcvol: format!("/dev/{}/{}", names.0, names.1),
        volgroup: names.0,
        mount_point: entry.mount_point.clone(),
        relative,
        fs_type: entry.fs_type.clone(),
    })
}

/// A program that failed: what it said.
#[derive(Debug)]
struct ToolError(String);

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Runs `words` (blocking) with only `env`, in its own process group, stdin empty; returns
/// its stdout, or what went wrong with the last line of its stderr.
fn run_tool(
    words: &[String],
    env: &BTreeMap<String, String>,
) -> std::result::Result<String, ToolError> {
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new(&words[0])
        .args(&words[1..])
        .env_clear()
        .envs(env)
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ToolError(format!(
                "`{}` not found in PATH (an LVM snapshot needs the lvm2 tools and mount)",
                words[0]
            )),
            _ => ToolError(format!("`{}` could not start: {e}", words[0])),
        })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| format!(": {}", l.trim()))
        .unwrap_or_default();
    let how = match out.status.code() {
        Some(c) => format!("exited with status {c}"),
        None => "was killed by a signal".to_string(),
    };
    Err(ToolError(format!("`{}` {how}{last}", words.join(" "))))
}

/// [`run_tool`] on a blocking thread.
async fn run_tool_async(
    words: Vec<String>,
    env: BTreeMap<String, String>,
) -> std::result::Result<String, ToolError> {
    tokio::task::spawn_blocking(move || run_tool(&words, &env))
        .await
        .unwrap_or_else(|e| Err(ToolError(format!("the task running it failed: {e}"))))
}

fn random_hex() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap_or_default();
    hex::encode(b)
}

/// A snapshot to take: everything resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotPlan {
    /// The logical volume snapshotted.
    pub srcvol: String,
    /// Its volume group.
    pub volgroup: String,
    /// The snapshot's name.
    pub snapname: String,
    /// `--size` or `--extents`, and its value.
    pub size: (&'static str, String),
    /// The permission.
    pub permission: SnapPermission,
    /// Where it is mounted.
    pub dirmount: PathBuf,
    /// The file-system type of the volume, when known (`xfs` changes the mount options).
    pub fs_type: Option<String>,
    /// `path_to_backup` as given (absolute), which the backup records.
    pub path_to_backup: PathBuf,
    /// `path_to_backup` relative to the volume's mount point.
    pub relative: PathBuf,
}

impl SnapshotPlan {
    /// Resolves the snapshot a backup `action` asks for, reading the mount table at
    /// `mount_table` and running `lvs` (with `env`) when the volume is not given.
    pub fn resolve(
        action: &FreezerAction,
        mount_table: &Path,
        env: &BTreeMap<String, String>,
    ) -> Result<SnapshotPlan> {
        let o = &action.snapshot;
        o.validate(action)?;
        let given = o
            .lvm_auto_snap
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .or(action.path_to_backup.as_deref().map(str::trim))
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                Error::bad_input(
                    "path_to_backup",
                    "a snapshot backup needs path_to_backup (or lvm_auto_snap)",
                )
            })?;
        let path = std::fs::canonicalize(given)
            .map_err(|e| Error::io(format!("path_to_backup {given}"), e))?;
        let nonempty = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(String::from)
        };
        let (srcvol, volgroup) = (nonempty(&o.lvm_srcvol), nonempty(&o.lvm_volgroup));
        let table = read_mount_table(mount_table)?;
        let (entry, relative) = mount_of(&path, &table).ok_or_else(|| {
            Error::bad_input(
                "path_to_backup",
                format!(
                    "{} is under no mount point of {}",
                    path.display(),
                    mount_table.display()
                ),
            )
        })?;
        let srcvol_guessed = srcvol.is_none();
        let (srcvol, volgroup) = match (srcvol, volgroup) {
            (Some(s), Some(v)) => (s, v),
            (s, v) => {
                let g = guess_volume(&path, mount_table, env)?;
                (s.unwrap_or(g.srcvol), v.unwrap_or(g.volgroup))
            }
        };
        // The file-system type: the mount table's, when the volume mounted there is the one
        // snapshotted; otherwise read from the volume's first bytes (xfs: `XFSB`).
        let same_volume = |dev: &str| {
            dev == srcvol
                || mapper_names(dev).is_some_and(|(vg, lv)| format!("/dev/{vg}/{lv}") == srcvol)
                || matches!((std::fs::canonicalize(dev), std::fs::canonicalize(&srcvol)), (Ok(a), Ok(b)) if a == b)
        };
        let fs_type = if srcvol_guessed || same_volume(&entry.device) {
            Some(entry.fs_type.clone())
        } else {
            superblock_type(Path::new(&srcvol))
        };
        let id = random_hex();
        Ok(SnapshotPlan {
            snapname: nonempty(&o.lvm_snapname)
                .unwrap_or_else(|| format!("{DEFAULT_SNAP_BASENAME}_{id}")),
            dirmount: nonempty(&o.lvm_dirmount)
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(DEFAULT_MOUNT_BASEDIR).join(format!("mount_{id}"))),
            size: o.size()?,
            permission: o.permission()?,
            srcvol,
            volgroup,
            fs_type,
            path_to_backup: path,
            relative,
        })
    }

    /// The snapshot's device (`/dev/<vg>/<snapname>`).
    pub fn device(&self) -> String {
        format!("/dev/{}/{}", self.volgroup, self.snapname)
    }

    /// The `lvcreate` command.
    pub fn lvcreate(&self) -> Vec<String> {
        let perm = match self.permission {
            SnapPermission::ReadOnly => "r",
            SnapPermission::ReadWrite => "rw",
        };
        [
            "lvcreate",
            self.size.0,
            &self.size.1,
            "--snapshot",
            "--permission",
            perm,
            "--name",
            &self.snapname,
            &self.srcvol,
        ]
        .map(String::from)
        .to_vec()
    }

    /// The `mount` command: read-only (`rw` for a writable snapshot), and for xfs
    /// `nouuid,norecovery` (the snapshot has its origin's UUID and an unreplayed log).
    pub fn mount(&self) -> Vec<String> {
        let opts = if self.fs_type.as_deref() == Some("xfs") {
            "ro,nouuid,norecovery"
        } else if self.permission == SnapPermission::ReadWrite {
            "rw"
        } else {
            "ro"
        };
        let mut w = vec!["mount".to_string(), "-o".into(), opts.into()];
        if let Some(t) = self.fs_type.as_deref().filter(|t| !t.is_empty()) {
            w.extend(["-t".to_string(), t.to_string()]);
        }
        w.push(self.device());
        w.push(self.dirmount.display().to_string());
        w
    }

    /// Where the backup reads: `path_to_backup`'s place inside the mounted snapshot.
    pub fn view_path(&self) -> PathBuf {
        if self.relative.as_os_str().is_empty() {
            self.dirmount.clone()
        } else {
            self.dirmount.join(&self.relative)
        }
    }
}

/// The file-system type in a volume's superblock, for the types whose mount options differ.
fn superblock_type(dev: &Path) -> Option<String> {
    use std::io::Read;
    let mut b = [0u8; 4];
    std::fs::File::open(dev).ok()?.read_exact(&mut b).ok()?;
    (&b == b"XFSB").then(|| "xfs".to_string())
}

/// What [`Snapshot`] made and must undo.
#[derive(Debug, Default)]
struct Made {
    created_dir: bool,
    created_lv: bool,
    mounted: bool,
}

/// A taken snapshot: released by [`Snapshot::release`], or by [`Drop`] as a last resort.
#[derive(Debug)]
pub struct Snapshot {
    plan: SnapshotPlan,
    env: BTreeMap<String, String>,
    made: Made,
}

impl Snapshot {
    /// Creates the snapshot and mounts it. On a failure, what was made is undone before the
    /// error returns (and a failure of that is added to the error).
    pub async fn take(plan: SnapshotPlan, env: BTreeMap<String, String>) -> Result<Snapshot> {
        let mut s = Snapshot {
            plan,
            env,
            made: Made::default(),
        };
        match s.make().await {
            Ok(()) => Ok(s),
            Err(e) => Err(match s.release().await {
                Ok(()) => e,
                Err(r) => e.context(format!("{r}; and before that")),
            }),
        }
    }

    async fn make(&mut self) -> Result<()> {
        let dir = self.plan.dirmount.clone();
        match std::fs::read_dir(&dir) {
            Ok(mut d) => {
                if d.next().is_some() {
                    return Err(Error::bad_input(
                        "lvm_dirmount",
                        format!(
                            "{} is not empty: a snapshot is mounted on an empty folder",
                            dir.display()
                        ),
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| Error::io(format!("lvm_dirmount {}", dir.display()), e))?;
                self.made.created_dir = true;
            }
            Err(e) => return Err(Error::io(format!("lvm_dirmount {}", dir.display()), e)),
        }
        run_tool_async(self.plan.lvcreate(), self.env.clone())
            .await
            .map_err(|e| Error::io("creating the LVM snapshot", std::io::Error::other(e.0)))?;
        self.made.created_lv = true;
        tracing::info!(device = %self.plan.device(), "LVM snapshot created");
        run_tool_async(self.plan.mount(), self.env.clone())
            .await
            .map_err(|e| Error::io("mounting the LVM snapshot", std::io::Error::other(e.0)))?;
        self.made.mounted = true;
        tracing::info!(device = %self.plan.device(), at = %dir.display(), "LVM snapshot mounted");
        Ok(())
    }

    /// The plan it was taken by.
    pub fn plan(&self) -> &SnapshotPlan {
        &self.plan
    }

    /// Unmounts and removes it (and the mount folder, when made here). An error names what
    /// is left and how to remove it.
    pub async fn release(&mut self) -> Result<()> {
        let made = std::mem::take(&mut self.made);
        let (plan, env) = (self.plan.clone(), self.env.clone());
        tokio::task::spawn_blocking(move || release_blocking(&plan, &env, made))
            .await
            .unwrap_or_else(|e| {
                Err(Error::io(
                    "releasing the LVM snapshot",
                    std::io::Error::other(e.to_string()),
                ))
            })
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let made = std::mem::take(&mut self.made);
        if (made.mounted || made.created_lv || made.created_dir)
            && let Err(e) = release_blocking(&self.plan, &self.env, made)
        {
            tracing::error!("{e}");
        }
    }
}

/// Undoes `made`: umount, then rmdir (if made here), then `lvremove -f` (retried while the
/// volume is in use). A mounted volume that does not unmount is not removed.
fn release_blocking(plan: &SnapshotPlan, env: &BTreeMap<String, String>, made: Made) -> Result<()> {
    let dir = plan.dirmount.display().to_string();
    let dev = plan.device();
    let mut problems = Vec::new();
    let mut left = Vec::new();
    let mut unmounted = true;
    if made.mounted {
        let words = ["umount".to_string(), dir.clone()];
        let mut tries = 0;
        loop {
            match run_tool(&words, env) {
                Ok(_) => break,
                Err(e) if tries < 2 && e.0.contains("busy") => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
                Err(e) => {
                    problems.push(e.0);
                    left.push(format!("{dev} mounted on {dir} (umount {dir})"));
                    unmounted = false;
                    break;
                }
            }
        }
    }
    if made.created_dir && unmounted {
        if let Err(e) = std::fs::remove_dir(&plan.dirmount) {
            problems.push(format!("removing the folder {dir}: {e}"));
            left.push(format!("the folder {dir} (rmdir {dir})"));
        }
    } else if made.created_dir {
        left.push(format!("the folder {dir} (rmdir {dir})"));
    }
    if made.created_lv {
        if !unmounted {
            left.push(format!("the logical volume {dev} (lvremove -f {dev})"));
        } else {
            let words = ["lvremove", "-f", &dev].map(String::from);
            let mut tries = 0;
            loop {
                match run_tool(&words, env) {
                    Ok(_) => {
                        tracing::info!(device = %dev, "LVM snapshot removed");
                        break;
                    }
                    Err(e) if tries < 4 && e.0.contains("in use") => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                    Err(e) => {
                        problems.push(e.0);
                        left.push(format!("the logical volume {dev} (lvremove -f {dev})"));
                        break;
                    }
                }
            }
        }
    }
    if problems.is_empty() && left.is_empty() {
        return Ok(());
    }
    Err(Error::io(
        "releasing the LVM snapshot",
        std::io::Error::other(format!(
            "{}; left behind, to remove by hand: {}",
            problems.join("; "),
            left.join(", ")
        )),
    ))
}

/// Runs `backup` (the action to run with `path_to_backup` read from the mounted snapshot)
/// inside a snapshot of the volume holding `action`'s `path_to_backup`, and releases the
/// snapshot whatever happens. A release that fails turns the result into an error naming
/// what is left (after a stored backup, saying so).
pub async fn with_snapshot<'a, F>(
    action: &FreezerAction,
    mount_table: &Path,
    env: &BTreeMap<String, String>,
    cancel: &crate::CancelToken,
    backup: F,
) -> Result<crate::job::ActionOutcome>
where
    F: FnOnce(
        FreezerAction,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<crate::job::ActionOutcome>> + Send + 'a>,
    >,
{
    let plan = {
        let (action, mount_table, env) = (action.clone(), mount_table.to_path_buf(), env.clone());
        tokio::task::spawn_blocking(move || SnapshotPlan::resolve(&action, &mount_table, &env))
            .await
            .map_err(|e| Error::io("LVM snapshot", std::io::Error::other(e.to_string())))??
    };
    cancel.check()?;
    let mut snap = Snapshot::take(plan, env.clone()).await?;
    let mut view = action.clone();
    view.path_to_backup = Some(snap.plan().path_to_backup.display().to_string());
    view.snapshot.lvm_auto_snap = None;
    view.snapshot.snapshot = false;
    view.snapshot.read_from = Some(snap.plan().view_path());
    let result = if cancel.is_cancelled() {
        Err(Error::Cancelled)
    } else {
        backup(view).await
    };
    match (snap.release().await, result) {
        (Ok(()), r) => r,
        (Err(e), Ok(crate::job::ActionOutcome::Backup(b))) => Err(e.context(format!(
            "the backup is stored (snapshot {}), but",
            b.snapshot_id
                .map(|i| i.to_string())
                .unwrap_or_else(|| "none: dry run".into())
        ))),
        (Err(e), Ok(_)) => Err(e),
        (Err(e), Err(Error::Cancelled)) => Err(e.context("the backup was cancelled, and")),
        (Err(e), Err(b)) => Err(e.context(format!("the backup failed ({b}), and"))),
    }
}

/// The `fs` source of a backup: `path_to_backup`, or, inside an LVM snapshot, the same
/// folder in the mounted snapshot, recorded under `path_to_backup`.
pub fn fs_source(action: &FreezerAction, opts: &FsOptions) -> Result<Arc<dyn Source>> {
    let path = action.path_to_backup.as_deref().unwrap_or_default();
    match &action.snapshot.read_from {
        None => Ok(Arc::new(FsSource::new(path, opts)?)),
        Some(view) => Ok(Arc::new(SnapshotView {
            inner: FsSource::new(view, opts)?,
            recorded: PathBuf::from(path),
        })),
    }
}

/// An `fs` source reading a mounted snapshot, reporting the original path.
/// A folder read under another name: the snapshot records `recorded` as its
/// `path_to_backup` (an LVM snapshot's mount read for the volume's folder; a migrated
/// upstream backup's staging folder read for the folder upstream backed up).
pub(crate) struct SnapshotView {
    inner: FsSource,
    recorded: PathBuf,
}

impl SnapshotView {
    /// `inner`, recorded as `recorded`.
    pub(crate) fn new(inner: FsSource, recorded: PathBuf) -> Self {
        SnapshotView { inner, recorded }
    }
}

impl Source for SnapshotView {
    fn info(&self) -> SourceInfo {
        let mut i = self.inner.info();
        i.path = self.recorded.to_string_lossy().into_owned();
        i
    }

    fn root(&self) -> Result<SourceEntry> {
        let mut e = self.inner.root()?;
        // The mount point's own name is not the backed-up folder's.
        if let Some(name) = self
            .recorded
            .components()
            .next_back()
            .and_then(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            })
            .or(Some(OsStr::new("root")))
        {
            use std::os::unix::ffi::OsStrExt;
            e.node.name = name.as_bytes().to_vec();
        }
        Ok(e)
    }

    fn list(&self, dir: &SourceEntry) -> Result<Listing> {
        self.inner.list(dir)
    }

    fn xattrs(&self, entry: &SourceEntry) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.xattrs(entry)
    }

    fn open(&self, entry: &SourceEntry) -> Result<Box<dyn ContentReader>> {
        self.inner.open(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapper_names_undouble_dashes() {
        assert_eq!(
            mapper_names("/dev/mapper/vg0-data"),
            Some(("vg0".into(), "data".into()))
        );
        assert_eq!(
            mapper_names("/dev/mapper/my--vg-var--lib"),
            Some(("my-vg".into(), "var-lib".into()))
        );
        assert_eq!(mapper_names("/dev/sda1"), None);
        assert_eq!(mapper_names("/dev/mapper/nodash"), None);
    }

    #[test]
    fn the_longest_mount_point_holds_a_path() {
        let t = [
            ("/dev/sda1", "/", "ext4"),
            ("/dev/mapper/vg-var", "/var", "xfs"),
            ("/dev/mapper/vg-lib", "/var/lib", "ext4"),
            ("tmpfs", "/var/lib2", "tmpfs"),
        ]
        .map(|(d, m, f)| MountEntry {
            device: d.into(),
            mount_point: m.into(),
            fs_type: f.into(),
        });
        let (m, rel) = mount_of(Path::new("/var/lib/mysql"), &t).unwrap();
        assert_eq!(
            (m.device.as_str(), rel),
            ("/dev/mapper/vg-lib", PathBuf::from("mysql"))
        );
        let (m, rel) = mount_of(Path::new("/var/lib2/x"), &t).unwrap();
        assert_eq!((m.device.as_str(), rel), ("tmpfs", PathBuf::from("x")));
        let (m, rel) = mount_of(Path::new("/var"), &t).unwrap();
        assert_eq!(
            (m.device.as_str(), rel),
            ("/dev/mapper/vg-var", PathBuf::new())
        );
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
    }

    fn action(json: &str) -> FreezerAction {
        FreezerAction::from_json(json).unwrap()
    }

    #[test]
    fn options_are_read_as_upstream_writes_them() {
        for (v, on) in [
            (r#""""#, false),
            (r#""False""#, false),
            ("null", false),
            (r#""True""#, true),
            (r#""yes""#, true),
            ("true", true),
        ] {
            let a = action(&format!(r#"{{"snapshot":{v},"path_to_backup":"/d"}}"#));
            assert_eq!(a.snapshot.requested(), on, "{v}");
        }
        let a = action(r#"{"lvm_snapsize":"80%FREE","lvm_snapperm":"rw","snapshot":"1"}"#);
        assert_eq!(a.snapshot.size().unwrap(), ("--extents", "80%FREE".into()));
        assert_eq!(a.snapshot.permission().unwrap(), SnapPermission::ReadWrite);
        let a = action(r#"{"lvm_snapperm":"rx","snapshot":"1"}"#);
        assert!(
            a.snapshot
                .validate(&a)
                .unwrap_err()
                .to_string()
                .starts_with("lvm_snapperm:")
        );
        let a = action(r#"{"lvm_snapsize":"1G; rm -rf /","snapshot":"1"}"#);
        assert!(
            a.snapshot
                .validate(&a)
                .unwrap_err()
                .to_string()
                .starts_with("lvm_snapsize:")
        );
        let a = action(r#"{"mode":"stdin","snapshot":"1"}"#);
        assert!(
            a.snapshot
                .validate(&a)
                .unwrap_err()
                .to_string()
                .contains("mode fs only")
        );
    }

    #[test]
    fn windows_only_features_are_refused_naming_why() {
        for json in [
            r#"{"mode":"sqlserver"}"#,
            r#"{"sql_server_conf":"/etc/sql.conf"}"#,
            r#"{"vssadmin":"True"}"#,
            r#"{"is_windows":true}"#,
            r#"{"windows_volume":"C:\\"}"#,
            r#"{"snapshot":"True","path_to_backup":"C:\\Users"}"#,
        ] {
            let e = refuse_windows_only(&action(json)).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Unsupported, "{json}");
            assert!(e.to_string().contains("Windows"), "{e}");
        }
        refuse_windows_only(&action(
            r#"{"vssadmin":false,"is_windows":"","windows_volume":""}"#,
        ))
        .unwrap();
    }
}
