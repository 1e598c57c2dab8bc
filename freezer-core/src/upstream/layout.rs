//! Upstream Freezer's storage layout for its `tar` engine (docs/UPSTREAM-TAR.md §1, §2.1, §7),
//! over our [`Sink`]: which backups exist, how they form level chains, which levels a restore
//! applies and which parent the next backup continues.
//!
//! A sink is rooted at upstream's container `S`, so the keys are
//!
//! ```text
//! metadata/tar/<N>/<T0>/<L>_<T>/metadata          one-line JSON
//! data/tar/<N>/<T0>/<L>_<T>/data                  the backup stream
//! data/tar/<N>/<T0>/<L>_<T>/engine_metadata       GNU tar's snapshot after this level
//! ```
//!
//! with `N` = `<hostname>_<backup_name>`, `T0` the level-0 timestamp of the chain, `L` the level
//! and `T` the backup's timestamp (Unix seconds). Backups are discovered by their `metadata`
//! objects, as upstream does. This module only reads names and metadata: it never reads or
//! writes `data`, and never deletes anything.

use std::collections::BTreeMap;
use std::fmt;

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::sink::Sink;

/// The engine name in upstream's keys and metadata.
pub const ENGINE: &str = "tar";

/// How a backup's `data` is compressed (the `compression` field of its metadata).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// `gzip` (`tar -z`), upstream's default.
    Gzip,
    /// `bzip2` (`tar -j`).
    Bzip2,
    /// `xz` (`tar -J`).
    Xz,
    /// `zstd`: our extension; upstream 19.0.0 refuses it (§10.1).
    Zstd,
}

impl Compression {
    /// The name in metadata: `gzip`, `bzip2`, `xz`, `zstd`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }

    /// Parses a metadata or option value.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "gzip" => Compression::Gzip,
            "bzip2" => Compression::Bzip2,
            "xz" => Compression::Xz,
            "zstd" => Compression::Zstd,
            other => {
                return Err(Error::unsupported(format!(
                    "compression {other:?} of an upstream tar backup (gzip, bzip2, xz and zstd are)"
                )));
            }
        })
    }

    /// Whether `b`, the first bytes of a stream, start as this compression's streams do.
    pub fn magic_matches(self, b: &[u8]) -> bool {
        match self {
            Compression::Gzip => b.starts_with(&[0x1f, 0x8b]),
            Compression::Bzip2 => b.starts_with(b"BZh"),
            Compression::Xz => b.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]),
            Compression::Zstd => b.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `metadata` object of a backup: `{"engine_name": "tar", "compression": "gzip",
/// "encryption": false}`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TarMetadata {
    /// Always `tar` for this engine.
    pub engine_name: String,
    /// How `data` is compressed.
    pub compression: Compression,
    /// Whether `data` is encrypted (`openssl enc`, [`super::openssl`]).
    pub encryption: bool,
}

#[derive(Deserialize)]
struct RawMetadata {
    engine_name: String,
    compression: String,
    encryption: bool,
}

impl TarMetadata {
    /// Parses a `metadata` object as upstream does: only its first line is JSON (§2.1).
    /// `what` names the object in errors.
    pub fn parse(content: &[u8], what: &str) -> Result<Self> {
        let line = content.split(|b| *b == b'\n').next().unwrap_or_default();
        let raw: RawMetadata = serde_json::from_slice(line).map_err(|e| Error::corrupt(what, e))?;
        if raw.engine_name != ENGINE {
            return Err(Error::unsupported(format!(
                "{what}: engine_name {:?} (only upstream's \"tar\" engine is read)",
                raw.engine_name
            )));
        }
        Ok(TarMetadata {
            engine_name: raw.engine_name,
            compression: Compression::parse(&raw.compression).map_err(|e| e.context(what))?,
            encryption: raw.encryption,
        })
    }

    /// The object's bytes, exactly as upstream writes them (Python's `json.dumps`, one line,
    /// no newline): what a writer stores.
    pub fn to_line(&self) -> String {
        format!(
            "{{\"engine_name\": {}, \"compression\": \"{}\", \"encryption\": {}}}",
            serde_json::Value::String(self.engine_name.clone()),
            self.compression,
            self.encryption
        )
    }
}

