//! A repository as the bindings hold one: upstream's storage options and a passphrase, from
//! which each call makes its action (the options and the call's own, by upstream's names) and
//! its context. `freezer_py.Repository` and the C ABI's `freezer_repository` are this.

use serde_json::{Map, Value};

use super::{FreezerAction, RunContext, open_repository, sinks_of};
use crate::crypto::Passphrase;
use crate::repo::{InitOptions, InitReport, Repository};
use crate::{Error, Result};

/// A repository named by upstream's storage options (`container`, a storage URL there or
/// `storage`, `endpoint`, `storages`...) with the passphrase that opens it, given directly or
/// as `encrypt_pass_file`. Cheap to clone; opened afresh by each call.
#[derive(Clone)]
pub struct RepositoryOptions {
    options: Map<String, Value>,
    passphrase: Option<Passphrase>,
}

impl std::fmt::Debug for RepositoryOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The options may hold secrets (`secret_key`, `ssh_password`): only the container.
        f.debug_struct("RepositoryOptions")
            .field("container", &self.container())
            .field("encrypted", &self.passphrase.is_some())
            .finish_non_exhaustive()
    }
}

impl RepositoryOptions {
    /// Checks `options` (every name known, values well typed, at least one storage) and that
    /// a `passphrase` is not given beside `encrypt_pass_file`.
    pub fn new(options: Map<String, Value>, passphrase: Option<Passphrase>) -> Result<Self> {
        if passphrase.is_some() && options.contains_key("encrypt_pass_file") {
            return Err(Error::bad_input(
                "passphrase",
                "give a passphrase or encrypt_pass_file, not both",
            ));
        }
        let r = RepositoryOptions {
            options,
            passphrase,
        };
        let (action, _) = r.action(None, &Map::new(), false)?;
        if action.all_storages()?.is_empty() {
            return Err(Error::bad_input(
                "container",
                "no storage given: a folder, a storage URL (s3://bucket/prefix, swift://container, ssh://host/path), or container and storage",
            ));
        }
        Ok(r)
    }

    /// The options, by upstream's names.
    pub fn options(&self) -> &Map<String, Value> {
        &self.options
    }

    /// The container (a folder, a bucket and prefix, a URL without its query), for display.
    pub fn container(&self) -> &str {
        self.options
            .get("container")
            .and_then(Value::as_str)
            .map(|c| c.split('?').next().unwrap_or(""))
            .unwrap_or("")
    }

    /// The action `name` (none for the storage options alone) with these options and `extra`
    /// (whose values win), checked: with `full` every option as a job's would be
    /// ([`FreezerAction::validate_with`]), else the names only. Unknown names are refused.
    /// Returns the action and the checks' warnings.
    pub fn action(
        &self,
        name: Option<&str>,
        extra: &Map<String, Value>,
        full: bool,
    ) -> Result<(FreezerAction, Vec<String>)> {
        let mut map = self.options.clone();
        map.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(name) = name {
            map.insert("action".into(), name.into());
        }
        let action = FreezerAction::from_json(&Value::Object(map).to_string())?;
        let warnings = if full {
            action.validate_with(false)?
        } else {
            action.check_option_names(false)?
        };
        Ok((action, warnings))
    }

    /// `ctx` with this repository's passphrase.
    pub fn context(&self, mut ctx: RunContext) -> RunContext {
        ctx.passphrase = self.passphrase.clone();
        ctx
    }

    /// The passphrase: the one given, else the first line of `encrypt_pass_file`.
    pub fn passphrase(&self) -> Result<Option<Passphrase>> {
        match &self.passphrase {
            Some(p) => Ok(Some(p.clone())),
            None => super::passphrase_of(&self.action(None, &Map::new(), false)?.0),
        }
    }

    /// Creates the repository (on every storage the options name), encrypted when a
    /// passphrase is given.
    pub async fn init(&self, ctx: &RunContext) -> Result<InitReport> {
        let (action, _) = self.action(None, &Map::new(), false)?;
        let sinks = sinks_of(&action, &ctx.env)?;
        let opts = InitOptions::new(self.passphrase()?, ctx.actor.clone());
        Repository::init(sinks, opts).await
    }

    /// Opens the repository, waiting for locks as `ctx` says.
    pub async fn open(&self, ctx: &RunContext) -> Result<Repository> {
        let (action, _) = self.action(None, &Map::new(), false)?;
        open_repository(&action, &self.context(ctx.clone())).await
    }
}
