//! Integration tests of freezer-core: one binary, one module per capability.

mod backup_restore;
mod check;
mod conformance;
mod copy;
mod damage;
mod db_mongo;
mod db_mysql;
mod db_postgres;
mod first_backup;
mod ftp;
mod heal_packs;
mod hostile;
mod image;
mod init_config;
mod lifecycle;
mod lvm;
mod mariadb_server;
mod options;
mod postgres_server;
mod prune;
mod restore_safety;
mod s3;
mod servers;
// The Freezer service (issue 9): one module per area, built with the `service` feature
// (`cargo test --workspace` enables it through freezer-cli).
#[cfg(feature = "service")]
mod service_api;
#[cfg(feature = "service")]
mod service_api_mariadb;
#[cfg(feature = "service")]
mod service_auth;
#[cfg(feature = "service")]
mod service_central;
#[cfg(feature = "service")]
mod service_jobs;
#[cfg(feature = "service")]
mod service_revocations;
#[cfg(feature = "service")]
mod service_scheduler;
#[cfg(feature = "service")]
mod service_store;
mod ssh;
mod stream;
mod support;
mod swift;
mod tee;
mod upstream_tar;
mod upstream_tar_write;
