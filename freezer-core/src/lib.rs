//! placeholder
#![warn(missing_docs)]
mod chunker;
mod crypto;
mod error;
mod id;
pub mod repo;
pub mod sink;
mod time;
pub use chunker::*;
pub use crypto::*;
pub use error::*;
pub use id::*;
pub use time::*;
