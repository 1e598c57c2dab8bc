//! Whole-repository verification: [`check`].
//!
//! On every live storage of the repository's tee, `check` verifies the `config` and the key
//! files (and that the key the passphrase opened is there), reads and decodes every index file
//! and every snapshot, compares the packs the index files list with the packs the storage
//! holds (missing, truncated, unreferenced), walks the trees of every snapshot a level at a
//! time (a tree shared by several snapshots is read once) and checks that every blob they
//! reference is listed by the index of every storage that holds the snapshot. With
//! [`ReadData`] it also reads a deterministic subset of the packs whole, from every storage
//! holding them, and verifies every byte. Only when something is damaged, a second walk maps
//! each damaged object to the snapshots and files it touches.
//!
//! It writes to the repository only its shared lock (which it goes on without where a storage
//! is full or read-only, with a warning) and, on each storage, one damage record
//! (`damaged/<id>`, see [`crate::repo::damaged`]) naming the packs and blobs found unusable
//! there, which backups then store again; records of packs it read and found intact go. The
//! report puts damage first: a summary by kind ([`CheckReport::summary`]) and the steps that
//! heal it ([`CheckReport::advice`]), each true of this report.

mod advice;
mod data;
mod record;
mod walk;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use futures::StreamExt as _;

use super::Progress;
use crate::crypto::Crypto;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::config::{Config, KeyFile};
use crate::repo::damaged::{DamageRecord, PackDamage};
use crate::repo::index::{Index, IndexFile};
use crate::repo::recover;
use crate::repo::snapshot::Snapshot;
use crate::repo::{Actor, Repository, object, pack_key};
use crate::sink::{Sink, SinkExt, SinkMask, Tee};

pub use data::ReadData;

/// How many small objects (index files, snapshots) are read at once from one storage.
const PARALLEL_SMALL_READS: usize = 8;

/// What to check.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Which packs to read whole and verify byte by byte.
    pub read_data: ReadData,
    /// Who checks (recorded in the lock).
    pub actor: Actor,
}

impl CheckOptions {
    /// A structural check (no pack read whole) by `actor`.
    pub fn new(actor: Actor) -> Self {
        CheckOptions {
            read_data: ReadData::None,
            actor,
        }
    }
}

/// A damaged or missing object, with the snapshots and files it touches.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CheckDamage {
    /// The object: `pack <id> on <storage>`, `index <id> on <storage>`,
    /// `snapshot <id> on <storage>`, `tree <id>`, `blob <id>` (or `blob <id> on <storage>`
    /// when only that storage's index lacks it), `storage <storage>` when a storage could not
    /// be checked at all.
    pub object: String,
    /// What is wrong with it.
    pub error: String,
    /// The snapshots that need it, held by a storage it concerns.
    pub snapshots: Vec<Id>,
    /// Paths, relative to what was backed up, that a restore of those snapshots from that
    /// storage would miss or get wrong (`.` for the backed-up folder itself).
    pub files: Vec<String>,
}

/// What a check found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckReport {
    /// The storages of the repository, in tee order.
    pub storages: Vec<String>,
    /// Snapshots that decode (counted once however many storages hold them).
    pub snapshots: u64,
    /// Distinct trees walked.
    pub trees: u64,
    /// Distinct data blobs the snapshots reference.
    pub blobs: u64,
    /// Index files read, one per storage holding each.
    pub index_files: u64,
    /// Distinct packs the index files list.
    pub packs: u64,
    /// Packs whose presence and size were checked, one per storage whose index lists each.
    pub packs_checked: u64,
    /// Packs read whole and verified, one per storage.
    pub packs_read: u64,
    /// Bytes read from those packs.
    pub bytes_read: u64,
    /// Which packs were chosen for reading: `none`, `all`, `n/m` or `x%`.
    pub read_data: String,
    /// Packs present on a storage but listed by none of its index files: left behind by an
    /// interrupted backup, not damage (`prune` removes them). `pack <id> on <storage>`.
    pub unreferenced_packs: Vec<String>,
    /// Damaged or missing objects, sorted by object.
    pub damaged: Vec<CheckDamage>,
    /// Temporary files that interrupted writes left (`.tmp-*` of a process killed while
    /// writing), counted once per storage: no damage; `prune` removes those older than
    /// [`crate::repo::lock::LOCK_LIFETIME`].
    pub temporary_files: u64,
    /// Their bytes.
    pub temporary_bytes: u64,
    /// Problems of the check itself that are no damage: stale locks removed on the way in, a
    /// lock that could not be removed, or skipped on a full or read-only storage.
    pub warnings: Vec<String>,
}

