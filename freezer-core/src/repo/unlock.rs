//! Opening the master key with a passphrase: which key file opens, and what to say when none
//! of this repository does. Its advice never deletes a key that something may depend on: a key
//! is called deletable only when another key of the repository opened beside it.

use crate::crypto::{MasterKey, Passphrase};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::sink::{Sink, Tee};

use super::config::KeyFile;
use super::read_named;

/// What trying the passphrase on the key files found.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyScan {
    /// The master key of one of the repositories asked for, and the id of its key file.
    pub opened: Option<(MasterKey, Id)>,
    /// Key files that open with the passphrase but name another repository, with what they
    /// hold.
    pub foreign: Vec<(String, MasterKey)>,
    /// Damaged key files.
    pub damaged: Vec<String>,
    /// Intact key files the passphrase does not open.
    pub intact: usize,
}

/// Tries `pass` on the key files of every storage of `tee` until one opens the master key of
/// one of the repositories `ids`. It costs one key derivation per key file tried.
pub(crate) async fn scan_keys(tee: &Tee, ids: &[Id], pass: &Passphrase) -> Result<KeyScan> {
    let mut scan = KeyScan::default();
    for meta in tee.list("keys/").await? {
        let Some(Ok(id)) = meta.key.rsplit('/').next().map(Id::from_hex) else {
            continue;
        };
        let data = match read_named(tee, &meta.key, tee.all()).await {
            Ok(Some((d, _))) => d,
            // Gone since the listing: a loser of a race to create the repository removed it.
            Ok(None) => continue,
            Err(e @ Error::Corrupt { .. }) => {
                scan.damaged.push(e.to_string());
                continue;
            }
            Err(e) => return Err(e),
        };
        // A damaged key file locks out only the passphrases it held: the others still open.
        let unwrapped = match KeyFile::decode(&data, &meta.key) {
            Ok(key) => key.unwrap(pass, &meta.key),
            Err(e) => Err(e),
        };
        match unwrapped {
            Ok(Some(m)) if !ids.contains(&m.repo_id) || m.enc_key.is_none() => {
                scan.foreign.push((meta.key, m));
            }
            Ok(Some(m)) => {
                scan.opened = Some((m, id));
                return Ok(scan);
            }
            Ok(None) => scan.intact += 1,
            Err(e @ Error::Corrupt { .. }) => scan.damaged.push(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    Ok(scan)
}

impl KeyScan {
    /// A note on the key files passed over on the way to the one that opened repository
    /// `id`: that key proves that nothing of this repository depends on them.
    pub fn stray_note(&self, id: &Id) -> Option<String> {
        let (_, key) = self.opened.as_ref()?;
        if self.foreign.is_empty() {
            return None;
        }
        Some(format!(
            "{} open(s) with the passphrase but names another repository ({}), while key {} of this repository {} opened too: left by an init that lost a race, nothing here depends on it, and it can be deleted",
            self.keys(),
            self.foreign_ids(),
            key.short(),
            id.short()
        ))
    }

    fn keys(&self) -> String {
        let k: Vec<&str> = self.foreign.iter().map(|(k, _)| k.as_str()).collect();
        k.join(", ")
    }

    fn foreign_ids(&self) -> String {
        let mut ids: Vec<String> = self
            .foreign
            .iter()
            .map(|(_, m)| m.repo_id.short())
            .collect();
        ids.dedup();
        ids.join(", ")
    }

    /// Why no key file opened repository `id` (at `what`). When key files open with the
    /// passphrase but name another repository, and no other key is there, the config is
    /// suspect, not those keys: the error says so and names `freezer repair config`.
    pub fn error(&self, id: &Id, what: &str) -> Error {
        let mut notes = Vec::new();
        if !self.damaged.is_empty() {
            notes.push(format!(
                "{} key file(s) are damaged: {}",
                self.damaged.len(),
                self.damaged.join("; ")
            ));
        }
        if !self.foreign.is_empty() && self.intact == 0 && self.damaged.is_empty() {
            // Every key opens, and none names the config's repository: either the config is
            // damaged (one changed character of its id is enough), or each key was left by an
            // init that lost a race to a repository with no key. Deleting them would lose the
            // repository in the first case.
            return Error::corrupt(
                format!("repository {what}"),
                format!(
                    "its config names repository {}, but every key file ({}) opens with the passphrase and names another repository ({}): the config looks damaged; run `freezer repair config`, which rebuilds it from a copy or from the key (do not delete the key)",
                    id.short(),
                    self.keys(),
                    self.foreign_ids()
                ),
            );
        }
        if !self.foreign.is_empty() {
            notes.push(format!(
                "{} opens with it but names another repository ({}): left by an init that lost a race, or the config is damaged (`freezer repair config` tells which)",
                self.keys(),
                self.foreign_ids()
            ));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!("; {}", notes.join("; "))
        };
        if self.intact == 0 && !notes.is_empty() {
            // No intact key of this repository at all: no passphrase can open it.
            return Error::corrupt(
                format!("repository {what}"),
                format!("no intact key of this repository is left{notes}"),
            );
        }
        if self.intact == 0 && self.foreign.is_empty() {
            return Error::corrupt(
                format!("repository {what}"),
                "encrypted, but it has no key file",
            );
        }
        Error::WrongKey {
            what: format!("no key of repository {what} opens with the passphrase given{notes}"),
        }
    }
}