/// One backup (one level) of an upstream `tar` chain.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TarBackup {
    /// `N`: `<hostname>_<backup_name>`.
    pub name: String,
    /// `T0`: the timestamp of the chain's level 0 (Unix seconds).
    pub t0: i64,
    /// `L`: the level, 0 for a full backup.
    pub level: u32,
    /// `T`: this backup's timestamp (Unix seconds).
    pub t: i64,
    /// Its parsed `metadata` object.
    pub metadata: TarMetadata,
}

impl TarBackup {
    /// `metadata/tar/N/T0/L_T/metadata`.
    pub fn metadata_key(&self) -> String {
        metadata_key(&self.name, self.t0, self.level, self.t)
    }

    /// `data/tar/N/T0/L_T/data`.
    pub fn data_key(&self) -> String {
        data_key(&self.name, self.t0, self.level, self.t)
    }

    /// `data/tar/N/T0/L_T/engine_metadata`.
    pub fn engine_metadata_key(&self) -> String {
        engine_metadata_key(&self.name, self.t0, self.level, self.t)
    }
}

/// `N` as upstream builds it: `<hostname>_<backup_name>`, without escaping (§10.12).
pub fn backup_name(hostname: &str, backup_name: &str) -> String {
    format!("{hostname}_{backup_name}")
}

/// `metadata/tar/N/T0/L_T/metadata`.
pub fn metadata_key(name: &str, t0: i64, level: u32, t: i64) -> String {
    format!("metadata/{ENGINE}/{name}/{t0}/{level}_{t}/metadata")
}

/// `data/tar/N/T0/L_T/data`.
pub fn data_key(name: &str, t0: i64, level: u32, t: i64) -> String {
    format!("data/{ENGINE}/{name}/{t0}/{level}_{t}/data")
}

/// `data/tar/N/T0/L_T/engine_metadata`.
pub fn engine_metadata_key(name: &str, t0: i64, level: u32, t: i64) -> String {
    format!("data/{ENGINE}/{name}/{t0}/{level}_{t}/engine_metadata")
}

/// The backups of one level 0 and its increments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// `N`.
    pub name: String,
    /// `T0`.
    pub t0: i64,
    /// Every backup of the chain, sorted by level, then timestamp (an always-level chain has
    /// several backups of one level).
    pub backups: Vec<TarBackup>,
}

impl Chain {
    /// The highest level in the chain.
    pub fn highest_level(&self) -> u32 {
        self.backups.iter().map(|b| b.level).max().unwrap_or(0)
    }

    /// The newest backup of `level` whose timestamp is at or before `until` (any, without it).
    pub fn newest_of_level(&self, level: u32, until: Option<i64>) -> Option<&TarBackup> {
        self.backups
            .iter()
            .filter(|b| b.level == level && until.is_none_or(|d| b.t <= d))
            .max_by_key(|b| b.t)
    }
}

/// What [`list`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TarListing {
    /// Every chain, sorted by name, then `T0`.
    pub chains: Vec<Chain>,
    /// One line per object that was skipped (a key that is not upstream's layout, or a
    /// metadata object that does not parse), for the caller to show: listing never fails
    /// because of them.
    pub warnings: Vec<String>,
}

impl TarListing {
    /// The chains of one `N`.
    pub fn chains_of(&self, name: &str) -> Vec<Chain> {
        self.chains
            .iter()
            .filter(|c| c.name == name)
            .cloned()
            .collect()
    }
}

/// Parses `metadata/tar/N/T0/L_T/metadata` into `(N, T0, L, T)`.
pub fn parse_metadata_key(key: &str) -> Option<(String, i64, u32, i64)> {
    let rest = key.strip_prefix("metadata/")?.strip_prefix(ENGINE)?;
    let rest = rest.strip_prefix('/')?.strip_suffix("/metadata")?;
    let mut parts = rest.rsplitn(3, '/');
    let lt = parts.next()?;
    let t0 = parts.next()?;
    let name = parts.next()?;
    if name.is_empty() || name.contains('/') {
        return None;
    }
    let (l, t) = lt.split_once('_')?;
    let num = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !num(t0) || !num(l) || !num(t) {
        return None;
    }
    Some((
        name.to_string(),
        t0.parse().ok()?,
        l.parse().ok()?,
        t.parse().ok()?,
    ))
}

