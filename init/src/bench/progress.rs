//! Progress on stderr while the bench runs: a bar on a terminal, one line
//! per step otherwise (so logs of scripted runs show where they are).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
    lines: bool,
}

impl Progress {
    pub fn new(steps: u64) -> Self {
        let lines = !std::io::stderr().is_terminal();
        let bar = if lines {
            ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::hidden())
        } else {
            ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::stderr())
        };
        if let Ok(style) =
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {wide_msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        Self { bar, lines }
    }

    /// A step starts.
    pub fn step(&self, what: String) {
        if self.lines {
            eprintln!(
                "svm bench: [{}/{}] {what}",
                self.bar.position() + 1,
                self.bar.length().unwrap_or(0)
            );
        }
        self.bar.set_message(what);
    }

    /// The step ended.
    pub fn done(&self) {
        self.bar.inc(1);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
