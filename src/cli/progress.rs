//! The one progress reporter of long commands (`vnid import`,
//! `vnid verify-batch`), on standard error: a bar redrawn at most five
//! times a second on a terminal, a plain line every five seconds into a
//! file or a pipe (a log collector keeps a line, not a redraw).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    /// What is counted, plural: "rows", "candidates".
    what: &'static str,
    enabled: bool,
    terminal: bool,
    started: Instant,
    last: Option<Instant>,
}

impl Progress {
    pub fn new(what: &'static str, enabled: bool) -> Self {
        Self {
            what,
            enabled,
            terminal: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last: None,
        }
    }

    /// `count` things done, which are `fraction` of the whole; `finished`
    /// draws the last state whatever the time since the one before.
    pub fn update(&mut self, count: u64, fraction: f64, finished: bool) {
        let every = Duration::from_millis(if self.terminal { 200 } else { 5_000 });
        if !self.enabled || (!finished && self.last.is_some_and(|t| t.elapsed() < every)) {
            return;
        }
        self.last = Some(Instant::now());
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = count as f64 / secs;
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            1.0
        };
        let eta = if fraction > 0.0 {
            secs / fraction - secs
        } else {
            0.0
        };
        let what = self.what;
        let line = format!(
            "{:>3.0}% {count} {what}, {rate:.0} {what}/s, ETA {eta:.0}s",
            fraction * 100.0
        );
        if self.terminal {
            const WIDTH: usize = 30;
            let filled = ((fraction * WIDTH as f64) as usize).min(WIDTH);
            eprint!(
                "\r\x1b[2K[{}{}] {line}",
                "#".repeat(filled),
                "-".repeat(WIDTH - filled)
            );
            if finished {
                eprintln!();
            }
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("{line}");
        }
    }

    /// A line of its own (a rejected row), above the bar.
    pub fn line(&self, text: &str) {
        let clear = if self.terminal && self.last.is_some() {
            "\r\x1b[2K"
        } else {
            ""
        };
        eprintln!("{clear}{text}");
    }
}
