//! The two tree walks of `check`: the first over every snapshot at once, checking that every
//! tree decodes and that every blob is listed where it must be; the second, only when
//! something is damaged, naming the snapshots and files each damaged object touches.
//!
//! Both read a level of trees at a time with few requests
//! ([`BlobReader::read_many`]), and read a tree shared by many snapshots once. Neither keeps
//! trees: the first keeps a mask per tree and per blob, the second only the folders and the
//! damaged entries of each tree.

use std::collections::{HashMap, HashSet};

use super::{CheckReport, Problems, Snapshots};
use crate::engine::Progress;
use crate::id::Id;
use crate::repo::index::Index;
use crate::repo::tree::NodeKind;
use crate::repo::{BlobReader, TREE_BATCH};
use crate::sink::SinkMask;

/// The members in `mask`.
fn members(mask: SinkMask) -> impl Iterator<Item = usize> {
    (0..64).filter(move |i| mask & (1 << i) != 0)
}

/// Checks that the `kind` blob `id` is listed by the index of every storage in `needed`.
fn check_listed(
    problems: &mut Problems,
    index: &Index,
    names: &[String],
    kind: &str,
    id: &Id,
    needed: SinkMask,
) {
    let have = index.sinks_of(id);
    if have & needed == needed {
        return;
    }
    if have == 0 {
        let p = problems.add(format!("{kind} {id}"), "in no index", needed);
        problems.touch_blob(p, *id);
        return;
    }
    for i in members(needed & !have) {
        let p = problems.add(
            format!("{kind} {id} on {}", names[i]),
            "in no index of this storage (another storage holds it)",
            1 << i,
        );
        problems.touch_blob(p, *id);
    }
}

