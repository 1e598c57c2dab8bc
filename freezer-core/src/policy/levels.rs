//! Incremental levels: which earlier snapshot a backup may trust, and which level it gets.
//!
//! Upstream's decision (`Storage._find_previous_backup`), on the native repository: a *chain*
//! is the newest level 0 of a series and every later snapshot of that series; the chain's
//! *latest update* is its newest snapshot of the highest level.
//!
//! 1. Not incremental, or no level 0 yet: level 0.
//! 2. `always_level` set and the highest level has reached it: the parent is the chain's newest
//!    snapshot of level `always_level - 1`, so the new one is `always_level` again
//!    (differential); `always_level` takes precedence over `max_level`, as upstream's help says.
//!    A chain already above `always_level` (the option was lowered) starts a new level 0.
//! 3. `max_level` set and reached: level 0.
//! 4. `restart_always_level` days passed since the chain's level 0: level 0.
//! 5. Otherwise the parent is the latest update.
//!
//! The new level is the parent's plus one. A level 0 reads every file; a higher level reads
//! only the files whose metadata differs from the parent's. Unlike upstream, every snapshot is
//! complete, so any of them restores alone whatever its level.
//!
//! Two differences from upstream, both in docs/COMPAT.md: `restart_always_level` counts from
//! the chain's level 0 (upstream counts from its latest update, so daily backups never restart,
//! and with `always_level` reached upstream never looks at it), and `incremental` is on unless
//! an action turns it off, because a level 0 here costs reading time, never storage.

use jiff::Timestamp;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::snapshot::Snapshot;

/// Upstream's level options.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LevelPolicy {
    /// Trust earlier snapshots at all (`incremental`; `no_incremental` turns it off).
    pub incremental: bool,
    /// Start a new level 0 once the chain reaches this level (`max_level`).
    pub max_level: Option<u32>,
    /// Climb to this level, then keep making it from the level below (`always_level`).
    pub always_level: Option<u32>,
    /// Start a new level 0 once the chain's level 0 is this many days old
    /// (`restart_always_level`, fractional days).
    pub restart_after_days: Option<f64>,
}

impl Default for LevelPolicy {
    fn default() -> Self {
        LevelPolicy {
            incremental: true,
            max_level: None,
            always_level: None,
            restart_after_days: None,
        }
    }
}

impl LevelPolicy {
    /// Checks the values; errors name the option.
    pub fn validate(&self) -> Result<()> {
        if !self.incremental && (self.max_level.is_some() || self.always_level.is_some()) {
            return Err(Error::bad_input(
                if self.max_level.is_some() {
                    "max_level"
                } else {
                    "always_level"
                },
                "backup-level options require the incremental option (incremental is off)",
            ));
        }
        if self.max_level == Some(0) {
            return Err(Error::bad_input(
                "max_level",
                "0 would make every backup a level 0; give 1 or more, or turn incremental off",
            ));
        }
        if self.always_level == Some(0) {
            return Err(Error::bad_input(
                "always_level",
                "0 would make every backup a level 0; give 1 or more, or turn incremental off",
            ));
        }
        if let Some(d) = self.restart_after_days
            && !(d.is_finite() && d > 0.0)
        {
            return Err(Error::bad_input(
                "restart_always_level",
                format!("{d} is not a positive number of days"),
            ));
        }
        Ok(())
    }
}

/// What the next backup of a series trusts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelPlan {
    /// The snapshot whose metadata lets unchanged files go unread; `None` for a level 0.
    pub parent: Option<Id>,
    /// The new snapshot's level.
    pub level: u32,
}

impl LevelPlan {
    const ZERO: LevelPlan = LevelPlan {
        parent: None,
        level: 0,
    };
}