impl CheckReport {
    /// Whether nothing is damaged (unreferenced packs are no damage).
    pub fn is_ok(&self) -> bool {
        self.damaged.is_empty()
    }
}

/// Checks the whole repository on every live storage; see the module documentation. The
/// repository's index is replaced by the one read here.
pub async fn check(
    repo: &mut Repository,
    opts: &CheckOptions,
    progress: Arc<dyn Progress>,
) -> Result<CheckReport> {
    opts.read_data.validate()?;
    let lock = repo.lock_to_read("check", &opts.actor).await?;
    let notes = lock.notes.clone();
    let result = run(repo, opts.read_data, progress.as_ref()).await;
    let released = lock.release().await;
    let mut report = result?;
    report.warnings.extend(notes);
    if let Err(e) = released {
        report
            .warnings
            .push(format!("could not remove the lock: {e}"));
    }
    Ok(report)
}

/// A damaged object found while checking, before its snapshots and files are known.
struct Problem {
    object: String,
    error: String,
    /// The storages it concerns: it touches a snapshot only when one of them holds it.
    storages: SinkMask,
    snapshots: BTreeSet<Id>,
    files: BTreeSet<String>,
}

/// Every problem found, and what each one means for the data.
#[derive(Default)]
struct Problems {
    list: Vec<Problem>,
    by_object: HashMap<String, usize>,
    /// Blobs (data or tree) that each problem makes unusable, by blob.
    blobs: HashMap<Id, Vec<usize>>,
    /// Packs (positions in the index) all of whose blobs each problem makes unusable.
    packs: HashMap<u32, Vec<usize>>,
    /// What is unusable in the packs of each storage (position in the tee), to record.
    records: BTreeMap<usize, DamageRecord>,
    /// Packs read whole and found intact, by storage: a record of them is stale.
    intact: HashSet<(usize, Id)>,
}

impl Problems {
    /// Records a problem with `object`; the first error named for an object is kept.
    fn add(&mut self, object: String, error: impl fmt::Display, storages: SinkMask) -> usize {
        if let Some(&p) = self.by_object.get(&object) {
            self.list[p].storages |= storages;
            return p;
        }
        let p = self.list.len();
        self.by_object.insert(object.clone(), p);
        self.list.push(Problem {
            object,
            error: error.to_string(),
            storages,
            snapshots: BTreeSet::new(),
            files: BTreeSet::new(),
        });
        p
    }

    fn touch_blob(&mut self, p: usize, blob: Id) {
        let v = self.blobs.entry(blob).or_default();
        if !v.contains(&p) {
            v.push(p);
        }
    }

    fn touch_pack(&mut self, p: usize, pack: u32) {
        let v = self.packs.entry(pack).or_default();
        if !v.contains(&p) {
            v.push(p);
        }
    }

    /// Records that problem `p` touches `file` of snapshot `snap`, held by `holders`.
    fn attribute(&mut self, p: usize, snap: Id, holders: SinkMask, file: &str) {
        let problem = &mut self.list[p];
        if problem.storages & holders != 0 {
            problem.snapshots.insert(snap);
            problem.files.insert(file.to_string());
        }
    }

    fn into_damage(self) -> Vec<CheckDamage> {
        let mut out: Vec<CheckDamage> = self
            .list
            .into_iter()
            .map(|p| CheckDamage {
                object: p.object,
                error: p.error,
                snapshots: p.snapshots.into_iter().collect(),
                files: p.files.into_iter().collect(),
            })
            .collect();
        out.sort_by(|a, b| a.object.cmp(&b.object));
        out
    }
}

/// What one storage's index files say it holds.
struct Claim {
    /// The first index file (its name) that lists the pack.
    index: String,
    /// Where the last listed blob ends.
    end: u64,
    /// How many blobs are listed.
    blobs: usize,
}

/// One storage being checked.
struct StorageView {
    /// Its position in the tee.
    member: usize,
    /// Its description.
    name: String,
    /// The packs its index files list.
    claims: HashMap<Id, Claim>,
    /// The packs it holds, with their sizes.
    present: HashMap<Id, u64>,
    /// Listed packs found missing or truncated: not worth reading.
    broken: HashSet<Id>,
}

