//! What keeps a repository whole when its `config` is lost or damaged: the copies of the config
//! (`config-copy/<repository id>`, one on every storage), and the look at what a place holds
//! that stops `init` from ever writing over a repository. Reads only; it never deletes.

use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::sink::{Sink, SinkExt, SinkMask, Tee};

use super::config::{Config, Encryption};
use super::read_config;
use super::unlock::KeyScan;

/// Where the copies of the config live.
pub const COPY_PREFIX: &str = "config-copy/";

/// Where objects that a repair could not read are moved aside, under their original key.
pub const QUARANTINE_PREFIX: &str = "quarantine/";

/// The key of the copy of the config of repository `id`.
pub fn copy_key(id: &Id) -> String {
    format!("{COPY_PREFIX}{id}")
}

/// A copy of the config that decodes and names the repository its key names.
#[derive(Clone, Debug)]
pub(crate) struct ConfigCopy {
    /// Its key, `config-copy/<id>`.
    pub key: String,
    /// What it says.
    pub config: Config,
}

/// The copies of the config on `sink`: those that decode and match their name, and the
/// problems of the others. A storage that does not exist yet holds none.
pub(crate) async fn read_copies(sink: &dyn Sink) -> Result<(Vec<ConfigCopy>, Vec<String>)> {
    let list = match sink.list(COPY_PREFIX).await {
        Ok(l) => l,
        Err(Error::NotFound { .. }) => return Ok((vec![], vec![])),
        Err(e) => return Err(e),
    };
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for meta in list {
        match read_copy(sink, &meta.key).await {
            Ok(Some(c)) => good.push(c),
            Ok(None) => {}
            Err(e @ (Error::Corrupt { .. } | Error::Unsupported { .. })) => {
                bad.push(e.to_string());
            }
            Err(e) => return Err(e),
        }
    }
    Ok((good, bad))
}

/// Reads the copy at `key`: `None` when it is not there.
pub(crate) async fn read_copy(sink: &dyn Sink, key: &str) -> Result<Option<ConfigCopy>> {
    let what = format!("{}/{key}", sink.describe());
    let data = match sink.get_bytes(key).await {
        Ok(d) => d,
        Err(Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let config = Config::decode(&data, &what)?;
    if copy_key(&config.id) != key {
        return Err(Error::corrupt(
            what,
            format!("names repository {}, not the one in its name", config.id),
        ));
    }
    Ok(Some(ConfigCopy {
        key: key.to_string(),
        config,
    }))
}

/// Whether `key` has the shape of an object of a repository (what `init` writes, backups
/// write, or a repair moves aside). Other programs' files (upstream Freezer's `data/tar/...`)
/// do not.
fn is_repository_part(key: &str) -> bool {
    let hex = |s: &str| Id::from_hex(s).is_ok();
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        ["config"] => true,
        ["config-copy" | "keys" | "index" | "snapshots" | "locks", id] => hex(id),
        ["data", pre, id] => hex(id) && id.starts_with(pre) && pre.len() == 2,
        ["quarantine", ..] => true,
        _ => false,
    }
}

/// Who makes a repository in a place, and so what it tolerates there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Maker {
    /// `freezer init`: only an empty place.
    Init,
    /// A job's first backup: an empty place, or one holding only the key files of another
    /// node creating the same repository at this moment.
    FirstBackup,
}

/// Refuses unless `sink` (which holds no `config`) is an empty place for a new repository,
/// naming what it found. A storage that does not exist yet is empty.
pub(crate) async fn refuse_unless_empty(sink: &dyn Sink, maker: Maker) -> Result<()> {
    let held = match sink.list("").await {
        Err(Error::NotFound { .. }) => Vec::new(),
        r => r?,
    };
    let found: Vec<String> = held
        .into_iter()
        .map(|m| m.key)
        .filter(|k| !super::is_upstream_key(k))
        .filter(|k| !(maker == Maker::FirstBackup && k.starts_with("keys/")))
        .collect();
    let Some(first) = found.first() else {
        return Ok(());
    };
    // Another node may have created it since the look for its config: its files are no
    // reason to refuse.
    if maker == Maker::FirstBackup && sink.exists("config").await.unwrap_or(false) {
        return Ok(());
    }
    let parts: Vec<&String> = found.iter().filter(|k| is_repository_part(k)).collect();
    let (who, also) = match maker {
        Maker::Init => ("init makes a repository only where nothing is", ""),
        Maker::FirstBackup => (
            "a backup creates its repository only where nothing is",
            ", as init does",
        ),
    };
    let why = if let Some(part) = parts.first() {
        format!(
            "{} holds no config but {} object(s) of a repository ({part} among them): {who}, never over a repository; if its config was lost or damaged, `freezer repair config` restores it",
            sink.describe(),
            parts.len(),
        )
    } else {
        format!(
            "{} holds no repository but {} other object(s) ({first} among them): {who}{also}; give an empty folder or container",
            sink.describe(),
            found.len(),
        )
    };
    Err(Error::bad_input("container", why))
}

