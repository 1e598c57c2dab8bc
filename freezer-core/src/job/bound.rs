//! A repository as the bindings hold one: upstream's storage options and a passphrase, from
//! which each call makes its action (the options and the call's own, by upstream's names) and
//! its context. `freezer_py.Repository` and the C ABI's `freezer_repository` are this.

use serde_json::{Map, Value};

use super::{FreezerAction, RunContext, open_repository, sinks_of};
use crate::crypto::{KdfParams, Passphrase};
use crate::repo::{InitOptions, InitReport, Repository};
use crate::{Error, Result};

/// A repository named by upstream's storage options (`container`, a storage URL there or
/// `storage`, `endpoint`, `storages`...) with the passphrase that opens it, given directly or
/// as `encrypt_pass_file`. Cheap to clone; opened afresh by each call.
#[derive(Clone)]
pub struct RepositoryOptions {
    options: Map<String, Value>,
    passphrase: Option<Passphrase>,
    /// What `init` makes, from [`INIT_OPTION_NAMES`] (given to [`RepositoryOptions::for_init`]).
    layout: Layout,
}

/// The options only `init` takes, beside the storage options: `pack_size` (MiB, 1 to 512, as
/// the CLI's `--pack-size`), `kdf_memory` (MiB), `kdf_iterations` and `kdf_parallelism` (the
/// Argon2id costs of the first key). Null means the default.
pub const INIT_OPTION_NAMES: &[&str] = &[
    "pack_size",
    "kdf_memory",
    "kdf_iterations",
    "kdf_parallelism",
];

/// The pack size and key costs a new repository gets.
#[derive(Clone, Copy, Debug)]
struct Layout {
    pack_size: u32,
    kdf: KdfParams,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            pack_size: crate::repo::config::DEFAULT_PACK_SIZE,
            kdf: KdfParams::default(),
        }
    }
}

