//! A live progress bar on stderr, shown only when stderr is a terminal.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar that follows `count()` up to `total`, redrawn a few times a second by a
/// background task; hidden (and nothing spawned) when stderr is not a terminal.
pub struct Progress {
    bar: ProgressBar,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub fn follow(
        label: &'static str,
        total: u64,
        count: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress {
                bar: ProgressBar::hidden(),
                task: None,
            };
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:>10} [{bar:40.cyan/blue}] {human_pos}/{human_len} {per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label);
        let count = Arc::new(count);
        let follower = bar.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                follower.set_position(count());
            }
        });
        Progress {
            bar,
            task: Some(task),
        }
    }

    /// Stops following and clears the bar.
    pub fn finish(self) {
        if let Some(task) = self.task {
            task.abort();
        }
        self.bar.finish_and_clear();
    }
}