/// Whether `sink` holds any object of a repository (it lost its config, it is no new place).
pub(crate) async fn holds_repository_parts(sink: &dyn Sink) -> Result<Option<String>> {
    let held = match sink.list("").await {
        Err(Error::NotFound { .. }) => return Ok(None),
        r => r?,
    };
    Ok(held
        .into_iter()
        .map(|m| m.key)
        .find(|k| is_repository_part(k) && !k.starts_with("keys/")))
}

/// The configs the storages of a tee hold (each its own, or its copy when its own is missing or
/// damaged), before the key says which is the repository's.
#[derive(Debug)]
pub(crate) struct FoundConfig {
    /// Per storage that answered: its config, and whether it came from a copy.
    per: Vec<(usize, Config, bool)>,
    /// Configs found elsewhere: the copy that a key pointed to.
    extra: Vec<Config>,
    /// Storages whose own config was not used.
    fallback: SinkMask,
    /// The storages' names.
    names: Vec<String>,
    /// What was found missing or damaged, and what was read instead.
    pub warnings: Vec<String>,
}

/// Reads the config of every storage of `tee`, falling back to its copy when it is missing or
/// damaged, and to the other storages' when both are. Fails when no storage has one, and with
/// `NotFound` when a storage holds nothing of a repository (an empty storage added to a job
/// becomes a replica). Storages that cannot be reached are left out of the tee.
pub(crate) async fn find_config(tee: &Tee) -> Result<FoundConfig> {
    let mut found = FoundConfig {
        per: vec![],
        extra: vec![],
        fallback: 0,
        names: (0..tee.len()).map(|i| tee.member(i).describe()).collect(),
        warnings: vec![],
    };
    let mut lost: Vec<(usize, Error)> = Vec::new();
    for i in 0..tee.len() {
        let member = tee.member(i);
        match member_config(member.as_ref()).await {
            Ok((c, note)) => {
                if let Some(n) = &note {
                    found.warnings.push(n.clone());
                    found.fallback |= 1 << i;
                }
                found.per.push((i, c, note.is_some()));
            }
            Err(e @ (Error::NotFound { .. } | Error::Corrupt { .. })) => lost.push((i, e)),
            Err(e @ Error::Unsupported { .. }) => return Err(e),
            Err(e) => tee.fail(i, &e),
        }
    }
    if found.per.is_empty() {
        if let Some(pos) = lost
            .iter()
            .position(|(_, e)| matches!(e, Error::Corrupt { .. }))
        {
            return Err(lost.swap_remove(pos).1);
        }
        if let Some((_, e)) = lost.into_iter().next() {
            return Err(e);
        }
        let reasons: Vec<String> = tee
            .status()
            .iter()
            .filter_map(|s| s.error.clone())
            .collect();
        return Err(Error::io(
            "no storage of the repository answered",
            std::io::Error::other(reasons.join("; ")),
        ));
    }
    let source = found.names[found.per[0].0].clone();
    for (i, e) in lost {
        if matches!(e, Error::NotFound { .. }) {
            // Empty: a storage to make a replica on, not one that lost its config.
            return Err(e);
        }
        found.warnings.push(format!(
            "{e}; the config of {source} is used instead: run `freezer repair config` to restore it"
        ));
        found.fallback |= 1 << i;
    }
    Ok(found)
}

impl FoundConfig {
    /// The config of the first storage that answered.
    pub fn first(&self) -> &Config {
        &self.per[0].1
    }

    /// The configs found, one per repository id.
    pub fn candidates(&self) -> Vec<&Config> {
        let mut out: Vec<&Config> = Vec::new();
        for c in self.per.iter().map(|(_, c, _)| c).chain(&self.extra) {
            if !out.iter().any(|o| o.id == c.id) {
                out.push(c);
            }
        }
        out
    }

