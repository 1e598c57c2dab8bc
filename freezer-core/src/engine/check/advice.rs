//! What a check's report says first: the damage summed up by kind, the damaged objects in the
//! order that names causes before consequences, and the healing steps that apply. Every step
//! it names must be true of the report: never a command that would refuse to run, and taken
//! in order they heal it (`tests/it/heal_packs.rs` and the CLI's `faults.rs` run them).

use std::collections::BTreeSet;

use super::{CheckDamage, CheckReport};

impl CheckReport {
    /// The damage counted by kind, most telling first: `1 index file, 3 snapshots`
    /// (empty when nothing is damaged).
    pub fn summary(&self) -> String {
        let mut counts: Vec<(DamageKind, usize)> = vec![];
        for d in &self.damaged {
            let k = DamageKind::of(&d.object);
            match counts.iter_mut().find(|(c, _)| *c == k) {
                Some((_, n)) => *n += 1,
                None => counts.push((k, 1)),
            }
        }
        counts.sort();
        counts
            .iter()
            .map(|(k, n)| k.count(*n))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The damaged objects, most telling kind first (storages, config, keys, index files,
    /// snapshots, packs, trees, blobs), for a report that names the cause before its
    /// consequences: a lost index file makes every blob it listed "in no index".
    pub fn damage_by_kind(&self) -> Vec<&CheckDamage> {
        let mut v: Vec<&CheckDamage> = self.damaged.iter().collect();
        v.sort_by_key(|d| DamageKind::of(&d.object));
        v
    }

    /// The steps that heal what this check found, in the order to take them, each true of this
    /// report (nothing when there is nothing to do).
    ///
    /// Causes come first: a storage that did not answer, the config, key files, index files
    /// (`repair index`), unreadable snapshots (`repair snapshots`), then damaged, truncated or
    /// missing packs (`repair packs`, which drops what is lost from the index). Then, for those
    /// and for blobs in no index, a new backup of the same data, which stores every blob in no
    /// index again (and until `repair packs` ran, every blob of a pack `check` recorded
    /// damaged): each snapshot sharing them is whole again. A snapshot named after that needs
    /// data that is gone: `forget <id>` removes it. Front-ends print these as they are.
    pub fn advice(&self) -> Vec<String> {
        let has = |k: DamageKind| self.damaged.iter().any(|d| DamageKind::of(&d.object) == k);
        let mut out = vec![];
        if has(DamageKind::Storage) {
            out.push(
                "a storage could not be checked: run `freezer check` again once it answers"
                    .to_string(),
            );
        }
        if has(DamageKind::Config) {
            out.push(
                "`freezer repair config` restores a damaged or missing config from its copy or another storage (give every storage with --repo)"
                    .to_string(),
            );
        }
        if has(DamageKind::Key) {
            out.push(
                "`freezer repair keys` restores damaged key files from an intact copy on another storage, or moves them to quarantine/ (open with a passphrase whose key is intact); then `freezer key add` gives a passphrase that lost its key a new one"
                    .to_string(),
            );
        }
        // Blobs in no index beside packs in no index: an index file went missing, and the
        // packs may hold those blobs; `repair index` lists them again before anything else.
        let unindexed =
            !self.unreferenced_packs.is_empty() && (has(DamageKind::Blob) || has(DamageKind::Tree));
        if has(DamageKind::Index) || unindexed {
            out.push(
                "`freezer repair index` rebuilds the index from the packs' headers (prune refuses to delete anything until then)"
                    .to_string(),
            );
        }
        if has(DamageKind::Snapshot) {
            out.push(
                "`freezer repair snapshots` sets every snapshot that cannot be read aside under quarantine/ (or `freezer forget <id>` one of them): until then forget and prune stop on them"
                    .to_string(),
            );
        }
        if has(DamageKind::Pack) {
            out.push(
                "`freezer repair packs` drops what is lost in the damaged packs from the index (blobs that still verify are kept)"
                    .to_string(),
            );
        }
        let data = [
            DamageKind::Pack,
            DamageKind::Blob,
            DamageKind::Tree,
            DamageKind::Index,
        ];
        if data.iter().any(|k| has(*k)) {
            out.push(
                "back up the same data again (`freezer backup`, or the job): blobs in no index are stored again, and every snapshot that shares them is whole again"
                    .to_string(),
            );
            let snapshots: BTreeSet<String> = self
                .damaged
                .iter()
                .filter(|d| data.contains(&DamageKind::of(&d.object)))
                .flat_map(|d| d.snapshots.iter().map(|s| s.short()))
                .collect();
            if !snapshots.is_empty() {
                out.push(format!(
                    "if `freezer check` still names snapshots after that, the data they need is gone: `freezer forget <id>` removes each (named now: {})",
                    snapshots.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        if !self.unreferenced_packs.is_empty() {
            out.push(if self.is_ok() {
                "packs in no index (left by an interrupted backup): `freezer prune` removes them".to_string()
            } else {
                "packs in no index: `freezer prune` removes them once the steps above made `freezer check` pass (it refuses to delete before)".to_string()
            });
        }
        if self.temporary_files > 0 {
            out.push(format!(
                "temporary files left by interrupted writes: `freezer prune` removes those not written to for {} minutes",
                crate::repo::lock::LOCK_LIFETIME.as_secs() / 60
            ));
        }
        out
    }
}

/// What kind of object a [`CheckDamage`] names, in the order a summary lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum DamageKind {
    Storage,
    Config,
    Key,
    Index,
    Snapshot,
    Pack,
    Tree,
    Blob,
    Other,
}

impl DamageKind {
    fn of(object: &str) -> DamageKind {
        match object.split(' ').next().unwrap_or("") {
            "storage" => DamageKind::Storage,
            "config" => DamageKind::Config,
            "key" => DamageKind::Key,
            "index" => DamageKind::Index,
            "snapshot" => DamageKind::Snapshot,
            "pack" => DamageKind::Pack,
            "tree" => DamageKind::Tree,
            "blob" => DamageKind::Blob,
            _ => DamageKind::Other,
        }
    }

    fn count(self, n: usize) -> String {
        let (one, many) = match self {
            DamageKind::Storage => ("storage not checked", "storages not checked"),
            DamageKind::Config => ("config file", "config files"),
            DamageKind::Key => ("key file", "key files"),
            DamageKind::Index => ("index file", "index files"),
            DamageKind::Snapshot => ("snapshot", "snapshots"),
            DamageKind::Pack => ("pack", "packs"),
            DamageKind::Tree => ("tree", "trees"),
            DamageKind::Blob => ("blob", "blobs"),
            DamageKind::Other => ("other object", "other objects"),
        };
        format!("{n} {}", if n == 1 { one } else { many })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn damage(object: &str) -> CheckDamage {
        CheckDamage {
            object: object.into(),
            error: "x".into(),
            snapshots: vec![],
            files: vec![],
        }
    }

    #[test]
    fn causes_come_first_and_every_step_applies() {
        let mut r = CheckReport {
            damaged: vec![
                damage("blob 01"),
                damage("blob 02"),
                damage("index ab on m"),
            ],
            unreferenced_packs: vec!["pack cd on m".into()],
            ..CheckReport::default()
        };
        assert_eq!(r.summary(), "1 index file, 2 blobs");
        assert_eq!(r.damage_by_kind()[0].object, "index ab on m");
        let advice = r.advice().join("\n");
        assert!(advice.contains("`freezer repair index`"), "{advice}");
        assert!(advice.contains("prune refuses"), "{advice}");
        assert!(
            advice.contains("once the steps above made `freezer check` pass"),
            "{advice}"
        );
        r.damaged.clear();
        let advice = r.advice();
        assert_eq!(advice.len(), 1, "{advice:?}");
        assert!(
            advice[0].ends_with("`freezer prune` removes them"),
            "{advice:?}"
        );
        r.unreferenced_packs.clear();
        assert!(r.advice().is_empty() && r.summary().is_empty());
    }

    #[test]
    fn blobs_in_no_index_beside_packs_in_no_index_are_indexed_before_anything_is_forgotten() {
        // A lost index file: its blobs are in no index, its packs in no index. The packs hold
        // them: `repair index` comes first, and no step says the data is gone before it.
        let mut lost = damage("blob 01");
        lost.snapshots = vec![crate::id::Id::from_hex(&"ab".repeat(32)).unwrap()];
        let r = CheckReport {
            damaged: vec![lost],
            unreferenced_packs: vec!["pack cd on m".into()],
            ..CheckReport::default()
        };
        let advice = r.advice();
        assert!(advice[0].contains("`freezer repair index`"), "{advice:?}");
    }
}
