//! The native repository: format v1 (docs/FORMAT.md) on one or several storages.
//!
//! A repository lives on a [`Tee`] of one or more sinks; every member holds a full copy with
//! the same config and keys. Reads come from any member that holds the object; writes go to
//! the members that need them. This module owns the format: nothing else encodes or decodes a
//! stored byte. It never prints and never reads the environment.

pub mod config;
pub mod damaged;
pub mod index;
pub mod lock;
pub mod object;
pub mod pack;
pub mod recover;
pub mod snapshot;
pub mod tree;
pub(crate) mod unlock;
mod wire;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use self::config::{Config, DEFAULT_PACK_SIZE, Encryption, FORMAT_NAME, FORMAT_VERSION, KeyFile};
use self::index::{Index, IndexFile};
use self::pack::{BlobType, FinishedPack, PackedBlob};
use self::snapshot::Snapshot;
use self::tree::Tree;
use crate::chunker::{Chunker, ChunkerParams};
use crate::crypto::{Crypto, KdfParams, MasterKey, Passphrase};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::sink::{Payload, PutMode, Sink, SinkExt, SinkMask, SinkStatus, Tee};

/// The key of a pack on storage.
pub fn pack_key(id: &Id) -> String {
    let h = id.to_hex();
    format!("data/{}/{h}", &h[..2])
}

/// Whether `key` belongs to upstream Freezer's own layout (`metadata/<engine>/...`,
/// `data/<engine>/...`, docs/UPSTREAM-TAR.md), which a repository may share a container with:
/// an operator switching engines keeps the container and its older backups. Such objects are
/// never a repository's: they are not listed as stray packs, never deleted, and do not stop a
/// repository being made beside them.
pub fn is_upstream_key(key: &str) -> bool {
    // Upstream's engines (`freezer/engine/*`): only their folders, never a stray file elsewhere.
    const ENGINES: &[&str] = &["tar", "rsync", "rsyncv2", "nova", "osbrick", "glance"];
    let mut parts = key.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("metadata" | "data"), Some(engine), Some(_)) => ENGINES.contains(&engine),
        _ => false,
    }
}

/// Who is acting: recorded in keys, locks and snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// The host name.
    pub hostname: String,
    /// The user name.
    pub username: String,
}

impl Actor {
    /// This process's host and user, as the operating system reports them.
    pub fn current() -> Actor {
        let hostname = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        let uid = rustix::process::getuid().as_raw();
        let username = std::fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|p| {
                p.lines().find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
                })
            })
            .unwrap_or_else(|| uid.to_string());
        Actor { hostname, username }
    }
}

/// How to create a repository.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// The passphrase; `None` makes a repository without encryption.
    pub passphrase: Option<Passphrase>,
    /// Argon2id costs of the first key.
    pub kdf: KdfParams,
    /// Chunk size limits.
    pub chunker: ChunkerParams,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Who creates it.
    pub actor: Actor,
}

impl InitOptions {
    /// Defaults for `actor`, with or without a passphrase.
    pub fn new(passphrase: Option<Passphrase>, actor: Actor) -> Self {
        InitOptions {
            passphrase,
            kdf: KdfParams::default(),
            chunker: ChunkerParams::default(),
            pack_size: DEFAULT_PACK_SIZE,
            actor,
        }
    }
}

/// What `init` did on each storage.
#[derive(Clone, Debug, serde::Serialize)]
pub struct InitReport {
    /// The repository's id.
    pub id: Id,
    /// Storages where the repository was created.
    pub created: Vec<String>,
    /// Storages that already held it (when adding replicas).
    pub existing: Vec<String>,
}

/// An open repository.
#[derive(Debug)]
pub struct Repository {
    tee: Arc<Tee>,
    config: Config,
    crypto: Crypto,
    chunker: Chunker,
    key_id: Option<Id>,
    index: Arc<Index>,
    warnings: Vec<String>,
    lock_wait: std::time::Duration,
    /// Storages whose own `config` was missing or damaged when the repository was opened (it
    /// came from a copy or another storage): [`Repository::confirm_config`] passes them over.
    unconfirmed: SinkMask,
    /// Write no lock ([`Repository::set_no_lock`]).
    no_lock: bool,
}