/// Decides the next backup's parent and level from the snapshots of its series (any order;
/// snapshots of other series must already be filtered out) at time `now`.
pub fn plan<'a>(
    series: impl IntoIterator<Item = (&'a Id, &'a Snapshot)>,
    policy: &LevelPolicy,
    now: Timestamp,
) -> LevelPlan {
    if !policy.incremental {
        return LevelPlan::ZERO;
    }
    let mut snaps: Vec<(&Id, &Snapshot)> = series.into_iter().collect();
    snaps.sort_by_key(|(id, s)| (s.time, **id));
    let Some(start) = snaps.iter().rposition(|(_, s)| s.level == 0) else {
        return LevelPlan::ZERO;
    };
    let chain = &snaps[start..];
    let full = chain[0].1;
    // The newest snapshot of each level; the latest update is the newest of the highest level.
    let newest_of = |level: u32| chain.iter().rev().find(|(_, s)| s.level == level);
    let highest = chain.iter().map(|(_, s)| s.level).max().unwrap_or(0);
    let latest = newest_of(highest).expect("the highest level occurs");
    if let Some(days) = policy.restart_after_days {
        let age = now.as_millisecond() - full.time.as_millisecond();
        if age as f64 > days * 86_400_000.0 {
            return LevelPlan::ZERO;
        }
    }
    let parent = match policy.always_level {
        // The chain climbed higher (`always_level` was lowered since): a new level 0, as
        // upstream starts one.
        Some(always) if highest > always => return LevelPlan::ZERO,
        Some(always) if highest == always => match newest_of(always - 1) {
            Some(p) => p,
            // The chain skipped that level (levels changed between runs): climb again.
            None => return LevelPlan::ZERO,
        },
        _ => {
            if policy.always_level.is_none() && policy.max_level.is_some_and(|m| highest >= m) {
                return LevelPlan::ZERO;
            }
            latest
        }
    };
    LevelPlan {
        parent: Some(*parent.0),
        level: parent.1.level + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `n` backups `hours` apart under `policy`; returns their levels.
    fn levels(policy: LevelPolicy, n: usize, hours: i64) -> Vec<u32> {
        let mut snaps: Vec<(Id, Snapshot)> = Vec::new();
        let start = Timestamp::from_second(1_800_000_000).unwrap();
        let mut out = vec![];
        for i in 0..n {
            let now = start + jiff::SignedDuration::from_hours(hours * i as i64);
            let p = plan(snaps.iter().map(|(i, s)| (i, s)), &policy, now);
            if let Some(parent) = p.parent {
                let ps = &snaps.iter().find(|(i, _)| *i == parent).unwrap().1;
                assert_eq!(p.level, ps.level + 1);
                assert!(ps.time < now);
            }
            out.push(p.level);
            let mut s: Snapshot = serde_json::from_value(serde_json::json!({
                "version": 1, "time": now, "time_stamp": now.as_second(), "hostname": "h",
                "backup_name": "b", "mode": "fs", "level": p.level, "parent": p.parent,
                "path_to_backup": "/", "tree": Id([0; 32]), "program": "t"}))
            .unwrap();
            s.level = p.level;
            snaps.push((Id([i as u8 + 1; 32]), s));
        }
        out
    }

    #[test]
    fn upstream_sequences() {
        let inc = LevelPolicy::default();
        assert_eq!(levels(inc, 5, 24), [0, 1, 2, 3, 4]);
        let max = LevelPolicy {
            max_level: Some(3),
            ..inc
        };
        assert_eq!(levels(max, 9, 24), [0, 1, 2, 3, 0, 1, 2, 3, 0]);
        let always = LevelPolicy {
            always_level: Some(2),
            ..inc
        };
        assert_eq!(levels(always, 5, 24), [0, 1, 2, 2, 2]);
        let both = LevelPolicy {
            max_level: Some(1),
            ..always
        };
        assert_eq!(levels(both, 5, 24), [0, 1, 2, 2, 2], "always_level wins");
        // Lowering always_level below the chain's height starts a new level 0.
        let mut snaps: Vec<(Id, Snapshot)> = Vec::new();
        let start = Timestamp::from_second(1_800_000_000).unwrap();
        for (i, level) in [0u32, 1, 2, 3].into_iter().enumerate() {
            let mut s: Snapshot = serde_json::from_value(serde_json::json!({
                "version": 1, "time": start + jiff::SignedDuration::from_hours(i as i64),
                "time_stamp": 0, "hostname": "h", "backup_name": "b", "mode": "fs",
                "level": level, "parent": null, "path_to_backup": "/", "tree": Id([0; 32]),
                "program": "t"}))
            .unwrap();
            s.level = level;
            snaps.push((Id([i as u8 + 1; 32]), s));
        }
        let lowered = LevelPolicy {
            always_level: Some(2),
            ..inc
        };
        let now = start + jiff::SignedDuration::from_hours(10);
        assert_eq!(
            plan(snaps.iter().map(|(i, s)| (i, s)), &lowered, now).level,
            0
        );
        let off = LevelPolicy {
            incremental: false,
            ..inc
        };
        assert_eq!(levels(off, 3, 24), [0, 0, 0]);
    }

    #[test]
    fn restart_always_level_counts_from_the_level_0() {
        // Every 6 hours, a new level 0 once the chain's level 0 is over a day old.
        let p = LevelPolicy {
            always_level: Some(2),
            restart_after_days: Some(1.0),
            ..LevelPolicy::default()
        };
        assert_eq!(levels(p, 10, 6), [0, 1, 2, 2, 2, 0, 1, 2, 2, 2]);
        // Daily backups restart every other day (at exactly one day, not yet).
        let daily = LevelPolicy {
            restart_after_days: Some(1.0),
            ..LevelPolicy::default()
        };
        assert_eq!(levels(daily, 5, 24), [0, 1, 0, 1, 0]);
        let half = LevelPolicy {
            restart_after_days: Some(0.5),
            ..LevelPolicy::default()
        };
        assert_eq!(levels(half, 4, 8), [0, 1, 0, 1]);
    }

    #[test]
    fn bad_values_are_named() {
        let e = LevelPolicy {
            incremental: false,
            max_level: Some(2),
            ..LevelPolicy::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("max_level"), "{e}");
        assert!(e.to_string().contains("incremental"), "{e}");
        let e = LevelPolicy {
            restart_after_days: Some(-1.0),
            ..LevelPolicy::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("restart_always_level"), "{e}");
        assert!(
            LevelPolicy {
                always_level: Some(0),
                ..LevelPolicy::default()
            }
            .validate()
            .is_err()
        );
    }
}
