//! What a check's report says first: the damage summed up by kind, the damaged objects in the
//! order that names causes before consequences, and the healing steps that apply. Every step
//! it names must be true of the report: never a command that would refuse to run.

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

    /// What to do about what this check found, one step a line, each true of this report:
    /// nothing when there is nothing to do.
    pub fn advice(&self) -> Vec<String> {
        let has = |k: DamageKind| self.damaged.iter().any(|d| DamageKind::of(&d.object) == k);
        let mut out = vec![];
        if has(DamageKind::Storage) {
            out.push(
                "a storage could not be checked: run `freezer check` again once it answers"
                    .to_string(),
            );
        }
        if has(DamageKind::Config) || has(DamageKind::Key) {
            out.push("a damaged config or key file: copy it from another storage of the repository, or from a backup of the repository".to_string());
        }
        if has(DamageKind::Index) || has(DamageKind::Pack) || has(DamageKind::Blob) {
            out.push(format!(
                "`freezer repair index` rebuilds the index from the packs present{}; then run `freezer check` again",
                if has(DamageKind::Index) || has(DamageKind::Blob) {
                    " (prune refuses to delete anything until then)"
                } else {
                    ""
                }
            ));
        }
        if has(DamageKind::Snapshot) {
            out.push("a snapshot that does not decode is lost, and stops forget and prune: delete its file (snapshots/<id> on the storage named)".to_string());
        }
        if has(DamageKind::Pack) || has(DamageKind::Blob) || has(DamageKind::Tree) {
            out.push("the snapshots named cannot be restored whole: a new backup of the same files stores what is lost again".to_string());
        }
        if !self.unreferenced_packs.is_empty() {
            out.push(if self.is_ok() {
                "packs in no index (left by an interrupted backup): `freezer prune` removes them".to_string()
            } else {
                "packs in no index: `freezer prune` removes them once the damage above is repaired (it refuses to delete before)".to_string()
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
            advice.contains("once the damage above is repaired"),
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
}