impl Layout {
    /// Takes [`INIT_OPTION_NAMES`] out of `options`, checked.
    fn take_from(options: &mut Map<String, Value>) -> Result<Self> {
        let mut layout = Layout::default();
        let mut number =
            |name: &str, range: std::ops::RangeInclusive<u32>| -> Result<Option<u32>> {
                // null is "not given", as for upstream's options.
                let Some(v) = options.remove(name).filter(|v| !v.is_null()) else {
                    return Ok(None);
                };
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| range.contains(n))
                    .map(Some)
                    .ok_or_else(|| {
                        Error::bad_input(
                            name,
                            format!(
                                "{v} is not a whole number from {} to {}",
                                range.start(),
                                range.end()
                            ),
                        )
                    })
            };
        if let Some(mib) = number("pack_size", 1..=512)? {
            layout.pack_size = mib << 20;
        }
        if let Some(mib) = number("kdf_memory", 1..=1024)? {
            layout.kdf.memory_kib = mib << 10;
        }
        if let Some(n) = number("kdf_iterations", 1..=32)? {
            layout.kdf.iterations = n;
        }
        if let Some(n) = number("kdf_parallelism", 1..=16)? {
            layout.kdf.parallelism = n;
        }
        Ok(layout)
    }
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
    /// a `passphrase` is not given beside `encrypt_pass_file`. The options of `init` alone
    /// ([`INIT_OPTION_NAMES`]) are refused: [`RepositoryOptions::for_init`] takes them.
    pub fn new(options: Map<String, Value>, passphrase: Option<Passphrase>) -> Result<Self> {
        if let Some(name) = INIT_OPTION_NAMES.iter().find(|n| options.contains_key(**n)) {
            return Err(Error::bad_input(
                *name,
                "only init takes it: the repository's pack size and key costs are set when it is created",
            ));
        }
        Self::checked(options, passphrase, Layout::default())
    }

    /// As [`RepositoryOptions::new`], for [`RepositoryOptions::init`]: the options may also
    /// hold [`INIT_OPTION_NAMES`].
    pub fn for_init(
        mut options: Map<String, Value>,
        passphrase: Option<Passphrase>,
    ) -> Result<Self> {
        let layout = Layout::take_from(&mut options)?;
        Self::checked(options, passphrase, layout)
    }

    fn checked(
        options: Map<String, Value>,
        passphrase: Option<Passphrase>,
        layout: Layout,
    ) -> Result<Self> {
        if passphrase.is_some() && options.contains_key("encrypt_pass_file") {
            return Err(Error::bad_input(
                "passphrase",
                "give a passphrase or encrypt_pass_file, not both",
            ));
        }
        let r = RepositoryOptions {
            options,
            passphrase,
            layout,
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
    /// passphrase is given, with the pack size and key costs given to
    /// [`RepositoryOptions::for_init`] (else the defaults).
    pub async fn init(&self, ctx: &RunContext) -> Result<InitReport> {
        let (action, _) = self.action(None, &Map::new(), false)?;
        let sinks = sinks_of(&action, &ctx.env)?;
        let mut opts = InitOptions::new(self.passphrase()?, ctx.actor.clone());
        opts.pack_size = self.layout.pack_size;
        opts.kdf = self.layout.kdf;
        Repository::init(sinks, opts).await
    }

    /// Opens the repository, waiting for locks as `ctx` says.
    pub async fn open(&self, ctx: &RunContext) -> Result<Repository> {
        let (action, _) = self.action(None, &Map::new(), false)?;
        open_repository(&action, &self.context(ctx.clone())).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: Value) -> Map<String, Value> {
        pairs.as_object().unwrap().clone()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn init_takes_pack_size_and_key_costs() {
        let dir = tempfile::tempdir().unwrap();
        let place = dir.path().join("repo").display().to_string();
        let pass = Some(Passphrase::new("pw").unwrap());
        let r = RepositoryOptions::for_init(
            options(serde_json::json!({
                "container": place, "pack_size": 2, "kdf_memory": 1,
                "kdf_iterations": 2, "kdf_parallelism": 1,
            })),
            pass.clone(),
        )
        .unwrap();
        r.init(&RunContext::current()).await.unwrap();
        let opened =
            RepositoryOptions::new(options(serde_json::json!({ "container": place })), pass)
                .unwrap()
                .open(&RunContext::current())
                .await
                .unwrap();
        assert_eq!(opened.config().pack_size, 2 << 20);
        let keys = opened.keys().await.unwrap();
        assert_eq!(keys.len(), 1);
        let kdf = keys[0].1.kdf.params;
        assert_eq!(
            (kdf.memory_kib, kdf.iterations, kdf.parallelism),
            (1024, 2, 1)
        );
    }

    #[test]
    fn init_options_are_checked_and_only_init_takes_them() {
        let err = |v: Value, init: bool| {
            let map = options(v);
            let r = if init {
                RepositoryOptions::for_init(map, None)
            } else {
                RepositoryOptions::new(map, None)
            };
            r.unwrap_err().to_string()
        };
        let e = err(
            serde_json::json!({"container": "/tmp/x", "pack_size": 4}),
            false,
        );
        assert!(
            e.contains("pack_size") && e.contains("only init takes it"),
            "{e}"
        );
        for (name, bad) in [
            ("pack_size", serde_json::json!(0)),
            ("pack_size", serde_json::json!(513)),
            ("pack_size", serde_json::json!("8")),
            ("kdf_memory", serde_json::json!(2048)),
            ("kdf_iterations", serde_json::json!(-1)),
            ("kdf_parallelism", serde_json::json!(1.5)),
        ] {
            let mut m = options(serde_json::json!({"container": "/tmp/x"}));
            m.insert(name.into(), bad.clone());
            let e = err(Value::Object(m), true);
            assert!(
                e.contains(name) && e.contains("is not a whole number from"),
                "{name}={bad}: {e}"
            );
        }
    }
}
