//! Progress: a bar with documents/s and time left on a terminal, a log line every few
//! seconds otherwise (CI, files, pipes).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How to show progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar when standard error is a terminal, log lines otherwise.
    Auto,
    /// Log lines only.
    Log,
    /// Nothing.
    Quiet,
}

/// The progress of one collection's pass.
pub struct Progress {
    bar: Option<ProgressBar>,
    log: bool,
    collection: String,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_log: Instant,
}

impl Progress {
    /// Starts showing the pass over `collection` of `total` documents (`None` until
    /// counted: see [`Progress::set_total`]).
    pub fn start(mode: ProgressMode, collection: &str, total: Option<u64>) -> Progress {
        let terminal = mode == ProgressMode::Auto && std::io::stderr().is_terminal();
        let bar = terminal.then(|| {
            let bar = ProgressBar::new(total.unwrap_or(0));
            let style = ProgressStyle::with_template(
                "{prefix:>20} [{bar:30}] {pos}/{len} docs  {per_sec}  eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(collection.to_owned());
            bar
        });
        Progress {
            bar,
            log: !terminal && mode != ProgressMode::Quiet,
            collection: collection.to_owned(),
            total,
            done: 0,
            started: Instant::now(),
            last_log: Instant::now(),
        }
    }

    /// Sets the number of documents of the pass, once counted.
    pub fn set_total(&mut self, total: u64) {
        self.total = Some(total);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    /// Counts `n` more documents done.
    pub fn advance(&mut self, n: u64) {
        self.done += n;
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
        if self.log && self.last_log.elapsed() >= Duration::from_secs(5) {
            self.last_log = Instant::now();
            self.log_line();
        }
    }

    fn log_line(&self) {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        #[allow(clippy::cast_precision_loss)] // a rate for a person: precision is moot
        let rate = self.done as f64 / secs;
        #[allow(clippy::cast_precision_loss)]
        let left = self.total.map_or_else(
            || "?".to_owned(),
            |t| {
                format!(
                    "{:.0}",
                    t.saturating_sub(self.done) as f64 / rate.max(0.001)
                )
            },
        );
        tracing::info!(
            collection = %self.collection,
            done = self.done,
            total = self.total.map_or_else(|| "?".to_owned(), |t| t.to_string()),
            docs_per_second = format!("{rate:.0}"),
            seconds_left = left,
            "import progress"
        );
    }

    /// Ends the pass's display.
    pub fn finish(self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
        if self.log {
            self.log_line();
        }
    }
}