/// Lists upstream's `tar` backups on `sink`: of one `N` (`<hostname>_<backup_name>`), or of
/// every name. Keys that are not upstream's layout and metadata objects that do not parse are
/// skipped and reported in [`TarListing::warnings`]. Backups whose level-0 directory `T0`
/// differs from the `T` of their chain's level 0 are kept as upstream keeps them.
pub async fn list(sink: &dyn Sink, name: Option<&str>) -> Result<TarListing> {
    let prefix = match name {
        Some(n) => format!("metadata/{ENGINE}/{n}/"),
        None => format!("metadata/{ENGINE}/"),
    };
    let objects = sink.list(&prefix).await?;
    let mut warnings = Vec::new();
    let mut found = Vec::new();
    for o in objects {
        match parse_metadata_key(&o.key) {
            Some(k) if name.is_none_or(|n| n == k.0) => found.push((o.key, k)),
            Some(_) => {}
            None => {
                // engine_metadata or other objects beside metadata are not under metadata/.
                warnings.push(format!(
                    "{}: skipped: not an upstream tar backup's metadata (metadata/tar/<host>_<name>/<T0>/<level>_<T>/metadata)",
                    o.key
                ));
            }
        }
    }
    type Fetched = (String, (String, i64, u32, i64), Result<bytes::Bytes>);
    let fetched: Vec<Fetched> = futures::stream::iter(found)
        .map(|(key, k)| async move {
            let r = match sink.get(&key, None).await {
                Ok(b) => b.bytes().await,
                Err(e) => Err(e),
            };
            Ok::<_, Error>((key, k, r))
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    let mut chains: BTreeMap<(String, i64), Vec<TarBackup>> = BTreeMap::new();
    for (key, (n, t0, level, t), content) in fetched {
        let content = match content {
            Ok(c) => c,
            // Gone between list and get, or unreadable: transient errors still fail the listing.
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                warnings.push(format!("{key}: skipped: {e}"));
                continue;
            }
        };
        match TarMetadata::parse(&content, &key) {
            Ok(metadata) => chains.entry((n.clone(), t0)).or_default().push(TarBackup {
                name: n,
                t0,
                level,
                t,
                metadata,
            }),
            Err(e) => warnings.push(format!("skipped: {e}")),
        }
    }
    warnings.sort();
    let chains = chains
        .into_iter()
        .map(|((name, t0), mut backups)| {
            backups.sort_by_key(|b| (b.level, b.t));
            Chain { name, t0, backups }
        })
        .collect();
    Ok(TarListing { chains, warnings })
}

/// The levels to restore, in order (0, 1, …): upstream's `--restore-from-date` rule (§7.2).
///
/// * The chain: the newest `T0` at or before `restore_from_date` (the newest chain without a
///   date).
/// * Its levels: those whose `T` is at or before the date (inclusive); the highest of them
///   sets how far to go, and every level from 0 to it must be there: a missing one is a
///   `NotFound` error naming the missing metadata key.
/// * Always-level chains hold several backups of one level (each a differential against the
///   level below). For each level the **newest backup at or before the date** is taken.
///   Upstream builds a `{level: backup}` map in directory-listing order, so which duplicate
///   it restores is arbitrary, and with a date between two duplicates the level can vanish
///   (§10.7): fixed here, deterministically.
///
/// `chains` are one name's chains ([`TarListing::chains_of`]); several names are refused.
pub fn select_for_restore(
    chains: &[Chain],
    restore_from_date: Option<Timestamp>,
) -> Result<Vec<TarBackup>> {
    let Some(first) = chains.first() else {
        return Err(Error::not_found("an upstream tar backup (no chain given)"));
    };
    if let Some(other) = chains.iter().find(|c| c.name != first.name) {
        return Err(Error::bad_input(
            "backup name",
            format!(
                "chains of several names were given ({} and {}): select one name first",
                first.name, other.name
            ),
        ));
    }
    let name = &first.name;
    let until = restore_from_date.map(|d| d.as_second());
    let chain = chains
        .iter()
        .filter(|c| until.is_none_or(|d| c.t0 <= d))
        .max_by_key(|c| c.t0)
        .ok_or_else(|| match restore_from_date {
            Some(d) => Error::not_found(format!(
                "an upstream tar backup of {name:?} at or before {d} (No matching backup name found; the oldest level 0 is at {})",
                Timestamp::from_second(chains.iter().map(|c| c.t0).min().unwrap_or(0))
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            )),
            None => Error::not_found(format!("an upstream tar backup of {name:?}")),
        })?;
    let Some(max) = chain
        .backups
        .iter()
        .filter(|b| until.is_none_or(|d| b.t <= d))
        .map(|b| b.level)
        .max()
    else {
        // Only possible when the chain's level 0 has a T after its T0 directory.
        return Err(Error::not_found(format!(
            "level 0 of the upstream tar chain {name}/{} at or before the date (key {})",
            chain.t0,
            metadata_key(name, chain.t0, 0, chain.t0)
        )));
    };
    let mut out = Vec::with_capacity(max as usize + 1);
    for level in 0..=max {
        match chain.newest_of_level(level, until) {
            Some(b) => out.push(b.clone()),
            None => {
                let present: Vec<String> = chain
                    .backups
                    .iter()
                    .map(|b| format!("{}_{}", b.level, b.t))
                    .collect();
                return Err(Error::not_found(format!(
                    "level {level} of the upstream tar chain {name}/{} (its metadata object {} is missing; level {max} needs every level below it; present: {})",
                    chain.t0,
                    format_args!("metadata/{ENGINE}/{name}/{}/{level}_<T>/metadata", chain.t0),
                    present.join(", ")
                )));
            }
        }
    }
    Ok(out)
}

/// What the next backup of a name is: its parent (the backup it is an increment of) and its
/// level. Without a parent it is a new level 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextBackup {
    /// The backup the new one continues: its `engine_metadata` is the starting snapshot.
    pub parent: Option<TarBackup>,
    /// The new backup's level: `parent.level + 1`, or 0.
    pub level: u32,
}