pub(crate) async fn read_config(sink: &dyn Sink) -> Result<Config> {
    let what = format!("{}/config", sink.describe());
    let data = sink.get_bytes("config").await.map_err(|e| match e {
        Error::NotFound { .. } => Error::not_found(format!(
            "repository at {} (no config; create a repository there first with init)",
            sink.describe()
        )),
        e => e,
    })?;
    Config::decode(&data, &what)
}

impl Repository {
    /// Creates a repository on every storage in `sinks`. When some of them already hold a
    /// repository, the others become replicas of it (same id, config and keys; the passphrase
    /// must open it); when all do, this fails with `AlreadyExists`. A storage without a
    /// config must be empty: one holding anything (a repository that lost its config, other
    /// files) is refused with `BadInput` naming what it holds, and nothing is written anywhere.
    pub async fn init(sinks: Vec<Arc<dyn Sink>>, opts: InitOptions) -> Result<InitReport> {
        Repository::create(sinks, opts, recover::Maker::Init).await
    }

    /// [`Repository::init`] for `maker`, which says what an empty place may hold.
    pub(crate) async fn create(
        sinks: Vec<Arc<dyn Sink>>,
        opts: InitOptions,
        maker: recover::Maker,
    ) -> Result<InitReport> {
        let tee = Tee::new(sinks)?;
        let mut existing: Vec<(usize, Config)> = Vec::new();
        for i in 0..tee.len() {
            let member = tee.member(i);
            // A bucket that does not exist yet holds no repository.
            let exists = match member.exists("config").await {
                Ok(e) => e,
                Err(Error::NotFound { .. }) => false,
                Err(e) => return Err(e),
            };
            if exists {
                existing.push((i, read_config(member.as_ref()).await?));
            } else {
                recover::refuse_unless_empty(member.as_ref(), maker).await?;
            }
        }
        if existing.len() == tee.len() {
            return Err(Error::AlreadyExists {
                what: format!("repository at {}", tee.member(0).describe()),
            });
        }
        let (config, keys) = match existing.first() {
            None => {
                let master = MasterKey::generate(opts.passphrase.is_some());
                let config = Config {
                    format: FORMAT_NAME.into(),
                    version: FORMAT_VERSION,
                    id: master.repo_id,
                    created: crate::time::now_rfc3339(),
                    encryption: if opts.passphrase.is_some() {
                        Encryption::Aes256Gcm
                    } else {
                        Encryption::None
                    },
                    chunker: opts.chunker,
                    pack_size: opts.pack_size,
                    master: opts.passphrase.is_none().then(|| master.clone()),
                };
                Chunker::new(config.chunker, &master.chunker_seed)?;
                let keys = match &opts.passphrase {
                    Some(p) => {
                        let k = KeyFile::wrap(
                            &master,
                            p,
                            opts.kdf,
                            &opts.actor.hostname,
                            &opts.actor.username,
                        )?;
                        vec![k.encode()]
                    }
                    None => vec![],
                };
                (config, keys)
            }
            Some((i, config)) => {
                for (j, other) in &existing {
                    if other.id != config.id {
                        return Err(Error::bad_input(
                            "repositories",
                            format!(
                                "{} and {} hold different repositories; use `freezer copy` to move snapshots between them",
                                tee.member(*i).describe(),
                                tee.member(*j).describe()
                            ),
                        ));
                    }
                }
                // Prove the passphrase opens the existing repository before copying its keys.
                let source: Arc<dyn Sink> = tee.member(*i).clone();
                Repository::open(vec![source.clone()], opts.passphrase.as_ref()).await?;
                let mut keys = Vec::new();
                for meta in source.list("keys/").await? {
                    keys.push(source.get_bytes(&meta.key).await?.to_vec());
                }
                (config.clone(), keys)
            }
        };
        let mut report = InitReport {
            id: config.id,
            created: vec![],
            existing: existing
                .iter()
                .map(|(i, _)| tee.member(*i).describe())
                .collect(),
        };
        for i in 0..tee.len() {
            if existing.iter().any(|(j, _)| *j == i) {
                continue;
            }
            let member = tee.member(i);
            member.prepare().await?;
            let mut written = Vec::new();
            for k in &keys {
                let key = format!("keys/{}", Id::of_stored(k));
                member
                    .put(&key, Payload::from(k.clone()), PutMode::Overwrite)
                    .await?;
                written.push(key);
            }
            // The config goes last: its presence is what makes a repository. Whether the one
            // there now is ours is read back, not inferred: a create retried after a timeout
            // may find its own, and where creation is not atomic (FTP, S3 servers without
            // `If-None-Match`) a racing writer may have replaced it.
            match member
                .put("config", Payload::from(config.encode()), PutMode::Create)
                .await
            {
                Ok(()) | Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            let lost = match read_config(member.as_ref())
                .await
                .map(|c| c.id == config.id)
            {
                Ok(true) => None,
                Ok(false) => Some(Error::AlreadyExists {
                    what: format!("{}/config", member.describe()),
                }),
                // Not ours either: ours decodes.
                Err(e @ (Error::Corrupt { .. } | Error::Unsupported { .. })) => Some(e),
                // Unknown (it could be ours): the key files stay, lest ours lose its keys.
                Err(e) => return Err(e),
            };
            if let Some(e) = lost {
                // Another `init` (or a backup creating its repository) won the race: the key
                // files written here wrap a master key no config names, so they go again.
                for key in &written {
                    let _ = member.delete(key).await;
                }
                return Err(e);
            }
            // Only the winner writes the copy, under its repository's id: a loser never
            // touches it, and no two creators write the same name.
            member
                .put(
                    &recover::copy_key(&config.id),
                    Payload::from(config.encode()),
                    PutMode::Overwrite,
                )
                .await
                .map_err(|e| {
                    e.context(format!(
                        "writing the copy of the config of the new repository on {} (`freezer repair config` writes it)",
                        member.describe()
                    ))
                })?;
            report.created.push(member.describe());
        }
        Ok(report)
    }

    /// Opens the repository on `sinks` (several: one repository replicated on each). Members
    /// that cannot be reached are left out with a warning, as long as one answers.
    pub async fn open(
        sinks: Vec<Arc<dyn Sink>>,
        passphrase: Option<&Passphrase>,
    ) -> Result<Repository> {
        let tee = Arc::new(Tee::new(sinks)?);
        let mut found = recover::find_config(&tee).await?;
        let what = tee.member(0).describe();
        let mut warnings = std::mem::take(&mut found.warnings);
        let config = found.first().clone();
        let (master, key_id) = match (&config.encryption, passphrase) {
            (Encryption::None, None) => {
                found.agreed()?;
                (config.master.clone().expect("validated"), None)
            }
            (Encryption::None, Some(_)) => {
                return Err(Error::bad_input(
                    "encrypt_pass_file",
                    format!(
                        "repository {what} is not encrypted, but a passphrase was given; leave it out, or make a new encrypted repository"
                    ),
                ));
            }
            (Encryption::Aes256Gcm, None) => {
                return Err(Error::WrongKey {
                    what: format!(
                        "repository {what} is encrypted: give its passphrase (--encrypt-pass-file)"
                    ),
                });
            }
            (Encryption::Aes256Gcm, Some(p)) => {
                let ids: Vec<Id> = found.candidates().iter().map(|c| c.id).collect();
                let scan = unlock::scan_keys(&tee, &ids, p).await?;
                match scan.opened.clone() {
                    Some((m, id)) => {
                        warnings.extend(scan.stray_note(&m.repo_id));
                        (m, Some(id))
                    }
                    None => {
                        let (m, id, c) = recover::config_of_key(&tee, &config, &scan)
                            .await?
                            .ok_or_else(|| scan.error(&config.id, &what))?;
                        found.add(c);
                        (m, Some(id))
                    }
                }
            }
        };
        // The key settles which of the configs found is this repository's.
        let config = found.settle(&tee, &master.repo_id, &mut warnings).await?;
        let chunker = Chunker::new(config.chunker, &master.chunker_seed)?;
        Ok(Repository {
            crypto: Crypto::new(&master),
            tee,
            config,
            chunker,
            key_id,
            index: Arc::default(),
            warnings,
            lock_wait: lock::DEFAULT_LOCK_WAIT,
            unconfirmed: found.fallback(),
            no_lock: false,
        })
    }

    /// Drops from this run every storage whose `config` no longer names this repository:
    /// where creating is not atomic (FTP, S3 servers without `If-None-Match`), a node creating
    /// the repository at the same moment may have replaced the config this one opened, and
    /// data written under a master key no config names could never be read. Backups call it
    /// before they write index files.
    pub(crate) async fn confirm_config(&self) {
        for i in 0..self.tee.len() {
            if (self.tee.live() & !self.unconfirmed) & (1 << i) == 0 {
                continue;
            }
            let member = self.tee.member(i);
            let res = read_config(member.as_ref()).await.and_then(|c| {
                if c.id == self.config.id {
                    return Ok(());
                }
                Err(Error::corrupt(
                    format!("{}/config", member.describe()),
                    format!(
                        "names repository {}, not {} which this run opened: another node created a repository there at the same moment; run again",
                        c.id.short(),
                        self.config.id.short()
                    ),
                ))
            });
            if let Err(e) = res {
                self.tee.fail(i, &e);
            }
        }
    }

    /// The id of the key file the passphrase opened (`None` without encryption).
    pub fn key_id(&self) -> Option<Id> {
        self.key_id
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The repository's id.
    pub fn id(&self) -> Id {
        self.config.id
    }

    /// The storages.
    pub fn tee(&self) -> &Arc<Tee> {
        &self.tee
    }

    /// How each storage fared.
    pub fn status(&self) -> Vec<SinkStatus> {
        self.tee.status()
    }

    /// The cipher and id key.
    pub fn crypto(&self) -> &Crypto {
        &self.crypto
    }

    /// The chunker.
    pub fn chunker(&self) -> &Chunker {
        &self.chunker
    }

    /// The loaded index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Problems met while loading (unreadable index files...).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Reads the index files of every live storage. An index file listed by several storages
    /// is read once; an unreadable one is skipped with a warning (its blobs count as missing,
    /// so a backup sends them again).
    pub async fn load_index(&mut self) -> Result<()> {
        let mut files: std::collections::BTreeMap<String, SinkMask> = Default::default();
        for i in 0..self.tee.len() {
            if self.tee.live() & (1 << i) == 0 {
                continue;
            }
            match self.tee.member(i).list("index/").await {
                Ok(list) => {
                    for m in list {
                        *files.entry(m.key).or_default() |= 1 << i;
                    }
                }
                Err(e) => self.tee.fail(i, &e),
            }
        }
        let mut index = Index::default();
        for (key, mask) in files {
            match self
                .read_object(&key, mask)
                .await
                .and_then(|p| IndexFile::decode(&p, &key))
            {
                Ok(f) => index.add_file(&f, mask),
                Err(e) => self.warnings.push(format!("index file skipped: {e}")),
            }
        }
        index.seal();
        self.index = Arc::new(index);
        Ok(())
    }

    /// Replaces the loaded index with one built elsewhere (by `check`, which reads every
    /// storage's index files itself).
    pub(crate) fn set_index(&mut self, mut index: Index) {
        index.seal();
        self.index = Arc::new(index);
    }

    /// Records packs that were just written, each to its storages.
    pub fn add_packs<'a>(
        &mut self,
        packs: impl IntoIterator<Item = (Id, SinkMask, &'a [PackedBlob])>,
    ) {
        let index = Arc::make_mut(&mut self.index);
        for (pack, sinks, blobs) in packs {
            index.add_pack(pack, sinks, blobs);
        }
        index.seal();
    }

    /// A cheap, cloneable reader of this repository's blobs, for worker threads.
    pub fn reader(&self) -> BlobReader {
        BlobReader {
            tee: self.tee.clone(),
            crypto: self.crypto.clone(),
            index: self.index.clone(),
        }
    }

    /// Reads a small object from the first storage in `mask` that holds an intact copy (its
    /// bytes match its name) and decodes it.
    pub(crate) async fn read_object(&self, key: &str, mask: SinkMask) -> Result<Vec<u8>> {
        let (data, holder) = read_named(&self.tee, key, mask)
            .await?
            .ok_or_else(|| Error::not_found(key))?;
        object::decode(&self.crypto, &data, &format!("{holder}/{key}"))
    }

    /// Stores a small object under `<dir>/<id>` on the storages in `mask`; returns its id and
    /// the storages that hold it now.
    async fn write_object(
        &self,
        dir: &str,
        plain: &[u8],
        mask: SinkMask,
    ) -> Result<(Id, SinkMask)> {
        let stored = object::encode(&self.crypto, plain);
        let id = Id::of_stored(&stored);
        let key = format!("{dir}/{id}");
        let (ok, err) = self
            .tee
            .put_to(mask, &key, &Payload::from(stored), PutMode::Overwrite)
            .await;
        if ok == 0 {
            return Err(err.unwrap_or_else(|| {
                Error::io(&key, std::io::Error::other("no storage left to write to"))
            }));
        }
        Ok((id, ok))
    }

    /// Writes an index file to the storages in `mask`.
    pub async fn write_index(&self, file: &IndexFile, mask: SinkMask) -> Result<(Id, SinkMask)> {
        self.write_object("index", &file.encode(), mask).await
    }

    /// Writes a snapshot to the storages in `mask`.
    pub async fn write_snapshot(&self, snap: &Snapshot, mask: SinkMask) -> Result<(Id, SinkMask)> {
        self.write_object("snapshots", &snap.encode(), mask).await
    }

    /// Writes a finished pack to the storages in `mask`; returns those that hold it.
    pub async fn write_pack(&self, pack: &FinishedPack, mask: SinkMask) -> SinkMask {
        self.tee
            .put_to(mask, &pack_key(&pack.id), &pack.payload, PutMode::Overwrite)
            .await
            .0
    }

    /// Reads one snapshot by id.
    pub async fn read_snapshot(&self, id: &Id) -> Result<Snapshot> {
        let key = format!("snapshots/{id}");
        let plain = self.read_object(&key, self.tee.all()).await?;
        Snapshot::decode(&plain, &key)
    }

    /// Every snapshot of every live storage. A snapshot that cannot be read is reported in the
    /// second list, with the reason, instead of failing the listing.
    pub async fn snapshots(&self) -> Result<(Vec<(Id, Snapshot)>, Vec<String>)> {
        let l = self.snapshot_listing().await?;
        let bad = l.unreadable.iter().map(|u| u.error.to_string()).collect();
        Ok((l.snapshots, bad))
    }

    /// Every snapshot of every live storage, oldest first, and those that cannot be read, by
    /// id, with the reason.
    pub async fn snapshot_listing(&self) -> Result<snapshot::SnapshotListing> {
        let mut out = snapshot::SnapshotListing::default();
        for meta in self.tee.list("snapshots/").await? {
            let Some(Ok(id)) = meta.key.rsplit('/').next().map(Id::from_hex) else {
                continue;
            };
            match self
                .read_object(&meta.key, self.tee.all())
                .await
                .and_then(|p| Snapshot::decode(&p, &meta.key))
            {
                Ok(s) => out.snapshots.push((id, s)),
                Err(error) => out
                    .unreadable
                    .push(snapshot::UnreadableSnapshot { id, error }),
            }
        }
        out.snapshots.sort_by_key(|a| (a.1.time, a.0));
        Ok(out)
    }

    /// Reads one blob, trying every copy on every storage until one verifies.
    pub async fn read_blob(&self, id: &Id) -> Result<Bytes> {
        self.reader().read_blob(id).await
    }

    /// Reads and decodes a tree.
    pub async fn read_tree(&self, id: &Id) -> Result<Tree> {
        self.reader().read_tree(id).await
    }

    /// The key files of the repository.
    pub async fn keys(&self) -> Result<Vec<(Id, KeyFile, bool)>> {
        let mut out = Vec::new();
        for meta in self.tee.list("keys/").await? {
            let Some(Ok(id)) = meta.key.rsplit('/').next().map(Id::from_hex) else {
                continue;
            };
            let data = self.tee.get_bytes(&meta.key).await?;
            let k = KeyFile::decode(&data, &meta.key)?;
            out.push((id, k, Some(id) == self.key_id));
        }
        Ok(out)
    }

    /// The master key; only for adding keys.
    async fn master(&self, pass: &Passphrase) -> Result<MasterKey> {
        let scan = unlock::scan_keys(&self.tee, &[self.config.id], pass).await?;
        match scan.opened {
            Some((m, _)) => Ok(m),
            None => Err(scan.error(&self.config.id, &self.tee.member(0).describe())),
        }
    }

    /// Adds a key for `new`; `current` must open the repository. Returns the new key's id.
    pub async fn add_key(
        &self,
        current: &Passphrase,
        new: &Passphrase,
        kdf: KdfParams,
        actor: &Actor,
    ) -> Result<Id> {
        if !self.crypto.is_encrypted() {
            return Err(Error::unsupported(
                "keys on a repository without encryption",
            ));
        }
        let master = self.master(current).await?;
        let k = KeyFile::wrap(&master, new, kdf, &actor.hostname, &actor.username)?.encode();
        let id = Id::of_stored(&k);
        self.tee
            .put(&format!("keys/{id}"), Payload::from(k), PutMode::Create)
            .await?;
        Ok(id)
    }

    /// Removes a key by id or unique prefix; refuses the key in use and the last key.
    pub async fn remove_key(&self, prefix: &str) -> Result<Id> {
        let keys = self.keys().await?;
        let found: Vec<_> = keys
            .iter()
            .filter(|(id, _, _)| id.to_hex().starts_with(&prefix.to_ascii_lowercase()))
            .collect();
        let (id, _, current) = match found.as_slice() {
            [one] => *one,
            [] => return Err(Error::not_found(format!("key {prefix}"))),
            _ => {
                return Err(Error::bad_input(
                    "key",
                    format!("{prefix} matches several keys; give more digits"),
                ));
            }
        };
        if *current {
            return Err(Error::bad_input(
                "key",
                format!(
                    "key {} is the one in use; open the repository with another key to remove it",
                    id.short()
                ),
            ));
        }
        if keys.len() == 1 {
            return Err(Error::bad_input(
                "key",
                "the last key cannot be removed: the repository would become unreadable",
            ));
        }
        self.tee.delete(&format!("keys/{id}")).await?;
        Ok(*id)
    }

    /// Replaces the key in use by one for `new`.
    pub async fn change_passphrase(
        &self,
        current: &Passphrase,
        new: &Passphrase,
        kdf: KdfParams,
        actor: &Actor,
    ) -> Result<Id> {
        let old = self
            .key_id
            .ok_or_else(|| Error::unsupported("keys on a repository without encryption"))?;
        let id = self.add_key(current, new, kdf, actor).await?;
        self.tee.delete(&format!("keys/{old}")).await?;
        Ok(id)
    }

    /// Takes a lock on every storage.
    pub async fn lock(
        &self,
        exclusive: bool,
        operation: &str,
        actor: &Actor,
    ) -> Result<lock::LockGuard> {
        if self.no_lock {
            return lock::waive(
                self.tee.clone(),
                self.crypto.clone(),
                &actor.hostname,
                operation,
            )
            .await;
        }
        lock::acquire(
            self.tee.clone(),
            self.crypto.clone(),
            &actor.hostname,
            &actor.username,
            exclusive,
            operation,
            self.lock_wait,
        )
        .await
    }

    /// Takes a shared lock for an operation that only reads, going on without it where a
    /// storage is full or read-only (see [`lock::acquire_to_read`]).
    pub async fn lock_to_read(&self, operation: &str, actor: &Actor) -> Result<lock::LockGuard> {
        if self.no_lock {
            return self.lock(false, operation, actor).await;
        }
        lock::acquire_to_read(
            self.tee.clone(),
            self.crypto.clone(),
            &actor.hostname,
            &actor.username,
            operation,
            self.lock_wait,
        )
        .await
    }

    /// Writes no lock from now on (an operator's `--no-lock`, to free space on a full
    /// storage): [`Repository::lock`] then only checks that no other live lock is present
    /// (see [`lock::waive`]). The operator answers for no other operation starting meanwhile.
    pub fn set_no_lock(&mut self, no_lock: bool) {
        self.no_lock = no_lock;
    }

    /// Whether [`Repository::set_no_lock`] is on.
    pub fn no_lock(&self) -> bool {
        self.no_lock
    }

    /// How long [`Repository::lock`] waits for a live conflicting lock
    /// ([`lock::DEFAULT_LOCK_WAIT`] unless set).
    pub fn set_lock_wait(&mut self, wait: std::time::Duration) {
        self.lock_wait = wait;
    }

    /// Removes stale locks (every lock when `all`); returns what went.
    pub async fn unlock(&self, actor: &Actor, all: bool) -> Result<Vec<lock::LockInfo>> {
        lock::unlock(&self.tee, &self.crypto, &actor.hostname, all).await
    }

    /// A blob encoder for this repository.
    pub fn encoder(&self, level: Option<i32>) -> pack::BlobEncoder {
        pack::BlobEncoder::new(self.crypto.clone(), level)
    }

    /// Whether blob `id` is held by every storage in `mask`.
    pub fn has_blob(&self, id: &Id, mask: SinkMask) -> bool {
        self.index.sinks_of(id) & mask == mask
    }

    /// The id of a blob with this plaintext.
    pub fn blob_id(&self, data: &[u8]) -> Id {
        self.crypto.blob_id(&[data])
    }

    /// Types of blob, re-exported for callers of [`Repository::index`].
    pub fn blob_types() -> [BlobType; 2] {
        [BlobType::Data, BlobType::Tree]
    }
}

/// Reads blobs of a repository; cheap to clone and to send to worker threads.
#[derive(Clone, Debug)]
pub struct BlobReader {
    tee: Arc<Tee>,
    crypto: Crypto,
    index: Arc<Index>,
}

impl BlobReader {
    /// The index it reads with.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The storages.
    pub fn tee(&self) -> &Arc<Tee> {
        &self.tee
    }

    /// The cipher.
    pub fn crypto(&self) -> &Crypto {
        &self.crypto
    }

    /// Reads one blob, trying every copy on every storage until one verifies.
    pub async fn read_blob(&self, id: &Id) -> Result<Bytes> {
        let locs = self.index.locations(id);
        if locs.is_empty() {
            return Err(Error::not_found(format!("blob {id} (in no index)")));
        }
        let mut first_err = None;
        let mut dctx = pack::DecodeScratch::default();
        for loc in locs {
            let pack = self.index.pack(loc.pack);
            let key = pack_key(&pack.id);
            for i in 0..self.tee.len() {
                if pack.sinks & self.tee.live() & (1 << i) == 0 {
                    continue;
                }
                let member = self.tee.member(i);
                let what = format!("blob {} in pack {}", id.short(), pack.id);
                let range = u64::from(loc.offset)..u64::from(loc.offset) + u64::from(loc.length);
                let res = member.get_range(&key, range).await.and_then(|stored| {
                    if stored.len() != loc.length as usize {
                        return Err(Error::corrupt(&what, "pack is truncated"));
                    }
                    pack::decode_blob(&self.crypto, &mut dctx, stored, &loc.packed(*id), &what)
                });
                match res {
                    Ok(b) => return Ok(b),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        Err(first_err.unwrap_or_else(|| {
            Error::not_found(format!("blob {id} (no storage holding it is live)"))
        }))
    }

    /// Reads many blobs with few requests: the blobs of one pack that lie close together are
    /// fetched with one ranged read (packs on one storage at a time, several packs at once).
    /// A blob whose run cannot be fetched or does not verify is read again alone, trying every
    /// copy, as [`BlobReader::read_blob`] does.
    pub async fn read_many(&self, ids: &[Id]) -> Vec<(Id, Result<Bytes>)> {
        use futures::StreamExt as _;
        /// Blobs closer than this are fetched in one request, up to `MAX_RUN` bytes.
        const GAP: u64 = 256 * 1024;
        const MAX_RUN: u64 = 8 * 1024 * 1024;
        let mut by_pack: HashMap<u32, Vec<(Id, index::Location)>> = HashMap::new();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.index.get(id) {
                Some(l) => by_pack.entry(l.pack).or_default().push((*id, l)),
                None => out.push((*id, self.read_blob(id).await)),
            }
        }
        /// `(pack, start, end, blobs)`: one ranged read.
        type Run = (u32, u64, u64, Vec<(Id, index::Location)>);
        let mut runs: Vec<Run> = Vec::new();
        for (pack, mut blobs) in by_pack {
            blobs.sort_by_key(|(_, l)| l.offset);
            for (id, l) in blobs {
                let (start, end) = (
                    u64::from(l.offset),
                    u64::from(l.offset) + u64::from(l.length),
                );
                match runs.last_mut() {
                    Some((p, s, e, v))
                        if *p == pack && start <= *e + GAP && end - *s <= MAX_RUN =>
                    {
                        *e = (*e).max(end);
                        v.push((id, l));
                    }
                    _ => runs.push((pack, start, end, vec![(id, l)])),
                }
            }
        }
        let fetched: Vec<Vec<(Id, Result<Bytes>)>> = futures::stream::iter(runs)
            .map(|(pack_pos, start, end, blobs)| async move {
                let pack = *self.index.pack(pack_pos);
                let key = pack_key(&pack.id);
                let mut data = None;
                for i in 0..self.tee.len() {
                    if pack.sinks & self.tee.live() & (1 << i) == 0 {
                        continue;
                    }
                    if let Ok(b) = self.tee.member(i).get_range(&key, start..end).await
                        && b.len() as u64 == end - start
                    {
                        data = Some(b);
                        break;
                    }
                }
                let mut dctx = pack::DecodeScratch::default();
                let mut out = Vec::with_capacity(blobs.len());
                for (id, l) in blobs {
                    let what = format!("blob {} in pack {}", id.short(), pack.id);
                    let decoded = data.as_ref().and_then(|d| {
                        let from = (u64::from(l.offset) - start) as usize;
                        let stored = d.slice(from..from + l.length as usize);
                        pack::decode_blob(&self.crypto, &mut dctx, stored, &l.packed(id), &what)
                            .ok()
                    });
                    match decoded {
                        Some(b) => out.push((id, Ok(b))),
                        None => out.push((id, self.read_blob(&id).await)),
                    }
                }
                out
            })
            .buffer_unordered(8)
            .collect()
            .await;
        out.extend(fetched.into_iter().flatten());
        out
    }

    /// Reads and decodes a tree.
    pub async fn read_tree(&self, id: &Id) -> Result<Tree> {
        let data = self.read_blob(id).await?;
        Tree::decode(&data, &format!("tree {id}"))
    }

    /// Reads and decodes many trees with few requests, as [`BlobReader::read_many`] reads
    /// blobs. Walks of many trees call it a level at a time, at most [`TREE_BATCH`] trees per
    /// call, so that what they hold decoded stays bounded.
    pub async fn read_trees(&self, ids: &[Id]) -> Vec<(Id, Result<Tree>)> {
        self.read_many(ids)
            .await
            .into_iter()
            .map(|(id, b)| (id, b.and_then(|b| Tree::decode(&b, &format!("tree {id}")))))
            .collect()
    }
}

/// Trees a walk asks [`BlobReader::read_trees`] for at once.
pub const TREE_BATCH: usize = 1024;

/// Reads `key` from the first storage in `mask` holding a copy whose bytes match its name
/// (when the name is an id), with that storage's description. A damaged copy counts before an
/// unreachable one, so that a caller can pass over what is damaged. `None` when no storage in
/// `mask` holds it.
pub(crate) async fn read_named(
    tee: &Tee,
    key: &str,
    mask: SinkMask,
) -> Result<Option<(Bytes, String)>> {
    let expected = key.rsplit('/').next().and_then(|h| Id::from_hex(h).ok());
    let (mut damaged, mut failed) = (None, None);
    for i in 0..tee.len() {
        if mask & tee.live() & (1 << i) == 0 {
            continue;
        }
        let member = tee.member(i);
        match member.get_bytes(key).await {
            Ok(data) if expected.is_none_or(|id| Id::of_stored(&data) == id) => {
                return Ok(Some((data, member.describe())));
            }
            Ok(_) => {
                damaged.get_or_insert(Error::corrupt(
                    format!("{}/{key}", member.describe()),
                    "content does not match its name",
                ));
            }
            Err(Error::NotFound { .. }) => {}
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    damaged.or(failed).map_or(Ok(None), Err)
}
