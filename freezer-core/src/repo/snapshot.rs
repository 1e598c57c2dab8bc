//! Snapshots: one JSON object per backup (`snapshots/<id>`), stored as every small object is.
//!
//! A snapshot carries Freezer's vocabulary: `hostname` + `backup_name` name a series, `mode`
//! and `level` say what kind of backup it is, `time_stamp` is upstream's integer epoch, and
//! `path_to_backup` is where the data came from. Every snapshot is complete on its own: its
//! tree references every blob it needs, whatever its level.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;

/// The snapshot format version this build writes.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Counts of one backup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotStats {
    /// Regular files in the snapshot.
    pub files: u64,
    /// Directories in the snapshot.
    pub dirs: u64,
    /// Symlinks, devices, pipes.
    pub others: u64,
    /// Total size of the files.
    pub bytes: u64,
    /// Bytes read from the source in this backup.
    pub bytes_read: u64,
    /// Bytes this backup added to the repository, as stored.
    pub bytes_added: u64,
    /// Blobs this backup added.
    pub blobs_added: u64,
    /// Files not in the parent snapshot.
    pub files_new: u64,
    /// Files changed since the parent snapshot.
    pub files_changed: u64,
    /// Files recognised as unchanged and not read.
    pub files_unmodified: u64,
    /// Files that changed while being read.
    pub files_changed_while_read: u64,
    /// Entries that could not be read and are missing from the snapshot.
    pub errors: u64,
    /// Seconds the backup took.
    pub duration_secs: f64,
}

/// One backup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`SNAPSHOT_VERSION`].
    pub version: u32,
    /// When the backup started.
    pub time: Timestamp,
    /// Upstream's `time_stamp`: `time` in whole seconds since the epoch.
    pub time_stamp: i64,
    /// The host the backup belongs to.
    pub hostname: String,
    /// The backup's name within the host.
    pub backup_name: String,
    /// Upstream's `mode`: `fs`, or `command` / `stdin` for a stream (a snapshot whose tree
    /// holds one file, the stream).
    pub mode: String,
    /// The incremental level: 0 read every file, higher levels trusted the parent's metadata.
    pub level: u32,
    /// The snapshot whose metadata this one trusted, if any.
    pub parent: Option<Id>,
    /// What was backed up.
    pub path_to_backup: String,
    /// The root tree.
    pub tree: Id,
    /// Exclusion patterns used.
    #[serde(default)]
    pub excludes: Vec<String>,
    /// The program and version that wrote it.
    pub program: String,
    /// The user that ran the backup.
    #[serde(default)]
    pub username: String,
    /// Counts.
    #[serde(default)]
    pub stats: SnapshotStats,
    /// Files that changed while read or could not be read, with the reason.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Upstream's `consistency_checksum`: the checksum of the backed-up file set, when the
    /// backup was asked for one (see [`crate::source::checksum`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency_checksum: Option<String>,
    /// For mode `command`: the command line the stream came from (optional: absent from
    /// older snapshots and from other modes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Fields written by later versions, kept as they are.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Snapshot {
    /// Decodes a snapshot's JSON; `what` names it in errors.
    pub fn decode(data: &[u8], what: &str) -> Result<Snapshot> {
        let s: Snapshot = serde_json::from_slice(data)
            .map_err(|e| Error::corrupt(what, format!("invalid snapshot: {e}")))?;
        if s.version != SNAPSHOT_VERSION {
            return Err(Error::unsupported(format!(
                "{what}: snapshot version {}",
                s.version
            )));
        }
        Ok(s)
    }

    /// Encodes as JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a snapshot serializes")
    }
}

/// Which snapshots a listing, a retention or a copy looks at. Empty fields match all.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SnapshotFilter {
    /// Only this host's.
    pub hostname: Option<String>,
    /// Only this backup name's.
    pub backup_name: Option<String>,
    /// Only those taken at or after this time.
    pub since: Option<Timestamp>,
    /// Only those taken at or before this time.
    pub until: Option<Timestamp>,
}

impl SnapshotFilter {
    /// Whether `s` passes.
    pub fn matches(&self, s: &Snapshot) -> bool {
        self.hostname.as_ref().is_none_or(|h| &s.hostname == h)
            && self
                .backup_name
                .as_ref()
                .is_none_or(|n| &s.backup_name == n)
            && self.since.is_none_or(|t| s.time >= t)
            && self.until.is_none_or(|t| s.time <= t)
    }
}

/// One line of a Freezer-style listing (upstream's `info`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SnapshotSummary {
    /// The snapshot's id.
    pub id: Id,
    /// Its host.
    pub hostname: String,
    /// Its backup name.
    pub backup_name: String,
    /// Its level.
    pub level: u32,
    /// When it was taken.
    pub time: Timestamp,
    /// Upstream's integer epoch.
    pub time_stamp: i64,
    /// Bytes of file content it holds.
    pub size: u64,
    /// Files it holds.
    pub files: u64,
    /// Bytes its backup added to the repository, as stored.
    pub added: u64,
    /// What was backed up.
    pub path_to_backup: String,
    /// The snapshot it trusted, if any.
    pub parent: Option<Id>,
    /// Its file-set checksum, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistency_checksum: Option<String>,
    /// Its mode (`fs`, `command`, `stdin`).
    pub mode: String,
    /// For mode `command`: the command the stream came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