    /// Fails when the storages name different repositories (without a key to tell which is
    /// damaged).
    pub fn agreed(&self) -> Result<()> {
        let first = self.first();
        match self.per.iter().find(|(_, c, _)| c.id != first.id) {
            None => Ok(()),
            Some((i, c, _)) => Err(Error::bad_input(
                "repositories",
                format!(
                    "{} holds repository {}, not {} like the others; one backup can only go to replicas of one repository",
                    self.names[*i],
                    c.id.short(),
                    first.id.short()
                ),
            )),
        }
    }

    /// Adds a config found elsewhere.
    pub fn add(&mut self, c: Config) {
        self.extra.push(c);
    }

    /// The config of repository `id` (the one the key opened), noting in `warnings` each
    /// storage whose config names another and is damaged: the storage holds a copy of the
    /// config of `id`, none of its own. A storage that holds a copy of its own config, or no
    /// copy at all, holds another repository: that fails, as storages of two repositories
    /// cannot be used as one.
    pub async fn settle(
        &mut self,
        tee: &Tee,
        id: &Id,
        warnings: &mut Vec<String>,
    ) -> Result<Config> {
        let chosen = self
            .candidates()
            .into_iter()
            .find(|c| c.id == *id)
            .unwrap_or_else(|| self.first())
            .clone();
        for (i, c, copy) in &self.per {
            if c.id == chosen.id {
                continue;
            }
            let member = tee.member(*i);
            let ours = read_copy(member.as_ref(), &copy_key(&chosen.id)).await;
            let theirs = read_copy(member.as_ref(), &copy_key(&c.id)).await;
            if !matches!(ours, Ok(Some(_))) || matches!(theirs, Ok(Some(_))) {
                // Its own copy confirms its config: another repository, not a damaged config.
                let hint = if matches!(theirs, Ok(Some(_))) {
                    ""
                } else {
                    " (if its config is damaged, `freezer repair config` with all of them restores it)"
                };
                return Err(Error::bad_input(
                    "repositories",
                    format!(
                        "{} holds repository {}, not {} like the others; one backup can only go to replicas of one repository{hint}",
                        self.names[*i],
                        c.id.short(),
                        chosen.id.short()
                    ),
                ));
            }
            let what = if *copy {
                "the copy of the config"
            } else {
                "config"
            };
            warnings.push(format!(
                "{what} on {} names repository {}, but the key file the passphrase opens and the copy there name {}: it is damaged and was passed over; run `freezer repair config` to restore it",
                self.names[*i],
                c.id.short(),
                chosen.id.short()
            ));
            self.fallback |= 1 << i;
        }
        Ok(chosen)
    }

    /// The storages whose own config was not used.
    pub fn fallback(&self) -> SinkMask {
        self.fallback
    }
}

/// The config of one storage, or its copy when it is missing or damaged (with a note saying
/// so). `NotFound` when the storage holds nothing of a repository.
async fn member_config(member: &dyn Sink) -> Result<(Config, Option<String>)> {
    let e = match read_config(member).await {
        Ok(c) => return Ok((c, None)),
        Err(e @ (Error::NotFound { .. } | Error::Corrupt { .. })) => e,
        Err(e) => return Err(e),
    };
    let name = member.describe();
    let (mut copies, bad) = read_copies(member).await?;
    let lost = match &e {
        Error::NotFound { .. } => format!("{name}/config is missing"),
        e => e.to_string(),
    };
    let bad = if bad.is_empty() {
        String::new()
    } else {
        format!(" ({})", bad.join("; "))
    };
    match copies.len() {
        1 => {
            let copy = copies.remove(0);
            let note = format!(
                "{lost}; its copy {name}/{} was read instead{bad}: run `freezer repair config` to restore it",
                copy.key
            );
            Ok((copy.config, Some(note)))
        }
        0 => match e {
            Error::NotFound { .. } => match holds_repository_parts(member).await? {
                // Written since it was read: a creator that won a race writes its config last.
                Some(part) if part == "config" => Ok((read_config(member).await?, None)),
                Some(part) => Err(Error::corrupt(
                    format!("{name}/config"),
                    format!(
                        "missing, though the storage holds objects of a repository ({part} among them) and no intact copy of its config{bad}: run `freezer repair config` to restore it (`freezer init` would refuse)"
                    ),
                )),
                None => Err(e),
            },
            Error::Corrupt { what, detail } => Err(Error::Corrupt {
                what,
                detail: format!(
                    "{detail}{bad}; no intact copy of it is on that storage: run `freezer repair config` to restore it"
                ),
            }),
            e => Err(e),
        },
        _ => {
            let ids: Vec<String> = copies.iter().map(|c| c.config.id.short()).collect();
            Err(Error::corrupt(
                format!("{name}/config"),
                format!(
                    "{lost}, and its copies name several repositories ({}): run `freezer repair config`, which tells them apart with the passphrase",
                    ids.join(", ")
                ),
            ))
        }
    }
}

