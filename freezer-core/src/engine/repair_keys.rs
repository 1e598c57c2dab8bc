//! Mending key files: [`repair_keys`].
//!
//! A key file is named by the hash of its bytes, so a damaged copy is recognised without any
//! key. On every live storage, each key file of the repository (the union of what the storages
//! list under `keys/`) is made whole:
//! - a damaged copy with an intact copy on another storage is moved to `quarantine/keys/<id>`
//!   and the intact bytes are written in its place;
//! - a damaged copy with no intact copy anywhere is moved to `quarantine/keys/<id>`: it opens
//!   nothing, and the passphrases it held need a new key (`freezer key add`, opened with another
//!   passphrase);
//! - a key file missing from a storage that another storage holds intact is copied there, so
//!   that each storage opens on its own.
//!
//! Only provable damage (bytes that do not match the name) is moved aside: a key file that
//! matches its name is never touched, even one this build cannot decode. Repair needs a
//! repository that opened, so an intact key the passphrase opens exists and is never moved:
//! a repository is never left without a key. It takes an exclusive lock.

use std::collections::BTreeMap;

use super::repair::quarantine;
use crate::error::Result;
use crate::id::Id;
use crate::repo::{Actor, Repository};
use crate::sink::{Payload, PutMode, SinkExt};

/// What [`repair_keys`] did on one storage.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StorageKeysRepair {
    /// The storage.
    pub storage: String,
    /// Damaged key files written back from an intact copy on another storage.
    pub restored: Vec<String>,
    /// Key files copied from another storage where they were missing.
    pub copied: Vec<String>,
    /// Damaged key files moved aside, by their new keys (`quarantine/keys/<id>`).
    pub quarantined: Vec<String>,
    /// Why this storage could not be repaired.
    pub error: Option<String>,
}

/// What [`repair_keys`] did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct KeysRepairReport {
    /// Per storage.
    pub storages: Vec<StorageKeysRepair>,
    /// Key files of which no storage holds an intact copy: the passphrases they held no longer
    /// open the repository until `freezer key add` gives them a new key.
    pub lost: Vec<String>,
    /// Warnings (a stale lock taken over, a lock that could not be removed).
    pub warnings: Vec<String>,
}

impl KeysRepairReport {
    /// Whether every storage was repaired.
    pub fn is_complete(&self) -> bool {
        self.storages.iter().all(|s| s.error.is_none())
    }

    /// Whether anything was written or moved.
    pub fn changed(&self) -> bool {
        self.storages
            .iter()
            .any(|s| !s.restored.is_empty() || !s.copied.is_empty() || !s.quarantined.is_empty())
    }
}

/// Mends the key files of every live storage; see the module documentation.
pub async fn repair_keys(repo: &Repository, actor: &Actor) -> Result<KeysRepairReport> {
    let lock = repo.lock(true, "repair-keys", actor).await?;
    let mut report = KeysRepairReport {
        warnings: lock.notes.clone(),
        ..KeysRepairReport::default()
    };
    let res = repair(repo, &mut report).await;
    let released = lock.release().await;
    res?;
    if let Err(e) = released {
        report
            .warnings
            .push(format!("could not remove the lock: {e}"));
    }
    Ok(report)
}

/// One storage's copy of a key file.
enum Copy {
    Intact(bytes::Bytes),
    Damaged,
    Missing,
    Unreadable(String),
}

async fn repair(repo: &Repository, report: &mut KeysRepairReport) -> Result<()> {
    let tee = repo.tee();
    let live: Vec<usize> = (0..tee.len())
        .filter(|i| tee.live() & (1 << i) != 0)
        .collect();
    // Every key file any live storage lists, with each storage's copy.
    let mut copies: BTreeMap<String, Vec<(usize, Copy)>> = BTreeMap::new();
    let mut failed: BTreeMap<usize, String> = BTreeMap::new();
    for &i in &live {
        match tee.member(i).list("keys/").await {
            Ok(list) => {
                for meta in list {
                    if meta
                        .key
                        .rsplit('/')
                        .next()
                        .and_then(|h| Id::from_hex(h).ok())
                        .is_some()
                    {
                        copies.entry(meta.key).or_default();
                    }
                }
            }
            Err(e) => {
                failed.insert(i, e.to_string());
            }
        }
    }
    for (key, found) in copies.iter_mut() {
        let id = Id::from_hex(key.rsplit('/').next().unwrap_or_default())?;
        for &i in &live {
            if failed.contains_key(&i) {
                continue;
            }
            let copy = match tee.member(i).get_bytes(key).await {
                Ok(data) if Id::of_stored(&data) == id => Copy::Intact(data),
                Ok(_) => Copy::Damaged,
                Err(crate::Error::NotFound { .. }) => Copy::Missing,
                Err(e) => Copy::Unreadable(e.to_string()),
            };
            found.push((i, copy));
        }
    }
    for &i in &live {
        let member = tee.member(i);
        let mut done = StorageKeysRepair {
            storage: member.describe(),
            error: failed.get(&i).map(|e| format!("not repaired: {e}")),
            ..StorageKeysRepair::default()
        };
        if done.error.is_none() {
            for (key, found) in &copies {
                let intact = found.iter().find_map(|(_, c)| match c {
                    Copy::Intact(d) => Some(d.clone()),
                    _ => None,
                });
                let Some((_, mine)) = found.iter().find(|(j, _)| *j == i) else {
                    continue;
                };
                let step = match (mine, &intact) {
                    (Copy::Damaged, Some(good)) => match quarantine(member.as_ref(), key).await {
                        Ok(aside) => {
                            done.quarantined.push(aside);
                            member
                                .put(key, Payload::from(good.to_vec()), PutMode::Overwrite)
                                .await
                                .map(|()| done.restored.push(key.clone()))
                        }
                        Err(e) => Err(e),
                    },
                    (Copy::Damaged, None) => quarantine(member.as_ref(), key)
                        .await
                        .map(|aside| done.quarantined.push(aside)),
                    (Copy::Missing, Some(good)) => member
                        .put(key, Payload::from(good.to_vec()), PutMode::Create)
                        .await
                        .map(|()| done.copied.push(key.clone())),
                    (Copy::Unreadable(e), _) => {
                        done.error = Some(format!("{key}: {e}"));
                        Ok(())
                    }
                    _ => Ok(()),
                };
                if let Err(e) = step {
                    done.error = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(e) = &done.error {
            tee.fail(
                i,
                &crate::Error::io(done.storage.clone(), std::io::Error::other(e.clone())),
            );
        }
        report.storages.push(done);
    }
    report.lost = copies
        .iter()
        .filter(|(_, found)| {
            !found.is_empty() && !found.iter().any(|(_, c)| matches!(c, Copy::Intact(_)))
        })
        .map(|(k, _)| k.clone())
        .collect();
    Ok(())
}