impl Snapshot {
    /// Its line in a listing.
    pub fn summary(&self, id: Id) -> SnapshotSummary {
        SnapshotSummary {
            id,
            hostname: self.hostname.clone(),
            backup_name: self.backup_name.clone(),
            level: self.level,
            time: self.time,
            time_stamp: self.time_stamp,
            size: self.stats.bytes,
            files: self.stats.files,
            added: self.stats.bytes_added,
            path_to_backup: self.path_to_backup.clone(),
            parent: self.parent,
            consistency_checksum: self.consistency_checksum.clone(),
            mode: self.mode.clone(),
            command: self.command.clone(),
        }
    }
}

/// How to choose a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotSelector {
    /// The newest of a series.
    Latest {
        /// The series' host.
        hostname: String,
        /// The series' name.
        backup_name: String,
    },
    /// The newest of a series at or before a time (upstream's `restore_from_date`).
    AtOrBefore {
        /// The series' host.
        hostname: String,
        /// The series' name.
        backup_name: String,
        /// The latest acceptable time.
        time: Timestamp,
    },
    /// One snapshot by its id or a unique prefix of it.
    Id(String),
}

/// Picks a snapshot from a listing, or says clearly why none fits.
pub fn select<'a>(
    snaps: &'a [(Id, Snapshot)],
    sel: &SnapshotSelector,
) -> Result<&'a (Id, Snapshot)> {
    match sel {
        SnapshotSelector::Id(prefix) => {
            let p = prefix.to_ascii_lowercase();
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::bad_input(
                    "snapshot",
                    format!("{prefix:?} is not a snapshot id"),
                ));
            }
            let found: Vec<_> = snaps
                .iter()
                .filter(|(id, _)| id.to_hex().starts_with(&p))
                .collect();
            match found.as_slice() {
                [one] => Ok(one),
                [] => Err(Error::not_found(format!("snapshot {prefix}"))),
                many => Err(Error::bad_input(
                    "snapshot",
                    format!(
                        "{prefix} matches {} snapshots; give more digits",
                        many.len()
                    ),
                )),
            }
        }
        SnapshotSelector::Latest {
            hostname,
            backup_name,
        }
        | SnapshotSelector::AtOrBefore {
            hostname,
            backup_name,
            ..
        } => {
            let limit = match sel {
                SnapshotSelector::AtOrBefore { time, .. } => Some(*time),
                _ => None,
            };
            snaps
                .iter()
                .filter(|(_, s)| &s.hostname == hostname && &s.backup_name == backup_name)
                .filter(|(_, s)| limit.is_none_or(|t| s.time <= t))
                .max_by_key(|(id, s)| (s.time, *id))
                .ok_or_else(|| {
                    let when = limit
                        .map(|t| format!(" at or before {t}"))
                        .unwrap_or_default();
                    Error::not_found(format!(
                        "a snapshot of host {hostname:?}, backup name {backup_name:?}{when}"
                    ))
                })
        }
    }
}

/// A snapshot that could not be read: missing on every storage that listed it, damaged
/// everywhere, or unreachable. Its series and time are unknown.
#[derive(Debug)]
pub struct UnreadableSnapshot {
    /// Its id (the name of `snapshots/<id>`).
    pub id: Id,
    /// Why it could not be read.
    pub error: Error,
}

impl UnreadableSnapshot {
    /// Its key, `snapshots/<id>`.
    pub fn key(&self) -> String {
        format!("snapshots/{}", self.id)
    }

    /// Whether its content is damaged (as opposed to out of reach for a moment).
    pub fn is_corrupt(&self) -> bool {
        matches!(self.error, Error::Corrupt { .. })
    }

    /// An error naming it, of the same kind as the reason, ending with `hint`.
    pub fn to_error(&self, hint: &str) -> Error {
        match &self.error {
            Error::Corrupt { detail, .. } => {
                Error::corrupt(self.key(), format!("{detail}; {hint}"))
            }
            e => Error::io(
                self.key(),
                std::io::Error::other(format!("unreadable: {e}; {hint}")),
            ),
        }
    }
}

/// The snapshots of a repository: those that read, oldest first, and those that did not.
#[derive(Debug, Default)]
pub struct SnapshotListing {
    /// The snapshots that read, oldest first.
    pub snapshots: Vec<(Id, Snapshot)>,
    /// The snapshots that could not be read.
    pub unreadable: Vec<UnreadableSnapshot>,
}