impl StorageView {
    fn bit(&self) -> SinkMask {
        1 << self.member
    }

    fn claim(&mut self, pack: Id, index: &str, end: u64, blobs: usize) {
        let c = self.claims.entry(pack).or_insert_with(|| Claim {
            index: index.to_string(),
            end: 0,
            blobs: 0,
        });
        c.end = c.end.max(end);
        c.blobs = c.blobs.max(blobs);
    }
}

/// The snapshots that decode, with the storages holding each.
type Snapshots = BTreeMap<Id, (Snapshot, SinkMask)>;

async fn run(
    repo: &mut Repository,
    read_data: ReadData,
    progress: &dyn Progress,
) -> Result<CheckReport> {
    let tee = repo.tee().clone();
    let crypto = repo.crypto().clone();
    let names: Vec<String> = (0..tee.len()).map(|i| tee.member(i).describe()).collect();
    let mut report = CheckReport {
        storages: names.clone(),
        read_data: read_data.to_string(),
        ..CheckReport::default()
    };
    let mut problems = Problems::default();
    for (i, status) in tee.status().into_iter().enumerate() {
        if let Some(why) = status.error {
            problems.add(
                format!("storage {}", names[i]),
                format!("not checked: {why}"),
                1 << i,
            );
        }
    }

    check_metadata(&tee, repo, &names, &mut problems).await;
    check_copies(&tee, repo, &names, &mut problems, &mut report.warnings).await;

    let mut index = Index::default();
    let mut views = Vec::new();
    // Index files already decoded (from another storage): their packs, ends and counts.
    let mut known: HashMap<String, Vec<(Id, u64, usize)>> = HashMap::new();
    // Snapshots are listed before the index files: a backup running alongside (backups and
    // check both take shared locks) writes its index files before its snapshot, so every
    // snapshot listed here has its index files among those read next. Snapshots that appear
    // later are not checked; those forgotten meanwhile are skipped.
    let mut early: HashMap<usize, HashSet<String>> = HashMap::new();
    for i in 0..tee.len() {
        if tee.live() & (1 << i) == 0 {
            continue;
        }
        if let Ok(list) = tee.member(i).list("snapshots/").await {
            early.insert(i, list.into_iter().map(|m| m.key).collect());
        }
    }
    for (i, name) in names.iter().enumerate() {
        if tee.live() & (1 << i) == 0 {
            continue;
        }
        let mut view = StorageView {
            member: i,
            name: name.clone(),
            claims: HashMap::new(),
            present: HashMap::new(),
            broken: HashSet::new(),
        };
        let res = async {
            let files = read_indexes(
                &tee,
                &crypto,
                &mut view,
                &mut index,
                &mut known,
                &mut problems,
            )
            .await?;
            list_packs(&tee, &crypto, &mut view, &index, &mut problems, &mut report).await?;
            // Leftovers only waste space: a storage that cannot list them is still checked.
            match tee.member(i).list_temporaries("").await {
                Ok(list) => {
                    report.temporary_files += list.len() as u64;
                    report.temporary_bytes += list.iter().map(|t| t.size).sum::<u64>();
                }
                Err(e) => report
                    .warnings
                    .push(format!("temporary files on {name} not listed: {e}")),
            }
            Ok::<_, Error>(files)
        }
        .await;
        match res {
            Ok(files) => {
                report.index_files += files;
                views.push(view);
            }
            Err(e) => fail_storage(&tee, &mut problems, i, name, &e),
        }
    }
    report.packs = index.packs().len() as u64;
    report.unreferenced_packs.sort();

    let snapshots = read_snapshots(&tee, &crypto, &mut views, &mut problems, &early).await;
    report.snapshots = snapshots.len() as u64;

    repo.set_index(index);
    let reader = repo.reader();
    walk::walk(
        &reader,
        &snapshots,
        &names,
        &mut problems,
        &mut report,
        progress,
    )
    .await;
    if read_data != ReadData::None {
        data::read_packs(
            &reader,
            &views,
            read_data,
            &mut problems,
            &mut report,
            progress,
        )
        .await;
    }
    if !problems.blobs.is_empty() || !problems.packs.is_empty() {
        walk::map_damage(&reader, &snapshots, &mut problems).await;
    }
    record::record_damage(repo, &views, &mut problems, &mut report).await;
    report.damaged = problems.into_damage();
    Ok(report)
}