/// When the passphrase opened no key of the configs found but keys of another repository,
/// looks for a copy of that repository's config on each live storage: found, the config is
/// the damaged one, and the copy, the key and the key's id are returned.
pub(crate) async fn config_of_key(
    tee: &Tee,
    config: &Config,
    scan: &KeyScan,
) -> Result<Option<(MasterKey, Id, Config)>> {
    for (key, m) in &scan.foreign {
        let Some(Ok(key_id)) = key.rsplit('/').next().map(Id::from_hex) else {
            continue;
        };
        for i in 0..tee.len() {
            if tee.live() & (1 << i) == 0 {
                continue;
            }
            let copy = match read_copy(tee.member(i).as_ref(), &copy_key(&m.repo_id)).await {
                Ok(c) => c,
                Err(Error::Corrupt { .. } | Error::Unsupported { .. }) => None,
                Err(e) => return Err(e),
            };
            if let Some(c) = copy
                && c.config.encryption == Encryption::Aes256Gcm
                && c.config.id != config.id
                && m.enc_key.is_some()
            {
                return Ok(Some((m.clone(), key_id, c.config)));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_parts_are_told_from_other_files() {
        let id = Id::of_stored(b"x").to_string();
        assert!(is_repository_part("config"));
        assert!(is_repository_part(&format!("keys/{id}")));
        assert!(is_repository_part(&format!("data/{}/{id}", &id[..2])));
        assert!(is_repository_part(&format!("quarantine/index/{id}")));
        assert!(!is_repository_part(&format!("data/zz/{id}")));
        assert!(!is_repository_part(
            "data/tar/node1_web/1700000000/0_1700000000/data"
        ));
        assert!(!is_repository_part("notes.txt"));
        assert!(!is_repository_part("index/not-hex"));
        // Upstream's layout, which a repository may sit beside: only its engines' folders.
        use super::super::is_upstream_key;
        assert!(is_upstream_key(
            "data/tar/node1_web/1700000000/0_1700000000/data"
        ));
        assert!(is_upstream_key("metadata/tar/node1_web/1/0_1/metadata"));
        assert!(!is_upstream_key(&format!("data/{}/{id}", &id[..2])));
        assert!(!is_upstream_key("data/zz/stray"));
        assert!(!is_upstream_key("metadata"));
    }

    use std::sync::Arc;

    /// A storage whose config a racing creator writes just after the first read missed it.
    #[derive(Debug)]
    struct LateConfig {
        inner: crate::sink::MemorySink,
        missed: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl Sink for LateConfig {
        fn describe(&self) -> String {
            "late".into()
        }
        async fn put(
            &self,
            key: &str,
            p: crate::sink::Payload,
            m: crate::sink::PutMode,
        ) -> Result<()> {
            self.inner.put(key, p, m).await
        }
        async fn get(
            &self,
            key: &str,
            range: Option<std::ops::Range<u64>>,
        ) -> Result<crate::sink::GetBody> {
            if key == "config" && !self.missed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return Err(Error::not_found(key));
            }
            self.inner.get(key, range).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<crate::sink::ObjectMeta>> {
            // The copy is written after the config: not there yet.
            let mut all = self.inner.list(prefix).await?;
            all.retain(|m| !m.key.starts_with("config-copy/"));
            Ok(all)
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key).await
        }
        async fn head(&self, key: &str) -> Result<crate::sink::ObjectMeta> {
            if key.starts_with("config-copy/") {
                return Err(Error::not_found(key));
            }
            self.inner.head(key).await
        }
    }

    #[tokio::test]
    async fn a_config_written_by_a_racing_creator_is_read_not_called_missing() {
        let inner = crate::sink::MemorySink::new("late");
        let actor = crate::repo::Actor {
            hostname: "n".into(),
            username: "u".into(),
        };
        let sinks: Vec<Arc<dyn Sink>> = vec![Arc::new(inner.clone())];
        crate::repo::Repository::init(sinks, crate::repo::InitOptions::new(None, actor))
            .await
            .unwrap();
        let late = LateConfig {
            inner,
            missed: false.into(),
        };
        let (config, note) = member_config(&late).await.unwrap();
        assert!(note.is_none(), "{note:?}");
        assert_eq!(config.id, read_config(&late).await.unwrap().id);
        assert!(
            late.missed.load(std::sync::atomic::Ordering::SeqCst),
            "the first read missed it"
        );
    }
}
