//! Restoring a lost or damaged `config` and its copies: [`repair_config`].
//!
//! The config comes from an intact source: the `config` or the copy (`config-copy/<id>`) of
//! any storage of the repository. Which repository is this one is settled by the key the
//! passphrase opens (its id must match), so a damaged config naming another id is never
//! mistaken for the right one. When no copy of that repository's config is left anywhere, an
//! encrypted repository's config is rebuilt around the key: the id comes from the key, the chunk
//! sizes and pack size from a damaged config that still decodes, or the defaults (then the
//! report says so: restores are unaffected, new backups deduplicate less well against the old
//! ones). An unencrypted repository keeps its master key only in its config, so without a copy
//! it cannot be rebuilt. An intact config is never overwritten; a damaged one is moved to
//! `quarantine/` before its place is written. Nothing is written when the passphrase opens no
//! key. The repository cannot be locked (a lock needs the config), so run it alone.

use std::sync::Arc;

use crate::chunker::ChunkerParams;
use crate::crypto::Passphrase;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::config::{Config, DEFAULT_PACK_SIZE, Encryption, FORMAT_NAME, FORMAT_VERSION};
use crate::repo::recover::{self, QUARANTINE_PREFIX, copy_key};
use crate::repo::unlock::scan_keys;
use crate::sink::{Payload, PutMode, Sink, SinkExt, Tee};

/// What `repair_config` did on one storage.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ConfigRepair {
    /// The storage.
    pub storage: String,
    /// What its `config` was: `intact`, `missing`, or `damaged: <why>`.
    pub config_was: String,
    /// What its copy `config-copy/<id>` was: `intact`, `missing`, or `damaged: <why>`.
    pub copy_was: String,
    /// Whether `config` was written.
    pub config_written: bool,
    /// Whether the copy was written.
    pub copy_written: bool,
    /// Damaged objects moved aside under `quarantine/` (their new keys).
    pub quarantined: Vec<String>,
    /// Why the storage could not be repaired.
    pub error: Option<String>,
}

/// What `repair_config` did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ConfigRepairReport {
    /// The repository's id.
    pub id: Id,
    /// Where the config written came from: `<storage>/config`, `<storage>/config-copy/<id>`,
    /// or `rebuilt from key <id>`.
    pub source: String,
    /// One entry per storage, in the order given.
    pub storages: Vec<ConfigRepair>,
    /// What could not be recovered exactly, and other things worth knowing.
    pub notes: Vec<String>,
}

impl ConfigRepairReport {
    /// Whether every storage now holds an intact config and copy.
    pub fn is_complete(&self) -> bool {
        self.storages.iter().all(|s| s.error.is_none())
    }

    /// Whether anything was written.
    pub fn wrote(&self) -> bool {
        self.storages
            .iter()
            .any(|s| s.config_written || s.copy_written)
    }
}

/// One config found, and where.
struct Found {
    config: Config,
    source: String,
}

/// Restores the config and its copy on every storage in `sinks` (replicas of one
/// repository); see the module documentation. `passphrase` is required for an encrypted
/// repository and refused for an unencrypted one.
pub async fn repair_config(
    sinks: Vec<Arc<dyn Sink>>,
    passphrase: Option<&Passphrase>,
) -> Result<ConfigRepairReport> {
    let tee = Tee::new(sinks)?;
    let mut found: Vec<Found> = Vec::new();
    let mut storages: Vec<ConfigRepair> = Vec::new();
    for i in 0..tee.len() {
        let member = tee.member(i);
        let name = member.describe();
        let mut s = ConfigRepair {
            storage: name.clone(),
            ..ConfigRepair::default()
        };
        match crate::repo::read_config(member.as_ref()).await {
            Ok(c) => found.push(Found {
                config: c,
                source: format!("{name}/config"),
            }),
            Err(Error::NotFound { .. } | Error::Corrupt { .. } | Error::Unsupported { .. }) => {}
            Err(e) => {
                tee.fail(i, &e);
                s.error = Some(format!("not repaired: {e}"));
            }
        }
        if s.error.is_none() {
            match recover::read_copies(member.as_ref()).await {
                Ok((copies, _)) => found.extend(copies.into_iter().map(|c| Found {
                    source: format!("{name}/{}", c.key),
                    config: c.config,
                })),
                Err(e) => {
                    tee.fail(i, &e);
                    s.error = Some(format!("not repaired: {e}"));
                }
            }
        }
        storages.push(s);
    }
    let mut notes = Vec::new();
    let chosen = choose(&tee, &found, passphrase, &mut notes).await?;
    let bytes = chosen.config.encode();
    for (i, s) in storages.iter_mut().enumerate() {
        if s.error.is_some() {
            continue;
        }
        let member = tee.member(i);
        if let Err(e) = repair_storage(member.as_ref(), &chosen.config, &bytes, s).await {
            s.error = Some(e.to_string());
        }
    }
    Ok(ConfigRepairReport {
        id: chosen.config.id,
        source: chosen.source,
        storages,
        notes,
    })
}