impl SnapshotListing {
    /// Picks a snapshot, or says clearly why none fits. An unreadable snapshot may be the one
    /// asked for: its series and time are unknown. So choosing the newest of a series (at or
    /// before a time, or not) fails while any snapshot is unreadable, naming it, unless
    /// `newest_readable` says to pass over the unreadable ones; the second value then names
    /// those passed over. Asked for by id, an unreadable snapshot is an error that says why.
    pub fn select(
        &self,
        sel: &SnapshotSelector,
        newest_readable: bool,
    ) -> Result<(&(Id, Snapshot), Vec<String>)> {
        let set_aside = "`freezer forget ID` or `freezer repair snapshots` sets an unreadable snapshot aside (under quarantine/)";
        if let SnapshotSelector::Id(prefix) = sel {
            let p = prefix.to_ascii_lowercase();
            let bad: Vec<&UnreadableSnapshot> = self
                .unreadable
                .iter()
                .filter(|u| !p.is_empty() && u.id.to_hex().starts_with(&p))
                .collect();
            return match (select(&self.snapshots, sel), bad.as_slice()) {
                // Not an id, or several readable ones match.
                (Err(e @ Error::BadInput { .. }), _) => Err(e),
                (Ok(found), []) => Ok((found, vec![])),
                (Err(_), [one]) => Err(one.to_error(set_aside)),
                (Err(e), []) => Err(e),
                (found, many) => Err(Error::bad_input(
                    "snapshot",
                    format!(
                        "{prefix} matches {} snapshots; give more digits",
                        many.len() + usize::from(found.is_ok())
                    ),
                )),
            };
        }
        if let Some(first) = self.unreadable.first()
            && !newest_readable
        {
            let more = match self.unreadable.len() {
                1 => String::new(),
                n => format!(" ({} more snapshot(s) are unreadable)", n - 1),
            };
            return Err(first.to_error(&format!(
                "its series and time are unknown, so it may be the newest: nothing is restored{more}. \
                 Restore the newest snapshot that reads with newest_readable (--newest-readable), \
                 or one by its id; {set_aside}"
            )));
        }
        let passed_over = self
            .unreadable
            .iter()
            .map(|u| format!("{} passed over: {}", u.key(), u.error))
            .collect();
        Ok((select(&self.snapshots, sel)?, passed_over))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(host: &str, name: &str, secs: i64) -> Snapshot {
        Snapshot {
            version: 1,
            time: Timestamp::from_second(secs).unwrap(),
            time_stamp: secs,
            hostname: host.into(),
            backup_name: name.into(),
            mode: "fs".into(),
            level: 0,
            parent: None,
            path_to_backup: "/data".into(),
            tree: Id([1; 32]),
            excludes: vec![],
            program: "test".into(),
            username: "root".into(),
            stats: SnapshotStats::default(),
            warnings: vec![],
            consistency_checksum: None,
            command: None,
            extra: BTreeMap::new(),
        }
    }

    #[test]
    fn snapshots_round_trip_and_keep_unknown_fields() {
        let s = snap("h", "n", 100);
        assert_eq!(Snapshot::decode(&s.encode(), "s").unwrap(), s);
        let mut v: serde_json::Value = serde_json::from_slice(&s.encode()).unwrap();
        v["future_field"] = 5.into();
        let back = Snapshot::decode(&serde_json::to_vec(&v).unwrap(), "s").unwrap();
        assert_eq!(back.extra["future_field"], 5);
        assert!(
            Snapshot::decode(b"[]", "snapshots/ab")
                .unwrap_err()
                .to_string()
                .contains("snapshots/ab")
        );
    }

    #[test]
    fn selection_by_series_date_and_prefix() {
        let snaps = vec![
            (Id([0xa1; 32]), snap("h", "n", 100)),
            (Id([0xa2; 32]), snap("h", "n", 200)),
            (Id([0xb3; 32]), snap("h", "other", 300)),
            (Id([0xc4; 32]), snap("g", "n", 400)),
        ];
        let latest = SnapshotSelector::Latest {
            hostname: "h".into(),
            backup_name: "n".into(),
        };
        assert_eq!(select(&snaps, &latest).unwrap().0, Id([0xa2; 32]));
        let at = |t| SnapshotSelector::AtOrBefore {
            hostname: "h".into(),
            backup_name: "n".into(),
            time: Timestamp::from_second(t).unwrap(),
        };
        assert_eq!(select(&snaps, &at(150)).unwrap().0, Id([0xa1; 32]));
        assert_eq!(select(&snaps, &at(200)).unwrap().0, Id([0xa2; 32]));
        assert!(matches!(
            select(&snaps, &at(99)),
            Err(Error::NotFound { .. })
        ));
        assert_eq!(
            select(&snaps, &SnapshotSelector::Id("B3".into()))
                .unwrap()
                .0,
            Id([0xb3; 32])
        );
        assert!(matches!(
            select(&snaps, &SnapshotSelector::Id("a".into())),
            Err(Error::BadInput { .. })
        ));
        assert!(matches!(
            select(&snaps, &SnapshotSelector::Id("ff".into())),
            Err(Error::NotFound { .. })
        ));
    }
}