/// The parent and level of the next backup: upstream's `Storage.previous_backup` (§7.1).
///
/// * Not `incremental` (upstream's default!): always a new level 0.
/// * Otherwise the newest chain (largest `T0`); `highest` = its highest level, whose newest
///   backup is the candidate parent.
/// * `max_level` `M`: `M <= highest` starts a new chain.
/// * `always_level` `A`: `highest > A` starts a new chain; `highest == A` makes a new level `A`
///   against the newest level `A-1` (a differential).
/// * `restart_always_level_days` `D`: a new chain when `now` is more than `D` days after the
///   highest level's timestamp.
///
/// As upstream, a `max_level` or `always_level` of 0 and a `restart_always_level_days` of 0
/// mean "not set". `chains` are one name's chains.
pub fn previous_backup(
    chains: &[Chain],
    incremental: bool,
    max_level: Option<u32>,
    always_level: Option<u32>,
    restart_always_level_days: Option<f64>,
    now: Timestamp,
) -> NextBackup {
    let fresh = NextBackup {
        parent: None,
        level: 0,
    };
    if !incremental {
        return fresh;
    }
    let Some(chain) = chains.iter().max_by_key(|c| c.t0) else {
        return fresh;
    };
    let highest = chain.highest_level();
    let Some(top) = chain.newest_of_level(highest, None) else {
        return fresh;
    };
    let max_level = max_level.filter(|m| *m > 0);
    let always_level = always_level.filter(|a| *a > 0);
    if max_level.is_some_and(|m| m <= highest) {
        return fresh;
    }
    if always_level.is_some_and(|a| highest > a) {
        return fresh;
    }
    if let Some(days) = restart_always_level_days.filter(|d| *d > 0.0) {
        let expire = top.t as f64 + days * 86400.0;
        if now.as_second() as f64 > expire {
            return fresh;
        }
    }
    let parent = if always_level == Some(highest) {
        // highest >= 1 here: always_level is at least 1.
        match chain.newest_of_level(highest - 1, None) {
            Some(p) => p.clone(),
            None => return fresh,
        }
    } else {
        top.clone()
    };
    NextBackup {
        level: parent.level + 1,
        parent: Some(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{MemorySink, Payload, PutMode};

    fn meta() -> TarMetadata {
        TarMetadata {
            engine_name: "tar".into(),
            compression: Compression::Gzip,
            encryption: false,
        }
    }

    fn b(t0: i64, level: u32, t: i64) -> TarBackup {
        TarBackup {
            name: "h_n".into(),
            t0,
            level,
            t,
            metadata: meta(),
        }
    }

    fn chain(t0: i64, levels: &[(u32, i64)]) -> Chain {
        let mut backups: Vec<TarBackup> = levels.iter().map(|(l, t)| b(t0, *l, *t)).collect();
        backups.sort_by_key(|b| (b.level, b.t));
        Chain {
            name: "h_n".into(),
            t0,
            backups,
        }
    }

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn levels(v: &[TarBackup]) -> Vec<(u32, i64)> {
        v.iter().map(|b| (b.level, b.t)).collect()
    }

    #[test]
    fn metadata_parses_first_line_only_and_writes_upstreams_bytes() {
        let m = TarMetadata::parse(
            b"{\"engine_name\": \"tar\", \"compression\": \"bzip2\", \"encryption\": true}\ngarbage",
            "k",
        )
        .unwrap();
        assert_eq!(m.compression, Compression::Bzip2);
        assert!(m.encryption);
        assert_eq!(
            m.to_line(),
            "{\"engine_name\": \"tar\", \"compression\": \"bzip2\", \"encryption\": true}"
        );
        let e = TarMetadata::parse(
            b"{\"engine_name\": \"tar\", \"compression\": \"lz4\", \"encryption\": false}",
            "the/key",
        )
        .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Unsupported);
        assert!(e.to_string().contains("the/key"), "{e}");
        let e = TarMetadata::parse(b"not json", "the/key").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Corrupt);
        assert!(e.to_string().contains("the/key"), "{e}");
    }

    #[test]
    fn keys_round_trip() {
        let x = b(100, 2, 130);
        assert_eq!(x.metadata_key(), "metadata/tar/h_n/100/2_130/metadata");
        assert_eq!(x.data_key(), "data/tar/h_n/100/2_130/data");
        assert_eq!(
            x.engine_metadata_key(),
            "data/tar/h_n/100/2_130/engine_metadata"
        );
        assert_eq!(
            parse_metadata_key(&x.metadata_key()),
            Some(("h_n".into(), 100, 2, 130))
        );
        for junk in [
            "metadata/tar/h_n/100/2_130/other",
            "metadata/tar/h_n/1x0/2_130/metadata",
            "metadata/tar/h_n/100/2-130/metadata",
            "metadata/tar/h_n/100/_130/metadata",
            "metadata/tar/a/b/100/2_130/metadata",
            "metadata/tar/100/2_130/metadata",
            "metadata/rsync/h_n/100/2_130/metadata",
        ] {
            assert_eq!(parse_metadata_key(junk), None, "{junk}");
        }
        assert_eq!(backup_name("host", "web"), "host_web");
    }

    #[tokio::test]
    async fn list_groups_chains_and_reports_junk() {
        let sink = MemorySink::new("m");
        let put = |k: String, v: &'static [u8]| {
            let sink = &sink;
            async move {
                sink.put(&k, Payload::from(v.to_vec()), PutMode::Overwrite)
                    .await
                    .unwrap()
            }
        };
        let good = b"{\"engine_name\": \"tar\", \"compression\": \"gzip\", \"encryption\": false}";
        put(metadata_key("h_n", 10, 0, 10), good).await;
        put(metadata_key("h_n", 10, 1, 12), good).await;
        put(metadata_key("h_n", 20, 0, 20), good).await;
        put(metadata_key("h_other", 5, 0, 5), good).await;
        put(metadata_key("h_n", 10, 2, 14), b"{broken").await;
        put("metadata/tar/h_n/10/junk/metadata".into(), good).await;
        let l = list(&sink, Some("h_n")).await.unwrap();
        assert_eq!(l.chains.len(), 2);
        assert_eq!(levels(&l.chains[0].backups), vec![(0, 10), (1, 12)]);
        assert_eq!(l.chains[1].t0, 20);
        assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
        assert!(
            l.warnings
                .iter()
                .any(|w| w.contains("h_n/10/2_14/metadata"))
        );
        assert!(l.warnings.iter().any(|w| w.contains("junk")));
        let all = list(&sink, None).await.unwrap();
        assert_eq!(all.chains.len(), 3);
        assert_eq!(all.chains_of("h_other").len(), 1);
        // A missing level is named by select_for_restore.
        let mut c = l.chains_of("h_n");
        c[0].backups.push(b(10, 3, 16));
        let e = select_for_restore(&c[..1], None).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
        assert!(
            e.to_string().contains("metadata/tar/h_n/10/2_<T>/metadata"),
            "{e}"
        );
    }

    #[test]
    fn restore_selection_follows_dates() {
        let chains = vec![
            chain(100, &[(0, 100), (1, 110), (2, 120), (3, 130)]),
            chain(200, &[(0, 200), (1, 210)]),
        ];
        assert_eq!(
            levels(&select_for_restore(&chains, None).unwrap()),
            vec![(0, 200), (1, 210)]
        );
        // Every backup by its own date, and dates between backups.
        assert_eq!(
            levels(&select_for_restore(&chains, Some(ts(120))).unwrap()),
            vec![(0, 100), (1, 110), (2, 120)]
        );
        assert_eq!(
            levels(&select_for_restore(&chains, Some(ts(125))).unwrap()),
            vec![(0, 100), (1, 110), (2, 120)]
        );
        assert_eq!(
            levels(&select_for_restore(&chains, Some(ts(199))).unwrap()),
            vec![(0, 100), (1, 110), (2, 120), (3, 130)]
        );
        assert_eq!(
            levels(&select_for_restore(&chains, Some(ts(200))).unwrap()),
            vec![(0, 200)]
        );
        let e = select_for_restore(&chains, Some(ts(99))).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
        assert!(e.to_string().contains("h_n"), "{e}");
        assert_eq!(
            select_for_restore(&[], None).unwrap_err().kind(),
            crate::ErrorKind::NotFound
        );
    }

    #[test]
    fn always_level_duplicates_pick_the_newest_at_the_date() {
        // --always-level 1: 0, then two differentials against 0.
        let chains = vec![chain(100, &[(0, 100), (1, 110), (1, 120)])];
        assert_eq!(
            levels(&select_for_restore(&chains, None).unwrap()),
            vec![(0, 100), (1, 120)]
        );
        // Upstream (§10.7) can lose level 1 here; we take the one at or before the date.
        assert_eq!(
            levels(&select_for_restore(&chains, Some(ts(115))).unwrap()),
            vec![(0, 100), (1, 110)]
        );
    }

    #[test]
    fn missing_level_is_named() {
        let chains = vec![chain(100, &[(0, 100), (2, 120)])];
        let e = select_for_restore(&chains, None).unwrap_err();
        assert!(
            e.to_string()
                .contains("metadata/tar/h_n/100/1_<T>/metadata"),
            "{e}"
        );
        // Up to level 0 only: fine.
        assert_eq!(
            levels(&select_for_restore(&chains, Some(ts(110))).unwrap()),
            vec![(0, 100)]
        );
    }

    #[test]
    fn previous_backup_follows_upstream() {
        let now = ts(1000);
        let next = |c: &[Chain], inc, max, always, days| {
            let n = previous_backup(c, inc, max, always, days, now);
            (n.parent.map(|p| (p.level, p.t)), n.level)
        };
        let c = vec![chain(100, &[(0, 100), (1, 110)])];
        assert_eq!(next(&[], true, Some(3), None, None), (None, 0));
        assert_eq!(next(&c, false, Some(3), None, None), (None, 0));
        assert_eq!(next(&c, true, None, None, None), (Some((1, 110)), 2));
        assert_eq!(next(&c, true, Some(3), None, None), (Some((1, 110)), 2));
        assert_eq!(next(&c, true, Some(2), None, None), (Some((1, 110)), 2));
        assert_eq!(next(&c, true, Some(1), None, None), (None, 0));
        // Zero means "not set", as upstream's truthiness.
        assert_eq!(
            next(&c, true, Some(0), Some(0), Some(0.0)),
            (Some((1, 110)), 2)
        );
        // Always-level 1: level 1 again against level 0; above it, a new chain.
        let a = vec![chain(100, &[(0, 100), (1, 110), (1, 120)])];
        assert_eq!(next(&a, true, None, Some(1), None), (Some((0, 100)), 1));
        assert_eq!(next(&c, true, None, Some(2), None), (Some((1, 110)), 2));
        let deep = vec![chain(100, &[(0, 100), (1, 110), (2, 120)])];
        assert_eq!(next(&deep, true, None, Some(1), None), (None, 0));
        // From level 0 with always-level 1: level 1.
        let zero = vec![chain(100, &[(0, 100)])];
        assert_eq!(next(&zero, true, None, Some(1), None), (Some((0, 100)), 1));
        // Restart after D days past the highest level.
        let old = vec![chain(100, &[(0, 100), (1, 110)])];
        let later = ts(110 + 86400 + 1);
        let n = previous_backup(&old, true, None, Some(1), Some(1.0), later);
        assert_eq!((n.parent, n.level), (None, 0));
        let n = previous_backup(&old, true, None, Some(1), Some(1.0), ts(110 + 86400));
        assert_eq!(n.level, 1);
        // The newest chain is continued.
        let two = vec![chain(100, &[(0, 100), (1, 110)]), chain(200, &[(0, 200)])];
        assert_eq!(next(&two, true, Some(3), None, None), (Some((0, 200)), 1));
    }
}
