//! Policies over a series of snapshots: which one a backup trusts and at which level
//! ([`levels`]), and which ones retention forgets ([`retention`]). Pure functions of the
//! snapshots and the time: no storage, no clock.

pub mod levels;
pub mod retention;

pub use levels::{LevelPlan, LevelPolicy};
pub use retention::{Decision, Retention, parse_span};
