//! Integration tests of freezer-core: one binary, one module per capability.

mod backup_restore;
mod damage;
mod hostile;
mod support;
mod tee;
