//! What the `freezer` and `freezer-agent` binaries share: writing to stdout when the reader
//! may go away, panics reported in one line, signals that cancel a run, the credential
//! environment handed to the library ([`term`]); and the whole of `freezer-agent`, upstream's
//! command line mapped onto freezer-core's job runner ([`agent`]).
//!
//! Front-end code only: it owns the terminal, the exit codes and the environment; every
//! decision about a backup is freezer-core's.

pub mod agent;
pub mod term;
