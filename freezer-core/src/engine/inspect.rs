//! Inspection of one snapshot: is everything it needs there, and (with `read_data`) intact?
//!
//! It walks the snapshot's trees, checks that every chunk is in the index and that its pack
//! exists on a live storage, and optionally reads and verifies every chunk. Each problem is
//! reported once per damaged object, with every file it touches, so an operator knows exactly
//! what a restore would miss. It never writes to the repository.

use std::collections::{HashMap, HashSet};

use crate::error::Result;
use crate::id::Id;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::NodeKind;
use crate::repo::{Repository, pack};
use crate::sink::{Sink, SinkExt};

/// A damaged or missing object and the files it touches.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Damage {
    /// The object: `pack <id>`, `tree <id>`, `blob <id>`.
    pub object: String,
    /// What is wrong with it.
    pub error: String,
    /// Paths (relative to what was backed up) that are incomplete because of it.
    pub files: Vec<String>,
}

/// What an inspection found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Inspection {
    /// The snapshot inspected.
    pub snapshot_id: Id,
    /// Files in it.
    pub files: u64,
    /// Folders in it.
    pub dirs: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Distinct chunks it references.
    pub blobs: u64,
    /// Whether chunk contents were read and verified.
    pub read_data: bool,
    /// Problems, one per object.
    pub damaged: Vec<Damage>,
}

#[derive(Default)]
struct Found {
    damage: HashMap<String, Damage>,
}

impl Found {
    fn add(&mut self, object: String, error: String, file: String) {
        let d = self.damage.entry(object.clone()).or_insert_with(|| Damage {
            object,
            error,
            files: vec![],
        });
        if !d.files.contains(&file) {
            d.files.push(file);
        }
    }
}

/// Inspects snapshot `id`. The repository's index must be loaded.
pub async fn inspect(
    repo: &Repository,
    id: Id,
    snap: &Snapshot,
    read_data: bool,
) -> Result<Inspection> {
    let index = repo.index();
    let tee = repo.tee();
    let mut present: HashSet<Id> = HashSet::new();
    for i in 0..tee.len() {
        if tee.live() & (1 << i) == 0 {
            continue;
        }
        if let Ok(list) = tee.member(i).list("data/").await {
            present.extend(
                list.iter()
                    .filter_map(|m| m.key.rsplit('/').next().and_then(|h| Id::from_hex(h).ok())),
            );
        }
    }
    let mut out = Inspection {
        snapshot_id: id,
        read_data,
        ..Inspection::default()
    };
    let mut found = Found::default();
    let mut seen: HashSet<Id> = HashSet::new();
    // Chunks to verify, by pack: blob -> files.
    let mut to_read: HashMap<u32, HashMap<Id, Vec<String>>> = HashMap::new();
    let mut stack: Vec<(String, Id)> = vec![(String::new(), snap.tree)];
    let mut top = true;
    while let Some((dir, tree_id)) = stack.pop() {
        let tree = match repo.read_tree(&tree_id).await {
            Ok(t) => t,
            Err(e) => {
                found.add(
                    format!("tree {tree_id}"),
                    e.to_string(),
                    if dir.is_empty() {
                        ".".into()
                    } else {
                        dir.clone()
                    },
                );
                continue;
            }
        };
        for node in tree.nodes {
            // The top tree holds the backed-up root itself; paths start below it.
            let path = if top {
                String::new()
            } else if dir.is_empty() {
                node.name_lossy()
            } else {
                format!("{dir}/{}", node.name_lossy())
            };
            match node.kind() {
                NodeKind::Dir => {
                    if !top {
                        out.dirs += 1;
                    }
                    if let Some(sub) = node.subtree {
                        stack.push((path, sub));
                    }
                }
                NodeKind::File => {
                    out.files += 1;
                    out.bytes += node.size;
                    let shown = if path.is_empty() {
                        node.name_lossy()
                    } else {
                        path.clone()
                    };
                    for blob in &node.content {
                        if seen.insert(*blob) {
                            out.blobs += 1;
                        }
                        let Some(loc) = index.get(blob) else {
                            found.add(format!("blob {blob}"), "in no index".into(), shown.clone());
                            continue;
                        };
                        let pack = index.pack(loc.pack);
                        if !index
                            .locations(blob)
                            .iter()
                            .any(|l| present.contains(&index.pack(l.pack).id))
                        {
                            found.add(
                                format!("pack {}", pack.id),
                                "missing from storage".into(),
                                shown.clone(),
                            );
                            continue;
                        }
                        if read_data {
                            to_read
                                .entry(loc.pack)
                                .or_default()
                                .entry(*blob)
                                .or_default()
                                .push(shown.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        top = false;
    }
    if read_data {
        let mut dctx = pack::DecodeScratch::default();
        for (pack_pos, blobs) in to_read {
            let pack_id = index.pack(pack_pos).id;
            let data = match tee.get_bytes(&crate::repo::pack_key(&pack_id)).await {
                Ok(d) => d,
                Err(e) => {
                    for files in blobs.values() {
                        for f in files {
                            found.add(format!("pack {pack_id}"), e.to_string(), f.clone());
                        }
                    }
                    continue;
                }
            };
            for (blob, files) in blobs {
                let loc = index
                    .locations(&blob)
                    .iter()
                    .find(|l| l.pack == pack_pos)
                    .copied()
                    .expect("chosen from this pack");
                let range = loc.offset as usize..(loc.offset as usize + loc.length as usize);
                let res = match data.get(range.clone()) {
                    Some(_) => pack::decode_blob(
                        repo.crypto(),
                        &mut dctx,
                        data.slice(range),
                        &loc.packed(blob),
                        &format!("blob {}", blob.short()),
                    )
                    .map(|_| ()),
                    None => Err(crate::Error::corrupt(
                        format!("pack {pack_id}"),
                        "truncated",
                    )),
                };
                if let Err(e) = res {
                    // Another copy may be intact.
                    if repo.read_blob(&blob).await.is_err() {
                        for f in files {
                            found.add(format!("pack {pack_id}"), e.to_string(), f);
                        }
                    }
                }
            }
        }
    }
    let mut damaged: Vec<Damage> = found.damage.into_values().collect();
    damaged.iter_mut().for_each(|d| d.files.sort());
    damaged.sort_by(|a, b| a.object.cmp(&b.object));
    out.damaged = damaged;
    Ok(out)
}