/// Checks each live storage's `config` (it decodes and equals the one the repository was
/// opened with) and key files (each matches its name and decodes), and that the key the
/// passphrase opened is on every storage, so that each one alone can be opened with it.
async fn check_metadata(tee: &Tee, repo: &Repository, names: &[String], problems: &mut Problems) {
    let want = repo.config().encode();
    for (i, name) in names.iter().enumerate() {
        if tee.live() & (1 << i) == 0 {
            continue;
        }
        let sink = tee.member(i);
        let config = match sink.get_bytes("config").await {
            Ok(data) => Config::decode(&data, "config").map(|c| c.encode() == want),
            Err(e) => Err(e),
        };
        match config {
            Ok(true) => {}
            Ok(false) => {
                problems.add(
                    format!("config on {name}"),
                    "differs from the config the repository was opened with (its copy, or another storage's): damaged; `freezer repair config` restores it",
                    1 << i,
                );
            }
            Err(e @ Error::Unsupported { .. }) => {
                problems.add(format!("config on {name}"), detail(&e, "config"), 1 << i);
            }
            Err(e @ (Error::Corrupt { .. } | Error::NotFound { .. })) => {
                problems.add(
                    format!("config on {name}"),
                    format!(
                        "{}; `freezer repair config` restores it",
                        detail(&e, "config")
                    ),
                    1 << i,
                );
            }
            // Unreachable, not damaged: the storage is left out of this check.
            Err(e) => {
                fail_storage(tee, problems, i, name, &e);
                continue;
            }
        }
        let keys = match sink.list("keys/").await {
            Ok(k) => k,
            Err(e) => {
                fail_storage(tee, problems, i, name, &e);
                continue;
            }
        };
        let mut holds_opened = false;
        for meta in keys {
            let id = name_of(&meta.key);
            let what = format!("key {id} on {name}");
            let res = async {
                let data = sink.get_bytes(&meta.key).await?;
                if Id::from_hex(id).ok() != Some(Id::of_stored(&data)) {
                    return Err(Error::corrupt(&what, "content does not match its name"));
                }
                KeyFile::decode(&data, &what).map(|_| ())
            }
            .await;
            match res {
                Ok(()) => holds_opened |= repo.key_id().is_some_and(|k| k.to_string() == id),
                Err(e @ Error::Corrupt { .. }) => {
                    problems.add(what.clone(), detail(&e, &what), 1 << i);
                }
                // Deleted since the listing (by an `init` that lost a race, or `key remove`).
                Err(Error::NotFound { .. }) => {}
                Err(e) => {
                    fail_storage(tee, problems, i, name, &e);
                    break;
                }
            }
        }
        if let Some(k) = repo.key_id()
            && !holds_opened
            && tee.live() & (1 << i) != 0
        {
            problems.add(
                format!("key {k} on {name}"),
                "missing or damaged: the key the passphrase opened is not on this storage, so it cannot be opened alone with that passphrase (add a key with `freezer key add` while every storage is reachable)",
                1 << i,
            );
        }
    }
}

/// Checks each live storage's copy of the config (`config-copy/<id>`: it equals the config),
/// and notes a missing copy (a repository made before copies existed) and what a repair moved
/// to `quarantine/`: neither is damage.
async fn check_copies(
    tee: &Tee,
    repo: &Repository,
    names: &[String],
    problems: &mut Problems,
    warnings: &mut Vec<String>,
) {
    let want = repo.config().encode();
    let key = recover::copy_key(&repo.id());
    for (i, name) in names.iter().enumerate() {
        if tee.live() & (1 << i) == 0 {
            continue;
        }
        let sink = tee.member(i);
        match recover::read_copy(sink.as_ref(), &key).await {
            Ok(Some(c)) if c.config.encode() == want => {}
            Ok(Some(_)) => {
                problems.add(
                    format!("{key} on {name}"),
                    "differs from the config the repository was opened with: damaged; `freezer repair config` restores it",
                    1 << i,
                );
            }
            Ok(None) => warnings.push(format!(
                "{name} holds no copy of the config ({key}): `freezer repair config` writes one"
            )),
            Err(e @ (Error::Corrupt { .. } | Error::Unsupported { .. })) => {
                problems.add(
                    format!("{key} on {name}"),
                    format!("{}; `freezer repair config` restores it", detail(&e, &key)),
                    1 << i,
                );
            }
            Err(e) => {
                fail_storage(tee, problems, i, name, &e);
                continue;
            }
        }
        if let Ok(aside) = sink.list(recover::QUARANTINE_PREFIX).await
            && let Some(first) = aside.first()
        {
            warnings.push(format!(
                "{name} holds {} object(s) that a repair could not read and moved aside ({} among them): not part of the repository, kept for inspection",
                aside.len(),
                first.key
            ));
        }
    }
}