/// Walks the trees of every snapshot, each tree once for every storage that needs it.
pub(super) async fn walk(
    reader: &BlobReader,
    snapshots: &Snapshots,
    names: &[String],
    problems: &mut Problems,
    report: &mut CheckReport,
    progress: &dyn Progress,
) {
    let index = reader.index();
    // Per tree and per blob: the storages it was checked for.
    let mut walked: HashMap<Id, SinkMask> = HashMap::new();
    let mut blobs: HashMap<Id, SinkMask> = HashMap::new();
    let mut level: HashMap<Id, SinkMask> = HashMap::new();
    for (snap, holders) in snapshots.values() {
        *level.entry(snap.tree).or_default() |= holders;
    }
    while !level.is_empty() {
        for (id, needed) in &level {
            *walked.entry(*id).or_default() |= needed;
            check_listed(problems, index, names, "tree", id, *needed);
        }
        let ids: Vec<Id> = level.keys().copied().collect();
        let mut next: HashMap<Id, SinkMask> = HashMap::new();
        for batch in ids.chunks(TREE_BATCH) {
            for (id, res) in reader.read_trees(batch).await {
                let needed = level[&id];
                let tree = match res {
                    Ok(t) => t,
                    Err(e) => {
                        let p = problems.add(format!("tree {id}"), e, needed);
                        problems.touch_blob(p, id);
                        continue;
                    }
                };
                for node in &tree.nodes {
                    match (node.kind(), node.subtree) {
                        (NodeKind::Dir, Some(sub)) => {
                            let more = needed & !walked.get(&sub).copied().unwrap_or(0);
                            if more != 0 {
                                *next.entry(sub).or_default() |= more;
                            }
                        }
                        (NodeKind::File, _) => {
                            for blob in &node.content {
                                let done = blobs.entry(*blob).or_default();
                                let more = needed & !*done;
                                if more != 0 {
                                    *done |= more;
                                    check_listed(problems, index, names, "blob", blob, more);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            progress.add_entries(batch.len() as u64);
        }
        level = next;
    }
    report.trees = walked.len() as u64;
    report.blobs = blobs.len() as u64;
}

/// What the mapping walk keeps of a tree.
#[derive(Default)]
struct Summary {
    /// Folders: name and subtree.
    dirs: Vec<(String, Id)>,
    /// Damaged entries: name, whether it is a folder (whose tree is damaged), problem.
    hits: Vec<(String, bool, usize)>,
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Names the snapshots and files that each problem touching blobs or packs concerns.
pub(super) async fn map_damage(
    reader: &BlobReader,
    snapshots: &Snapshots,
    problems: &mut Problems,
) {
    let index = reader.index();
    let mut bad: HashMap<Id, Vec<usize>> = std::mem::take(&mut problems.blobs);
    if !problems.packs.is_empty() {
        for (blob, locs) in index.blobs() {
            for l in locs {
                if let Some(ps) = problems.packs.get(&l.pack) {
                    let v = bad.entry(blob).or_default();
                    for p in ps {
                        if !v.contains(p) {
                            v.push(*p);
                        }
                    }
                }
            }
        }
    }

    // Every tree once, keeping its folders and its damaged entries.
    let mut summaries: HashMap<Id, Summary> = HashMap::new();
    let mut seen: HashSet<Id> = snapshots.values().map(|(s, _)| s.tree).collect();
    let mut level: Vec<Id> = seen.iter().copied().collect();
    while !level.is_empty() {
        let mut next = Vec::new();
        for batch in level.chunks(TREE_BATCH) {
            for (id, res) in reader.read_trees(batch).await {
                let Ok(tree) = res else {
                    continue;
                };
                let mut s = Summary::default();
                for node in tree.nodes {
                    match (node.kind(), node.subtree) {
                        (NodeKind::Dir, Some(sub)) => {
                            for p in bad.get(&sub).into_iter().flatten() {
                                s.hits.push((node.name_lossy(), true, *p));
                            }
                            if seen.insert(sub) {
                                next.push(sub);
                            }
                            s.dirs.push((node.name_lossy(), sub));
                        }
                        (NodeKind::File, _) => {
                            let mut hit: Vec<usize> = node
                                .content
                                .iter()
                                .filter_map(|b| bad.get(b))
                                .flatten()
                                .copied()
                                .collect();
                            hit.sort_unstable();
                            hit.dedup();
                            for p in hit {
                                s.hits.push((node.name_lossy(), false, p));
                            }
                        }
                        _ => {}
                    }
                }
                summaries.insert(id, s);
            }
        }
        level = next;
    }

    // The trees that hold something damaged, however deep.
    let mut hot: HashSet<Id> = summaries
        .iter()
        .filter(|(_, s)| !s.hits.is_empty())
        .map(|(id, _)| *id)
        .collect();
    loop {
        let before = hot.len();
        for (id, s) in &summaries {
            if !hot.contains(id) && s.dirs.iter().any(|(_, d)| hot.contains(d)) {
                hot.insert(*id);
            }
        }
        if hot.len() == before {
            break;
        }
    }

    // Each snapshot: down its damaged paths only. The top tree holds what was backed up as
    // its one entry; paths start below it, as a restore writes them.
    for (snap_id, (snap, holders)) in snapshots {
        for p in bad.get(&snap.tree).into_iter().flatten() {
            problems.attribute(*p, *snap_id, *holders, ".");
        }
        let mut stack = vec![(String::new(), snap.tree, true)];
        while let Some((dir, tree, top)) = stack.pop() {
            let Some(s) = summaries.get(&tree).filter(|_| hot.contains(&tree)) else {
                continue;
            };
            for (name, is_dir, p) in &s.hits {
                let path = match (top, is_dir) {
                    (true, true) => ".".to_string(),
                    (true, false) => name.clone(),
                    (false, _) => join(&dir, name),
                };
                problems.attribute(*p, *snap_id, *holders, &path);
            }
            for (name, sub) in &s.dirs {
                if hot.contains(sub) {
                    let path = if top { String::new() } else { join(&dir, name) };
                    stack.push((path, *sub, false));
                }
            }
        }
    }
}
