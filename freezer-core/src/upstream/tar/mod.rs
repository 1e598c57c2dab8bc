//! Upstream Freezer's `tar` engine (docs/UPSTREAM-TAR.md): GNU tar incremental archives and
//! their `--listed-incremental` snapshot files.

pub mod snar;
pub mod write;