/// Drops storage `i` from the run because it could not be listed or read.
fn fail_storage(tee: &Tee, problems: &mut Problems, i: usize, name: &str, e: &Error) {
    problems.add(
        format!("storage {name}"),
        format!("not checked: {e}"),
        1 << i,
    );
    tee.fail(i, e);
}

/// Reads a small object from one storage and checks that its bytes match its name. Returns
/// its plaintext, or `None` when `known` (the same name decoded on another storage: the same
/// bytes, since they match the name).
async fn read_small(
    sink: &dyn Sink,
    crypto: &Crypto,
    key: &str,
    what: &str,
    known: bool,
) -> Result<Option<Vec<u8>>> {
    let data = sink.get_bytes(key).await?;
    match key.rsplit('/').next().map(Id::from_hex) {
        Some(Ok(id)) if Id::of_stored(&data) != id => {
            return Err(Error::corrupt(what, "content does not match its name"));
        }
        Some(Ok(_)) if known => return Ok(None),
        _ => {}
    }
    object::decode(crypto, &data, what).map(Some)
}

/// What is wrong with object `what`: the detail of a corrupt object named `what`, else the
/// whole message.
pub(super) fn detail(e: &Error, what: &str) -> String {
    match e {
        Error::Corrupt { what: w, detail } if w == what => detail.clone(),
        e => e.to_string(),
    }
}

