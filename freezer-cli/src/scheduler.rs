//! `freezer scheduler`: runs freezer-core's scheduler in the foreground.
//!
//! Maps flags and the `OS_*` environment to [`SchedulerOptions`] and [`ClientSettings`],
//! SIGTERM and SIGINT to the stop token, and returns when the scheduler has stopped (exit 0).
//! It never forks: `--no-daemon` is accepted for upstream's command lines, and the process
//! stays in the foreground either way; run it under systemd (or another supervisor).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use freezer_core::job::{RunContext, Secret};
use freezer_core::service::client::{Client, ClientSettings};
use freezer_core::service::scheduler::{JobFeed, Scheduler, SchedulerOptions};
use freezer_core::{CancelToken, Error};

/// `freezer scheduler` flags.
#[derive(Args, Debug)]
pub struct SchedulerArgs {
    /// The freezer-api URL (else OS_BACKUP_URL, else the `backup` endpoint of the Keystone
    /// catalog). Credentials come from OS_AUTH_URL, OS_USERNAME, OS_PASSWORD,
    /// OS_PROJECT_NAME or OS_PROJECT_ID, OS_USER_DOMAIN_NAME, OS_PROJECT_DOMAIN_NAME (or
    /// OS_AUTH_TOKEN).
    #[arg(long, value_name = "URL", conflicts_with = "jobs_dir")]
    api: Option<String>,
    /// The client id (default `<project id>_<hostname>`, or the hostname without a project).
    #[arg(long, value_name = "ID")]
    client_id: Option<String>,
    /// Run the job files (*.json, and upstream's *.conf) of this folder instead of the API's
    /// jobs; a file added, changed or removed takes effect within a second.
    #[arg(long, value_name = "DIR")]
    jobs_dir: Option<PathBuf>,
    /// Jobs running at once.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrent_jobs: u32,
    /// Refuse jobs that hold an exec action.
    #[arg(long)]
    disable_exec: bool,
    /// Stay in the foreground (always the case: this scheduler never forks; run it under
    /// systemd). Accepted for upstream's command lines.
    #[arg(long)]
    no_daemon: bool,
    /// Seconds between reads of the jobs (default 60 for the API, 1 for a folder).
    #[arg(long, value_name = "SECONDS")]
    poll_interval: Option<f64>,
    /// Accept option names this release does not know in jobs (a warning each).
    #[arg(long)]
    allow_unknown_options: bool,
    /// Centralized mode (upstream's --scheduler-centralized-scheduler): register a central
    /// client, run the jobs of every project made for it, each through its creator's trust
    /// (jobs without user_credentials.trust_id are ignored). Run it as a user with the
    /// service role; needs OS_AUTH_URL.
    #[arg(
        long,
        alias = "scheduler-centralized-scheduler",
        conflicts_with = "jobs_dir"
    )]
    centralized: bool,
    /// Trust the CA certificates of this PEM file, besides the system's, for the API and
    /// Keystone (a private CA).
    #[arg(long, value_name = "FILE", env = "OS_CACERT")]
    os_cacert: Option<PathBuf>,
    /// Do not verify the TLS certificates of the API and Keystone (a test setup only: anyone
    /// on the path can read the credentials). OS_INSECURE=true or 1 sets it.
    #[arg(long, alias = "scheduler-insecure", env = "OS_INSECURE",
          value_parser = clap::builder::BoolishValueParser::new())]
    insecure: bool,
    /// A client certificate (PEM) for an API or Keystone that asks for one.
    #[arg(long, value_name = "FILE", env = "OS_CERT")]
    os_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM; default: in --os-cert's file).
    #[arg(long, value_name = "FILE", env = "OS_KEY")]
    os_key: Option<PathBuf>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The API's settings from the environment and the flags.
fn client_settings(a: &SchedulerArgs) -> ClientSettings {
    ClientSettings {
        auth_url: var("OS_AUTH_URL"),
        username: var("OS_USERNAME"),
        password: var("OS_PASSWORD").map(Secret),
        user_domain_name: var("OS_USER_DOMAIN_NAME"),
        project_name: var("OS_PROJECT_NAME").or_else(|| var("OS_TENANT_NAME")),
        project_id: var("OS_PROJECT_ID").or_else(|| var("OS_TENANT_ID")),
        project_domain_name: var("OS_PROJECT_DOMAIN_NAME"),
        token: var("OS_AUTH_TOKEN").or_else(|| var("OS_TOKEN")).map(Secret),
        region_name: var("OS_REGION_NAME"),
        interface: var("OS_INTERFACE").or_else(|| var("OS_ENDPOINT_TYPE")),
        backup_url: a.api.clone().or_else(|| var("OS_BACKUP_URL")),
        timeout: None,
        trust_id: None,
        ca_file: a.os_cacert.clone(),
        insecure: a.insecure,
        client_cert: a.os_cert.clone(),
        client_key: a.os_key.clone(),
    }
}

/// Runs the scheduler until SIGTERM or SIGINT.
pub async fn run(a: SchedulerArgs) -> freezer_core::Result<bool> {
    let mut ctx = RunContext::current();
    ctx.env = crate::environment();
    ctx.allow_unknown_options = a.allow_unknown_options;
    let hostname = ctx.actor.hostname.clone();
    let (feed, default_poll) = match &a.jobs_dir {
        Some(dir) => {
            if !dir.is_dir() {
                return Err(Error::bad_input(
                    "--jobs-dir",
                    format!("{}: not a folder", dir.display()),
                ));
            }
            (JobFeed::Dir(dir.clone()), 1.0)
        }
        None => (
            JobFeed::Api(Arc::new(Client::new(client_settings(&a))?)),
            60.0,
        ),
    };
    let poll = a.poll_interval.unwrap_or(default_poll);
    if !(0.1..=86_400.0).contains(&poll) {
        return Err(Error::bad_input(
            "--poll-interval",
            format!("{poll}: between 0.1 and 86400 seconds"),
        ));
    }
    let client_id = a
        .client_id
        .clone()
        .unwrap_or_else(|| match var("OS_PROJECT_ID") {
            Some(p) => format!("{p}_{hostname}"),
            None => hostname.clone(),
        });
    let mut opts = SchedulerOptions::new(client_id, hostname);
    opts.concurrent_jobs = a.concurrent_jobs as usize;
    opts.disable_exec = a.disable_exec;
    opts.centralized = a.centralized;
    opts.poll_interval = Duration::from_secs_f64(poll);
    opts.context = ctx;
    if !a.no_daemon {
        tracing::info!(
            "running in the foreground: this scheduler never forks (run it under systemd)"
        );
    }
    let stop = CancelToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stop requested by a signal");
        on_signal.cancel();
    });
    Scheduler::new(feed, opts).run(stop).await?;
    Ok(true)
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
