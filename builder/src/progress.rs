//! Progress of long work (layer builds, downloads, image writing) for people and for CI:
//! on a terminal a bar for work of known size (bytes downloaded, packages fetched, the slot
//! written) under a line per finished step; plain timestamped lines when stderr is not a
//! terminal; JSON lines with `--json-progress`; nothing but errors with `--quiet`.

use std::cell::RefCell;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar on a terminal, timestamped lines when stderr is not one.
    Human,
    /// One JSON object per line on stderr: `{"elapsed_s":1.2,"step":"..."}`, and for work of
    /// known size `{"elapsed_s":..,"task":"..","done":..,"total":..}` at most once a second.
    Json,
    Quiet,
}

/// `(task, done, total)`: how far a task of known size is (`total == 0`: unknown).
type Meter = Box<dyn Fn(&str, u64, u64)>;

/// One line per step (`say`), and how far a task of known size is (`meter`).
pub struct Progress {
    step: Box<dyn Fn(&str)>,
    meter: Meter,
}

impl Progress {
    /// Progress nobody sees (tests, benchmarks).
    pub fn silent() -> Progress {
        Progress {
            step: Box::new(|_| {}),
            meter: Box::new(|_, _, _| {}),
        }
    }

    /// A step finished or started: one line.
    pub fn say(&self, s: &str) {
        (self.step)(s)
    }

    /// `done` of `total` units of `task` (bytes, packages); `done == total` ends the bar.
    pub fn meter(&self, task: &str, done: u64, total: u64) {
        (self.meter)(task, done, total)
    }
}

pub fn new(mode: ProgressMode) -> Progress {
    let start = Instant::now();
    let elapsed = move || (start.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    match mode {
        ProgressMode::Quiet => Progress::silent(),
        ProgressMode::Json => {
            let last = RefCell::new(Instant::now() - Duration::from_secs(2));
            Progress {
                step: Box::new(move |s| {
                    eprintln!(
                        "{}",
                        serde_json::json!({ "elapsed_s": elapsed(), "step": s })
                    )
                }),
                meter: Box::new(move |task, done, total| {
                    let mut last = last.borrow_mut();
                    if (total > 0 && done == total) || last.elapsed() >= Duration::from_secs(1) {
                        *last = Instant::now();
                        eprintln!(
                            "{}",
                            serde_json::json!({
                                "elapsed_s": elapsed(), "task": task, "done": done, "total": total,
                            })
                        );
                    }
                }),
            }
        }
        ProgressMode::Human if std::io::stderr().is_terminal() => {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            let spinner = bar.clone();
            // Bytes (downloads, writing, verifying) with rate and ETA; counts for packages.
            let bytes_style = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> ");
            let count_style = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {msg} [{bar:30}] {pos}/{len}",
            )
            .expect("valid template")
            .progress_chars("=> ");
            Progress {
                step: Box::new(move |s| {
                    // Finished steps stay on screen above the bar.
                    spinner.println(format!(
                        "p6os: [{:5.1}s] {s}",
                        start.elapsed().as_secs_f64()
                    ));
                    spinner.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{spinner} [{elapsed_precise}] {msg}",
                        )
                        .expect("valid template"),
                    );
                    spinner.set_length(0);
                    spinner.set_message(s.to_string());
                    if s.starts_with("done in ") {
                        spinner.finish_and_clear();
                    }
                }),
                meter: Box::new(move |task, done, total| {
                    if total == 0 {
                        // Unknown size: the spinner with the bytes so far.
                        bar.set_message(format!("{task}: {} KiB", done / 1024));
                        return;
                    }
                    bar.set_style(if task.contains("packages") {
                        count_style.clone()
                    } else {
                        bytes_style.clone()
                    });
                    bar.set_message(task.to_string());
                    bar.set_length(total);
                    bar.set_position(done);
                }),
            }
        }
        ProgressMode::Human => Progress {
            step: Box::new(move |s| {
                eprintln!("p6os: [{:5.1}s] {s}", start.elapsed().as_secs_f64())
            }),
            meter: Box::new(|_, _, _| {}),
        },
    }
}
