//! A progress bar on stderr, shown only when stderr is a terminal.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use freezer_core::engine::{NoProgress, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Forwards the library's progress to an indicatif bar.
#[derive(Debug)]
pub struct Bar(pub ProgressBar);

impl Progress for Bar {
    fn set_total(&self, bytes: u64) {
        self.0.set_length(bytes);
        self.0.set_style(
            ProgressStyle::with_template(
                "{spinner} {bytes}/{total_bytes} {bytes_per_sec} {wide_bar} {eta}",
            )
            .expect("a valid template"),
        );
    }

    fn add_bytes(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

/// A bar when stderr is a terminal, nothing otherwise.
pub fn make() -> (Option<ProgressBar>, Arc<dyn Progress>) {
    if !std::io::stderr().is_terminal() {
        return (None, Arc::new(NoProgress));
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec} {elapsed}")
            .expect("a valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    (Some(bar.clone()), Arc::new(Bar(bar)))
}
