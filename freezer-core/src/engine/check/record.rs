//! Damage records written by `check` (see [`crate::repo::damaged`]): what it found unusable on
//! each storage, so that backups store those blobs again until `repair packs` runs.

use super::{CheckReport, Problems, StorageView};
use crate::repo::Repository;
use crate::repo::damaged::DamageRecord;
use crate::sink::Sink as _;

/// Writes, on each storage checked, one damage record holding what this check found unusable
/// there and what earlier records name that is still listed and was not found intact; the
/// earlier records go. Nothing is written when the one record there already says it all.
pub(super) async fn record_damage(
    repo: &Repository,
    views: &[StorageView],
    problems: &mut Problems,
    report: &mut CheckReport,
) {
    for view in views {
        let i = view.member;
        if repo.tee().live() & view.bit() == 0 {
            continue;
        }
        let (old, notes) = match repo.damage_records(i).await {
            Ok(r) => r,
            Err(e) => {
                report.warnings.push(format!(
                    "damage records on {} not read, none written: {e}",
                    view.name
                ));
                continue;
            }
        };
        report.warnings.extend(notes);
        let mut rec = problems.records.remove(&i).unwrap_or_default();
        let mut before = DamageRecord::default();
        for (_, r) in &old {
            before.extend(r.clone());
        }
        for (pack, d) in before.packs.clone() {
            if view.claims.contains_key(&pack) && !problems.intact.contains(&(i, pack)) {
                rec.add(pack, d);
            }
        }
        if old.len() <= 1 && rec == before {
            continue;
        }
        let written = if rec.packs.is_empty() {
            None
        } else {
            match repo.write_damage_record(&rec, i).await {
                Ok(k) => Some(k),
                Err(e) => {
                    report.warnings.push(format!(
                        "the damage found on {} could not be recorded (backups go on trusting it): {e}",
                        view.name
                    ));
                    continue;
                }
            }
        };
        for (key, _) in old {
            if Some(&key) != written.as_ref()
                && let Err(e) = repo.tee().member(i).delete(&key).await
            {
                report
                    .warnings
                    .push(format!("{key} on {}: not removed: {e}", view.name));
            }
        }
    }
}
