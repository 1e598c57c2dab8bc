//! What to do about what `check` found: [`CheckReport::advice`], the steps that heal each kind
//! of damage, in the order to take them.

use std::collections::BTreeSet;

use super::CheckReport;

impl CheckReport {
    /// The steps that heal what this check found, in order (none when nothing is damaged).
    ///
    /// Damaged index files: `repair index`. Damaged, truncated or missing packs:
    /// `repair packs`, which drops what is lost from the index. Then, for those and for blobs
    /// in no index, a new backup of the same data, which stores every blob in no index again
    /// (and until `repair packs` ran, every blob of a pack `check` recorded damaged): each
    /// snapshot sharing them is whole again. A snapshot named after that needs data that is
    /// gone: `forget <id>` removes it. Front-ends print these as they are.
    pub fn advice(&self) -> Vec<String> {
        let kind =
            |d: &&super::CheckDamage| d.object.split(' ').next().unwrap_or_default().to_string();
        let kinds: BTreeSet<String> = self.damaged.iter().map(|d| kind(&d)).collect();
        let has = |k: &str| kinds.contains(k);
        let mut steps = Vec::new();
        if has("index") {
            steps.push(
                "`freezer repair index` rebuilds the damaged index files from the packs' headers"
                    .to_string(),
            );
        }
        if has("pack") {
            steps.push(
                "`freezer repair packs` drops what is lost in the damaged packs from the index (blobs that still verify are kept)"
                    .to_string(),
            );
        }
        let data = ["pack", "blob", "tree", "index"];
        if data.iter().any(|k| has(k)) {
            steps.push(
                "back up the same data again (`freezer backup`, or the job): blobs in no index are stored again, and every snapshot that shares them is whole again"
                    .to_string(),
            );
            let snapshots: BTreeSet<String> = self
                .damaged
                .iter()
                .filter(|d| data.contains(&kind(d).as_str()))
                .flat_map(|d| d.snapshots.iter().map(|s| s.short()))
                .collect();
            if !snapshots.is_empty() {
                steps.push(format!(
                    "if `freezer check` still names snapshots after that, the data they need is gone: `freezer forget <id>` removes each (named now: {})",
                    snapshots.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        if has("snapshot") {
            steps.push(
                "a snapshot file that cannot be read: `freezer repair snapshots` sets every damaged snapshot aside under quarantine/ (or `freezer forget <id>` one of them)"
                    .to_string(),
            );
        }
        if has("storage") {
            steps.push(
                "a storage that could not be checked: make it reachable, then run `freezer check` again"
                    .to_string(),
            );
        }
        if has("config") {
            steps.push(
                "`freezer repair config` restores a damaged or missing config from its copy or another storage (give every storage with --repo)"
                    .to_string(),
            );
        }
        if has("key") {
            steps.push(
                "`freezer repair keys` restores damaged key files from an intact copy on another storage, or moves them to quarantine/ (open with a passphrase whose key is intact); then `freezer key add` gives a passphrase that lost its key a new one"
                    .to_string(),
            );
        }
        steps
    }
}