/// The last segment of a key: the id of a content-addressed object.
fn name_of(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// Reads and decodes every index file of one storage into `index` and the storage's claims.
/// Returns the number of index files read; an undecodable one is a problem, not an error.
async fn read_indexes(
    tee: &Tee,
    crypto: &Crypto,
    view: &mut StorageView,
    index: &mut Index,
    known: &mut HashMap<String, Vec<(Id, u64, usize)>>,
    problems: &mut Problems,
) -> Result<u64> {
    let member = tee.member(view.member).clone();
    let jobs: Vec<(String, bool)> = member
        .list("index/")
        .await?
        .into_iter()
        .map(|m| {
            let k = known.contains_key(&m.key);
            (m.key, k)
        })
        .collect();
    let count = jobs.len() as u64;
    let name = view.name.clone();
    let mut results = futures::stream::iter(jobs)
        .map(|(key, is_known)| {
            let (member, name) = (member.clone(), name.clone());
            async move {
                let what = format!("index {} on {name}", name_of(&key));
                let res = read_small(member.as_ref(), crypto, &key, &what, is_known)
                    .await
                    .and_then(|p| p.map(|p| IndexFile::decode(&p, &what)).transpose());
                (key, what, res)
            }
        })
        .buffer_unordered(PARALLEL_SMALL_READS);
    let bit = view.bit();
    while let Some((key, what, res)) = results.next().await {
        match res {
            Ok(Some(file)) => {
                index.add_file(&file, bit);
                let packs: Vec<(Id, u64, usize)> = file
                    .packs
                    .iter()
                    .map(|(pack, blobs)| {
                        let end = blobs
                            .iter()
                            .map(|b| u64::from(b.offset) + u64::from(b.length))
                            .max()
                            .unwrap_or(0);
                        (*pack, end, blobs.len())
                    })
                    .collect();
                for (pack, end, n) in &packs {
                    view.claim(*pack, name_of(&key), *end, *n);
                }
                known.insert(key, packs);
            }
            Ok(None) => {
                for (pack, end, n) in known.get(&key).map(Vec::as_slice).unwrap_or_default() {
                    // Known from the file's first reading: this only adds the storage.
                    index.add_pack(*pack, bit, &[]);
                    view.claim(*pack, name_of(&key), *end, *n);
                }
            }
            Err(e) => {
                problems.add(what.clone(), detail(&e, &what), bit);
            }
        }
    }
    Ok(count)
}

/// Lists the packs of one storage and compares them with what its index files list.
async fn list_packs(
    tee: &Tee,
    crypto: &Crypto,
    view: &mut StorageView,
    index: &Index,
    problems: &mut Problems,
    report: &mut CheckReport,
) -> Result<()> {
    let member = tee.member(view.member);
    for meta in member.list("data/").await? {
        if crate::repo::is_upstream_key(&meta.key) {
            continue; // upstream's backups, beside the repository
        }
        match Id::from_hex(name_of(&meta.key)) {
            Ok(id) if pack_key(&id) == meta.key => {
                view.present.insert(id, meta.size);
            }
            _ => report
                .unreferenced_packs
                .push(format!("{} on {}", meta.key, view.name)),
        }
    }
    let bit = view.bit();
    for (id, claim) in &view.claims {
        report.packs_checked += 1;
        let pos = index.pack_pos(id).expect("added with its index file");
        let error = match view.present.get(id) {
            None => format!("missing (listed by index {})", claim.index),
            Some(&size)
                if size < crate::repo::damaged::min_pack_size(claim.end, claim.blobs, crypto) =>
            {
                format!(
                    "truncated: {size} bytes, but index {} lists {} blobs up to byte {}, which a header must follow",
                    claim.index, claim.blobs, claim.end
                )
            }
            Some(_) => continue,
        };
        let p = problems.add(format!("pack {id} on {}", view.name), error, bit);
        problems.touch_pack(p, pos);
        problems
            .records
            .entry(view.member)
            .or_default()
            .add(*id, PackDamage::Whole);
        view.broken.insert(*id);
    }
    for id in view.present.keys() {
        if !view.claims.contains_key(id) {
            report
                .unreferenced_packs
                .push(format!("pack {id} on {}", view.name));
        }
    }
    Ok(())
}

/// Reads and decodes every snapshot of every storage checked. A storage whose snapshots
/// cannot be listed is dropped from `views`.
async fn read_snapshots(
    tee: &Tee,
    crypto: &Crypto,
    views: &mut Vec<StorageView>,
    problems: &mut Problems,
    early: &HashMap<usize, HashSet<String>>,
) -> Snapshots {
    let mut good: Snapshots = BTreeMap::new();
    let mut failed = Vec::new();
    for (v, view) in views.iter().enumerate() {
        let member = tee.member(view.member).clone();
        let list = match member.list("snapshots/").await {
            Ok(l) => l,
            Err(e) => {
                fail_storage(tee, problems, view.member, &view.name, &e);
                failed.push(v);
                continue;
            }
        };
        let jobs: Vec<(Id, String, bool)> = list
            .into_iter()
            .filter(|m| early.get(&view.member).is_none_or(|e| e.contains(&m.key)))
            .filter_map(|m| {
                let id = Id::from_hex(name_of(&m.key)).ok()?;
                Some((id, m.key, good.contains_key(&id)))
            })
            .collect();
        let name = &view.name;
        let mut results = futures::stream::iter(jobs)
            .map(|(id, key, is_known)| {
                let member = member.clone();
                async move {
                    let what = format!("snapshot {id} on {name}");
                    let res = read_small(member.as_ref(), crypto, &key, &what, is_known)
                        .await
                        .and_then(|p| p.map(|p| Snapshot::decode(&p, &what)).transpose());
                    (id, what, res)
                }
            })
            .buffer_unordered(PARALLEL_SMALL_READS);
        let bit = view.bit();
        while let Some((id, what, res)) = results.next().await {
            match res {
                Ok(Some(snap)) => {
                    good.entry(id).or_insert((snap, 0)).1 |= bit;
                }
                Ok(None) => {
                    if let Some(s) = good.get_mut(&id) {
                        s.1 |= bit;
                    }
                }
                // Forgotten since the listing.
                Err(Error::NotFound { .. }) => {}
                Err(e) => {
                    let p = problems.add(what.clone(), detail(&e, &what), bit);
                    problems.list[p].snapshots.insert(id);
                }
            }
        }
    }
    for v in failed.into_iter().rev() {
        views.remove(v);
    }
    good
}