/// The repository's config: the one whose id the key the passphrase opens names (or, without
/// encryption, the only one found), or one rebuilt around that key.
async fn choose(
    tee: &Tee,
    found: &[Found],
    passphrase: Option<&Passphrase>,
    notes: &mut Vec<String>,
) -> Result<Found> {
    let what = tee.member(0).describe();
    if found.is_empty() && tee.list("keys/").await?.is_empty() {
        let mut part = None;
        for i in 0..tee.len() {
            if tee.live() & (1 << i) != 0 && part.is_none() {
                part = recover::holds_repository_parts(tee.member(i).as_ref()).await?;
            }
        }
        return Err(match part {
            None => Error::not_found(format!(
                "repository at {what} (no config, copy of it or key file on any storage given)"
            )),
            Some(p) => Error::corrupt(
                format!("repository {what}"),
                format!(
                    "no config, copy of it or key file is left on any storage given ({p} remains): an unencrypted repository keeps its master key only in its config, an encrypted one needs a key file, so the config cannot be rebuilt (give another storage holding a replica)"
                ),
            ),
        });
    }
    let mut ids: Vec<Id> = found.iter().map(|f| f.config.id).collect();
    ids.dedup();
    let Some(pass) = passphrase else {
        if found
            .iter()
            .any(|f| f.config.encryption == Encryption::Aes256Gcm)
            || (found.is_empty() && !tee.list("keys/").await?.is_empty())
        {
            return Err(Error::WrongKey {
                what: format!(
                    "repository {what} is encrypted: give its passphrase (--encrypt-pass-file)"
                ),
            });
        }
        let distinct: std::collections::BTreeSet<Id> = ids.iter().copied().collect();
        return match distinct.len() {
            1 => Ok(take(found, &ids[0])),
            0 => Err(Error::corrupt(
                format!("repository {what}"),
                "no config and no copy of it is left on any storage given: an unencrypted repository keeps its master key only there, so its config cannot be rebuilt (give another storage holding a replica)",
            )),
            _ => Err(Error::bad_input(
                "repositories",
                format!(
                    "the configs found name several repositories ({}): without encryption no key tells which is this one's; give the storages of one repository",
                    distinct
                        .iter()
                        .map(Id::short)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        };
    };
    if found
        .iter()
        .all(|f| f.config.encryption == Encryption::None)
        && !found.is_empty()
    {
        return Err(Error::bad_input(
            "encrypt_pass_file",
            format!("repository {what} is not encrypted, but a passphrase was given; leave it out"),
        ));
    }
    let scan = scan_keys(tee, &ids, pass).await?;
    if let Some((m, _)) = &scan.opened {
        return Ok(take(found, &m.repo_id));
    }
    let mut foreign: Vec<Id> = scan.foreign.iter().map(|(_, m)| m.repo_id).collect();
    foreign.sort_unstable();
    foreign.dedup();
    // A config that two sources agree on (a storage's config and its copy, or two storages)
    // is not damaged: a key naming another repository is then no reason to replace it.
    if let Some(sure) = ids
        .iter()
        .find(|id| found.iter().filter(|f| f.config.id == **id).count() > 1)
        && !foreign.is_empty()
    {
        let keys: Vec<&str> = scan.foreign.iter().map(|(k, _)| k.as_str()).collect();
        return Err(Error::WrongKey {
            what: format!(
                "no key of repository {} at {what} opens with the passphrase given; its config is confirmed by a copy, so {}, which opens but names another repository, is not its key (left by an init that lost a race); nothing was written",
                sure.short(),
                keys.join(", ")
            ),
        });
    }
    let [id] = foreign.as_slice() else {
        let first = ids.first().copied().unwrap_or_default();
        return Err(scan.error(&first, &what));
    };
    // The key opens, and no config or copy of its repository is left: rebuild it.
    let (key, _) = scan
        .foreign
        .iter()
        .find(|(_, m)| m.repo_id == *id)
        .expect("found above");
    let template = found
        .iter()
        .find(|f| f.config.encryption == Encryption::Aes256Gcm);
    let config = Config {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        id: *id,
        created: template.map_or_else(crate::time::now_rfc3339, |t| t.config.created.clone()),
        encryption: Encryption::Aes256Gcm,
        chunker: template.map_or_else(ChunkerParams::default, |t| t.config.chunker),
        pack_size: template.map_or(DEFAULT_PACK_SIZE, |t| t.config.pack_size),
        master: None,
    };
    match template {
        Some(t) => notes.push(format!(
            "no config or copy of repository {} is left: rebuilt around {key}, which the passphrase opens, taking the creation time, chunk sizes and pack size from {} (which names repository {}: damaged)",
            id.short(),
            t.source,
            t.config.id.short()
        )),
        None => notes.push(format!(
            "no config or copy of repository {} is left: rebuilt around {key}, which the passphrase opens; its chunk sizes and pack size could not be recovered and are the defaults: every snapshot restores as before, new backups deduplicate less well against the old ones",
            id.short()
        )),
    }
    Ok(Found {
        config,
        source: format!("rebuilt from {key}"),
    })
}

/// The config of repository `id` among `found`: a storage's own config first, then a copy.
fn take(found: &[Found], id: &Id) -> Found {
    let f = found
        .iter()
        .filter(|f| f.config.id == *id)
        .min_by_key(|f| f.source.contains("/config-copy/"))
        .expect("the id was found");
    Found {
        config: f.config.clone(),
        source: f.source.clone(),
    }
}

/// Writes `bytes` (the encoded `config`) as the config and its copy of `member`, where either
/// is missing or damaged, moving a damaged one to quarantine first.
async fn repair_storage(
    member: &dyn Sink,
    config: &Config,
    bytes: &[u8],
    out: &mut ConfigRepair,
) -> Result<()> {
    let name = member.describe();
    for key in ["config".to_string(), copy_key(&config.id)] {
        let state = match member.get_bytes(&key).await {
            Ok(data) => match Config::decode(&data, &format!("{name}/{key}")) {
                Ok(c) if c.id == config.id => None,
                // A config of another repository that its own copy confirms is not damaged: it
                // is another repository, never to be replaced.
                Ok(c)
                    if matches!(
                        recover::read_copy(member, &copy_key(&c.id)).await,
                        Ok(Some(copy)) if copy.config.id == c.id
                    ) =>
                {
                    return Err(Error::bad_input(
                        "repositories",
                        format!(
                            "{name} holds repository {}, confirmed by its own copy of the config: it is another repository, not a damaged config of {}; give only the storages of one repository",
                            c.id.short(),
                            config.id.short()
                        ),
                    ));
                }
                Ok(c) => Some((
                    Some(data),
                    format!(
                        "damaged: names repository {}, not {} which the key opens",
                        c.id.short(),
                        config.id.short()
                    ),
                )),
                // Written by a newer freezer: not ours to replace.
                Err(e @ Error::Unsupported { .. }) => return Err(e),
                Err(e) => Some((Some(data), format!("damaged: {e}"))),
            },
            Err(Error::NotFound { .. }) => Some((None, "missing".to_string())),
            Err(e) => return Err(e),
        };
        let was = match state {
            None => "intact".to_string(),
            Some((old, was)) => {
                let mode = if let Some(old) = old {
                    // Never deleted: moved aside, under a name no other copy can take.
                    let aside = format!("{QUARANTINE_PREFIX}{key}-{}", Id::of_stored(&old));
                    member
                        .put(&aside, Payload::from(old.to_vec()), PutMode::Overwrite)
                        .await?;
                    out.quarantined.push(aside);
                    PutMode::Overwrite
                } else {
                    PutMode::Create
                };
                match member.put(&key, Payload::from(bytes.to_vec()), mode).await {
                    Ok(()) => {}
                    Err(Error::AlreadyExists { .. }) => {
                        return Err(Error::AlreadyExists {
                            what: format!(
                                "{name}/{key} (written by someone else meanwhile; run `freezer repair config` again)"
                            ),
                        });
                    }
                    Err(e) => return Err(e),
                }
                if key == "config" {
                    out.config_written = true;
                } else {
                    out.copy_written = true;
                }
                was
            }
        };
        if key == "config" {
            out.config_was = was;
        } else {
            out.copy_was = was;
        }
    }
    Ok(())
}
