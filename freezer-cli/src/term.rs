//! The terminal and the process, as both binaries meet them: stdout that may be a pipe closed
//! early (`freezer snapshots --json | head -1`), panics that must not spill a backtrace onto a
//! user, SIGTERM and SIGINT that cancel a run, and the environment variables the library may
//! read credentials from (it never reads the environment itself).
//!
//! Nothing here decides anything about a backup.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use freezer_core::job;

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// The program's name in messages, set by [`quiet_panics`].
static PROGRAM: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

fn program() -> &'static str {
    PROGRAM.get().copied().unwrap_or("freezer")
}

/// Writes to stdout, as `print!` does, except that a closed pipe (`freezer snapshots | head
/// -1`) is no error and no panic: what follows is dropped quietly, and the command ends as it
/// would have (exit status unchanged). Any other write error is reported once on stderr.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args).and_then(|()| o.flush())
        && !STDOUT_CLOSED.swap(true, Ordering::Relaxed)
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        write_stderr(format_args!("{}: writing to stdout: {e}\n", program()));
    }
}

/// Whether stdout was found closed (or failing): what was to be written after that was dropped.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// Writes to stderr, as `eprint!` does, but never panics: with stderr closed too, there is
/// nobody left to tell.
pub fn write_stderr(args: std::fmt::Arguments<'_>) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_fmt(args).and_then(|()| e.flush());
}

/// A panic is a bug: it is reported in one line, `<program>: internal error: <what> at
/// <file>:<line>`, without a backtrace unless `RUST_BACKTRACE` asks for one. The process then
/// exits with Rust's status for a panic, 101.
pub fn quiet_panics(program: &'static str) {
    let _ = PROGRAM.set(program);
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            return default(info);
        }
        let payload = info.payload();
        let what = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a panic");
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        write_stderr(format_args!(
            "{program}: internal error: {what}{place} (a bug: please report it; RUST_BACKTRACE=1 shows where)\n"
        ));
    }));
}

/// The environment variables that may hold storage credentials, for the library.
pub fn environment() -> job::Environment {
    job::credential_environment(std::env::vars_os())
}

/// Whether SIGTERM cancelled the run.
static TERMINATED: AtomicBool = AtomicBool::new(false);

/// When SIGTERM cancelled the run, ends the process by SIGTERM's default action, once the run
/// has released what it held: the parent sees a process killed by SIGTERM (status -15), as
/// with upstream's agent, whose scheduler reports such a run as aborted rather than failed.
/// Returns when no SIGTERM came.
pub fn die_by_sigterm_if_received() {
    if TERMINATED.load(Ordering::SeqCst) {
        // Resets SIGTERM to its default action and raises it; it returns only on failure.
        let _ = signal_hook::low_level::emulate_default_handler(signal_hook::consts::SIGTERM);
    }
}

/// SIGTERM or SIGINT cancels the running backup or job: it stops, releases what it holds
/// (its lock, an LVM snapshot) and fails with `cancelled`, instead of dying at once. Call it
/// inside the runtime.
pub fn cancel_on_signal(program: &'static str, token: &freezer_core::CancelToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    let token = token.clone();
    tokio::spawn(async move {
        let what = tokio::select! {
            _ = term.recv() => {
                TERMINATED.store(true, Ordering::SeqCst);
                "SIGTERM"
            }
            _ = int.recv() => "interrupted",
        };
        write_stderr(format_args!(
            "{program}: {what}: stopping, releasing what the backup holds\n"
        ));
        token.cancel();
    });
}
